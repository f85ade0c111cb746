"""Colour photographs that serve as backgrounds of MNIST-M and MNIST(max,BG), and random patches cut from them.

The paper cuts patches from BSDS500; when the user points at a folder of it (`--backgrounds DIR`), those photos are
used. Otherwise the colour photographs that ship inside installed packages are used (scikit-image's `skimage.data`
and scikit-learn's `load_sample_images`), and the domains built from them are "MNIST-M-like" rather than MNIST-M.
Train and test patches come from the same photos but from disjoint regions of each: the top `TRAIN_FRACTION` of the
rows for train, the rest for test, so no test patch was seen in training.

References: Ganin & Lempitsky, arXiv 1409.7495, Sec. 5 (MNIST-M: patches randomly extracted from BSDS500 photos);
Arbelaez et al., "Contour detection and hierarchical image segmentation", TPAMI 2011 (BSDS500).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from pathlib import Path

import numpy as np

SKIMAGE_PHOTOS = (
  "astronaut",
  "chelsea",
  "coffee",
  "rocket",
  "hubble_deep_field",
  "stereo_motorcycle",
  "immunohistochemistry",
)
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
TRAIN_FRACTION = 0.7
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass(frozen=True)
class PhotoSet:
  """Background photographs (each (H, W, 3) uint8) and where they came from."""

  photos: tuple[np.ndarray, ...]
  names: tuple[str, ...]
  origin: str  # "bsds500 <dir>" or "bundled"

  @property
  def is_bsds500(self) -> bool:
    return self.origin != "bundled"

  def describe(self) -> str:
    if self.is_bsds500:
      return f"{len(self.photos)} BSDS500 photos from {self.origin.split(' ', 1)[1]}"
    return (
      f"{len(self.photos)} colour photos bundled with scikit-image/scikit-learn ({', '.join(self.names)}), "
      "standing in for BSDS500"
    )

  def fingerprint(self) -> str:
    """A short digest of the photos' pixels, for cache keys."""
    digest = hashlib.md5()
    for photo in self.photos:
      digest.update(np.asarray(photo.shape, np.int64).tobytes())
      digest.update(photo.tobytes())
    return digest.hexdigest()[:12]


def _to_rgb(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  return np.ascontiguousarray(image[..., :3], dtype=np.uint8)


def _read_only(array: np.ndarray) -> np.ndarray:
  array.setflags(write=False)
  return array


@functools.lru_cache(maxsize=1)
def bundled_photos() -> PhotoSet:
  """The colour photographs shipped with scikit-image and scikit-learn (no download; read once, read-only)."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  from sklearn.datasets import load_sample_images  # pylint: disable=g-import-not-at-top

  photos, names = [], []
  for name in SKIMAGE_PHOTOS:
    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle returns (left, right, disparity)
      image = image[0]
    photos.append(_read_only(_to_rgb(image)))
    names.append(name)
  sample = load_sample_images()
  for filename, image in zip(sample.filenames, sample.images):
    photos.append(_read_only(_to_rgb(image)))
    names.append(os.path.basename(filename))
  return PhotoSet(tuple(photos), tuple(names), "bundled")


def folder_photos(folder: str | os.PathLike[str], min_size: int = 64) -> PhotoSet:
  """All .jpg/.png photos below `folder` (e.g. BSDS500's `images/`), in sorted path order."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  folder = Path(folder).expanduser()
  if not folder.is_dir():
    raise FileNotFoundError(
      f"backgrounds folder {str(folder)!r} does not exist; pass the directory holding the "
      "BSDS500 images (e.g. BSR/BSDS500/data/images)"
    )
  paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
  photos, names = [], []
  for path in paths:
    with Image.open(path) as image:
      array = _to_rgb(np.asarray(image.convert("RGB")))
    if min(array.shape[:2]) >= min_size:
      photos.append(array)
      names.append(str(path.relative_to(folder)))
  if not photos:
    raise FileNotFoundError(f"no .jpg/.png photo of at least {min_size}x{min_size} pixels below {str(folder)!r}")
  return PhotoSet(tuple(photos), tuple(names), f"bsds500 {folder}")


def load_photos(backgrounds: str | os.PathLike[str] | None = None) -> PhotoSet:
  """BSDS500 (or any folder of photos) when `backgrounds` is given, else the bundled photos."""
  return bundled_photos() if backgrounds is None else folder_photos(backgrounds)


def photo_region(photo: np.ndarray, split: str, train_fraction: float = TRAIN_FRACTION) -> np.ndarray:
  """The part of `photo` that patches of `split` come from: top rows for train, bottom rows for test."""
  cut = int(round(photo.shape[0] * train_fraction))
  if split == "train":
    return photo[:cut]
  if split == "test":
    return photo[cut:]
  raise ValueError(f"{split=} is not a split; use 'train' or 'test'")


def sample_patches(photos: PhotoSet, split: str, count: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
  """`count` random `size`x`size` patches of the photos' `split` regions, photo chosen uniformly for each.

  Returns:
    (count, size, size, 3) uint8.
  """
  regions = [photo_region(photo, split) for photo in photos.photos]
  regions = [r for r in regions if r.shape[0] >= size and r.shape[1] >= size]
  if not regions:
    raise ValueError(f"no photo has a {split} region of at least {size}x{size} pixels; use larger photos")
  which = rng.integers(len(regions), size=count)
  patches = np.empty((count, size, size, 3), np.uint8)
  for i, region in enumerate(regions):
    rows = np.flatnonzero(which == i)
    tops = rng.integers(region.shape[0] - size + 1, size=rows.size)
    lefts = rng.integers(region.shape[1] - size + 1, size=rows.size)
    offsets = np.arange(size)
    patches[rows] = region[(tops[:, None] + offsets)[:, :, None], (lefts[:, None] + offsets)[:, None, :]]
  return patches
