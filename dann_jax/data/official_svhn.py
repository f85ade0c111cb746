"""The official SVHN files (Format 2, cropped digits): `train_32x32.mat` and `test_32x32.mat`, md5-checked.

Published at http://ufldl.stanford.edu/housenumbers/. Conversion: `X` (32,32,3,N) uint8 -> (N,32,32,3); `y` (N,1)
in 1..10 with 10 meaning the digit 0 -> 0..9.

References: Netzer et al. 2011 (SVHN).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from dann_jax.data.official_common import Expected, import_checksummed, not_official


def read_svhn_mat(path: str | os.PathLike[str], exp: Expected | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Reads an SVHN `*_32x32.mat`: images (N,32,32,3) uint8 and labels (N,) int32 in 0..9 (10 -> 0).

  Raises:
    ValueError: not a readable .mat, no X / y, wrong shapes, or labels outside 1..10.
  """
  from scipy import io as scipy_io  # pylint: disable=g-import-not-at-top

  path = Path(path)
  what = repr(str(path))
  try:
    mat = scipy_io.loadmat(path, variable_names=("X", "y"))
  except Exception as e:  # scipy raises many kinds (MatReadError, ValueError, OSError, ...) for a damaged file
    raise not_official("svhn", what, f"it cannot be read as a MATLAB file ({type(e).__name__}: {e})", exp) from None
  missing = [k for k in ("X", "y") if k not in mat]
  if missing:
    found = sorted(variable for variable, _, _ in scipy_io.whosmat(path))
    raise not_official(
      "svhn",
      what,
      f"it has no variable {' or '.join(missing)} (found {found}); the cropped-digits "
      "files (Format 2) hold X (32,32,3,N) and y (N,1)",
      exp,
    )
  x, y = np.asarray(mat["X"]), np.asarray(mat["y"])
  if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
    raise not_official("svhn", what, f"X has shape {x.shape} and dtype {x.dtype}, not (32, 32, 3, N) uint8", exp)
  if y.shape not in ((x.shape[3], 1), (x.shape[3],)) or y.dtype.kind not in "iuf":
    raise not_official("svhn", what, f"y has shape {y.shape} ({y.dtype}), not ({x.shape[3]}, 1) labels", exp)
  y = y.reshape(-1)
  if y.size and (y.min() < 1 or y.max() > 10 or np.any(y != np.round(y))):
    raise not_official("svhn", what, f"its labels span {y.min()}..{y.max()}, not the integers 1..10", exp)
  labels = np.where(y == 10, 0, y).astype(np.int32)
  return np.ascontiguousarray(np.transpose(x, (3, 0, 1, 2))), labels


def import_svhn(path: Path, data_dir, table: Mapping[str, Expected]) -> dict[str, Path]:
  """Checks and caches the SVHN `.mat` files at `path` (a file or their folder): split -> the cache file written."""
  return import_checksummed(
    "svhn",
    read_svhn_mat,
    lambda split, n, file, digest: (
      f"genuine SVHN {split} ({n:,} cropped digits) from {file.name} "
      f"(md5 {digest}), http://ufldl.stanford.edu/housenumbers/"
    ),
    path,
    data_dir,
    table,
  )
