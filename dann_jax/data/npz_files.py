"""A user's `.npz` of `images` (N,H,W[,C]) uint8, optional `labels` (N,) integers and optional `class_names`.

`images` is (N,H,W,C) uint8 with C in {1, 3, 4}, or (N,H,W) grey, made 32x32x3 by `images.to_rgb32`; `labels`
(N,) integers, -1 (`UNLABELLED`) marking an unknown label; `class_names` (K,) distinct strings; no other key. Without
`class_names` the classes are `"0"`, `"1"`, ... up to the largest label. Files are read with `allow_pickle=False`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from dann_jax.data.domains import UNLABELLED
from dann_jax.data.images import to_rgb32

NPZ_KEYS = ("images", "labels", "class_names")
_LISTED_CLASSES = 12  # class names shown in an error message before the list is cut


def _open_npz(path: Path):
  if not path.is_file():
    raise FileNotFoundError(
      f"no .npz file at {str(path)!r}; give a file saved with np.savez(path, images=..., labels=...)"
    )
  try:
    data = np.load(path, allow_pickle=False)
  except Exception as e:  # zipfile.BadZipFile, OSError, ValueError, EOFError: all mean a damaged or foreign file
    raise ValueError(
      f"cannot read {str(path)!r} as .npz ({type(e).__name__}: {e}); save it with "
      "np.savez(path, images=..., labels=...)"
    ) from None
  if not isinstance(data, np.lib.npyio.NpzFile):
    raise ValueError(
      f"{str(path)!r} holds a single array, not an .npz archive; save it with np.savez(path, images=..., labels=...)"
    )
  unknown = sorted(set(data.files) - set(NPZ_KEYS))
  if "images" not in data.files or unknown:
    keys = sorted(data.files)
    data.close()
    raise ValueError(
      f"{str(path)!r} has the keys {keys}; an .npz domain holds 'images' and optionally 'labels' "
      f"and 'class_names', nothing else{f' (unexpected: {unknown})' if unknown else ''}; save it "
      "with np.savez(path, images=..., labels=...)"
    )
  return data


def _npz_array(data, key: str, path: Path) -> np.ndarray:
  try:
    return np.asarray(data[key])
  except Exception as e:  # object arrays need pickle; damaged members raise zlib / zipfile errors
    raise ValueError(
      f"cannot read {key!r} of {str(path)!r} ({type(e).__name__}: {e}); save it as a plain "
      "numeric (or string, for class_names) array"
    ) from None


def _npz_names(data, path: Path) -> tuple[str, ...] | None:
  if "class_names" not in data.files:
    return None
  names = _npz_array(data, "class_names", path)
  if names.ndim != 1 or names.dtype.kind not in "US" or len(set(names.tolist())) != len(names):
    raise ValueError(
      f"class_names of {str(path)!r} has shape {names.shape} and dtype {names.dtype}; it must be "
      "a 1-D array of distinct strings"
    )
  return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())


def _npz_labels(data, path: Path, count: int) -> np.ndarray:
  if "labels" not in data.files:
    return np.full(count, UNLABELLED, np.int32)
  labels = _npz_array(data, "labels", path)
  if labels.dtype.kind not in "iu":
    raise ValueError(
      f"labels of {str(path)!r} have dtype {labels.dtype}; save them as integers "
      "(labels.astype(np.int64)), -1 for an unknown label"
    )
  if labels.shape != (count,):
    raise ValueError(f"labels of {str(path)!r} have shape {labels.shape}, need ({count},): one per image")
  if labels.size and labels.min() < UNLABELLED:
    raise ValueError(
      f"labels of {str(path)!r} include {int(labels.min())}; labels are class indices >= 0, "
      f"or {UNLABELLED} for an unknown label"
    )
  return labels.astype(np.int32)


def npz_label_range(path: Path) -> tuple[tuple[str, ...] | None, int]:
  """(class_names or None, largest label) of an .npz, reading only those two keys."""
  with _open_npz(path) as data:
    names = _npz_names(data, path)
    if "labels" not in data.files:
      return names, UNLABELLED
    labels = _npz_array(data, "labels", path)
    return names, int(labels.max(initial=UNLABELLED)) if labels.dtype.kind in "iu" else UNLABELLED


def read_npz(
  path: str | os.PathLike[str], *, classes: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  """Reads an `.npz` of `images` and optional `labels` and `class_names`.

  Args:
    path: the file.
    classes: the class names in label order; default: the file's `class_names`, else "0", "1", ... up to its
      largest label.

  Returns:
    (images (N,32,32,3) uint8, labels (N,) int32 (-1 where unknown), class names).

  Raises:
    FileNotFoundError: no such file.
    ValueError: missing or unexpected keys, images that are not uint8 (N,H,W[,C]), labels that are not integers
      in [-1, number of classes).
  """
  path = Path(path).expanduser()
  with _open_npz(path) as data:
    raw = _npz_array(data, "images", path)
    if raw.ndim not in (3, 4) or len(raw) == 0:
      raise ValueError(f"images of {str(path)!r} have shape {raw.shape}; need (N, H, W) or (N, H, W, C) with N > 0")
    labels = _npz_labels(data, path, len(raw))
    names = tuple(str(c) for c in classes) if classes is not None else _npz_names(data, path)
  try:
    images = to_rgb32(raw)
  except ValueError as e:
    raise ValueError(f"images of {str(path)!r}: {e}") from None
  if names is None:
    names = tuple(str(i) for i in range(int(labels.max(initial=UNLABELLED)) + 1))
  if labels.size and labels.max() >= len(names):
    raise ValueError(
      f"labels of {str(path)!r} reach {int(labels.max())} but there are {len(names)} classes "
      f"({list(names)[:_LISTED_CLASSES]}); every label must lie in [0, {len(names)}) or be -1"
    )
  return images, labels, names
