"""A user's pixels: an image file, a PIL image or a uint8 array, made 32x32x3 uint8; and which files are images.

Every image becomes 32x32x3 uint8 (the network input, as every domain of `domains.py`): its EXIF orientation is
applied; grey and 1-bit images are repeated to three channels; an alpha channel is dropped (not composited);
palette, CMYK and other colour modes are converted to RGB by Pillow; 16-bit grey is scaled by 1/257 and rounded.
Then it is resized, stretched to the square without keeping its aspect ratio, with Pillow's BILINEAR filter (a
triangle filter that Pillow widens by the shrink factor, so downscaling averages instead of aliasing); an image
already 32x32 is left as it is. All of this is deterministic: the same files give the same bytes. Pillow is imported
only when it is needed, not at import.
"""

from __future__ import annotations

import os

import numpy as np

IMAGE_SIZE = 32


def _pil():
  from PIL import Image, ImageOps  # pylint: disable=g-import-not-at-top

  return Image, ImageOps


def _resize(image) -> np.ndarray:
  """A PIL image in mode L or RGB -> (32, 32, 3) uint8 (Pillow BILINEAR when the size differs)."""
  Image, _ = _pil()
  if image.size != (IMAGE_SIZE, IMAGE_SIZE):
    image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
  array = np.asarray(image, np.uint8)
  if array.ndim == 2:
    array = np.repeat(array[..., None], 3, axis=-1)
  return np.ascontiguousarray(array)


def pil_to_rgb32(image) -> np.ndarray:
  """One PIL image -> (32, 32, 3) uint8, by the rules of the module docstring.

  Raises:
    ValueError: a floating-point image (mode F), which has no agreed mapping to 0..255.
  """
  Image, ImageOps = _pil()
  image = ImageOps.exif_transpose(image)
  mode = image.mode
  if mode.startswith("I"):  # 16-bit (I;16, I;16B, ...) or 32-bit integer grey
    values = np.asarray(image).astype(np.int64)
    if values.min(initial=0) < 0 or values.max(initial=0) > 65535:
      raise ValueError(f"a {mode} image holds values outside 0..65535; save it as 8- or 16-bit grey")
    image = Image.fromarray(np.rint(values / 257.0).astype(np.uint8))
  elif mode == "F":
    raise ValueError("a floating-point (mode F) image has no agreed mapping to 0..255; save it as 8-bit PNG")
  elif mode in ("1", "L", "LA", "La"):
    image = image.convert("L")
  elif mode != "RGB":
    image = image.convert("RGB")  # RGBA: alpha dropped; P: palette looked up; CMYK, YCbCr, ...: converted
  return _resize(image)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
  """Reads one image file (any format Pillow reads) as (32, 32, 3) uint8.

  Raises:
    ValueError: the file is not an image Pillow can read, or is damaged or truncated.
  """
  Image, _ = _pil()
  try:
    image = Image.open(path)
    image.load()
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise ValueError(
      f"cannot read the image {os.fspath(path)!r} ({type(e).__name__}: {e}); "
      "the file is damaged or not an image: replace or remove it"
    ) from None
  with image:
    try:
      return pil_to_rgb32(image)
    except ValueError as e:
      raise ValueError(f"{os.fspath(path)!r}: {e}") from None


def to_rgb32(images: np.ndarray) -> np.ndarray:
  """(N,H,W) or (N,H,W,C) uint8 arrays, C in {1, 3, 4} -> (N, 32, 32, 3) uint8 (grey repeated, alpha dropped,
  Pillow BILINEAR resize when H,W is not 32,32).

  Raises:
    ValueError: another dtype, rank or channel count.
  """
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise ValueError(
      f"images have dtype {images.dtype}; they must be uint8 in 0..255 (for floats in [0, 1]: "
      "np.rint(images * 255).astype(np.uint8))"
    )
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
    raise ValueError(
      f"images have shape {images.shape}; need (N, H, W) grey or (N, H, W, C) with C = 1 (grey), 3 (RGB) or 4 (RGBA)"
    )
  images = images[..., :3] if images.shape[-1] == 4 else images
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  if images.shape[1:3] == (IMAGE_SIZE, IMAGE_SIZE):
    return np.ascontiguousarray(images)
  Image, _ = _pil()
  out = np.empty((len(images), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  for i, image in enumerate(images):
    out[i] = _resize(Image.fromarray(np.ascontiguousarray(image), "RGB"))
  return out


def image_suffixes() -> frozenset[str]:
  """The file suffixes (lower case, with the dot) of the image formats Pillow can open."""
  Image, _ = _pil()
  return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)
