"""The official USPS files in libsvm form: `usps.bz2` and `usps.t.bz2`, md5-checked.

Published at https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass.html. Conversion: libsvm lines
`label index:value ...` (indices 1..256 row-major, a missing index means 0), labels 1..10 -> 0..9, values v in
[-1, 1] -> round((v + 1) * 127.5) as 16x16 uint8 grey, then resized to 32x32 with Pillow's BILINEAR filter and
repeated to three channels (`images.to_rgb32`).

References: Hull 1994 (USPS).
"""

from __future__ import annotations

import bz2
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from dann_jax.data.images import to_rgb32
from dann_jax.data.official_common import DAMAGE_ERRORS, Expected, import_checksummed, not_official

USPS_FEATURES = 256


def parse_libsvm(text: str, num_features: int = USPS_FEATURES) -> tuple[np.ndarray, np.ndarray]:
  """Parses libsvm lines `label index:value ...` (1-based indices; a missing index means 0).

  Returns:
    (values (N, num_features) float64, labels (N,) int64).

  Raises:
    ValueError: a malformed line, a non-integer label, an index outside 1..num_features or given twice.
  """
  values, labels = [], []
  for number, line in enumerate(text.splitlines(), 1):
    tokens = line.split()
    if not tokens:
      continue
    row = np.zeros(num_features, np.float64)
    try:
      label = float(tokens[0])
      pairs = [token.split(":") for token in tokens[1:]]
      index = np.asarray([int(i) for i, _ in pairs], np.int64)
      value = np.asarray([float(v) for _, v in pairs], np.float64)
    except ValueError:
      raise ValueError(f"line {number} is not 'label index:value ...': {line[:60]!r}") from None
    if label != int(label):
      raise ValueError(f"line {number} has the label {tokens[0]}, not an integer")
    if index.size and (index.min() < 1 or index.max() > num_features or len(np.unique(index)) != index.size):
      raise ValueError(f"line {number} has feature indices outside 1..{num_features} or repeated")
    row[index - 1] = value
    values.append(row)
    labels.append(int(label))
  return np.asarray(values).reshape(-1, num_features), np.asarray(labels, np.int64)


def usps_to_uint8(values: np.ndarray) -> np.ndarray:
  """USPS feature values in [-1, 1] -> uint8 grey: round((v + 1) * 127.5), so -1 -> 0, 0 -> 128, 1 -> 255."""
  return np.clip(np.rint((np.asarray(values, np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def read_usps(path: str | os.PathLike[str], exp: Expected | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Reads `usps.bz2` / `usps.t.bz2`: images (N,32,32,3) uint8 (16x16 grey, Pillow bilinear to 32x32, repeated to
  RGB) and labels (N,) int32 in 0..9 (the file's 1..10 minus one).

  Raises:
    ValueError: not bzip2 (or truncated), malformed lines, labels outside 1..10 or values outside [-1, 1].
  """
  path = Path(path)
  what = repr(str(path))
  try:
    with bz2.open(path, "rt", encoding="ascii") as f:
      text = f.read()
  except (*DAMAGE_ERRORS, UnicodeDecodeError) as e:
    raise not_official("usps", what, f"it cannot be decompressed to the end ({type(e).__name__}: {e})", exp) from None
  try:
    values, labels = parse_libsvm(text, USPS_FEATURES)
  except ValueError as e:
    raise not_official("usps", what, str(e), exp) from None
  if labels.size and (labels.min() < 1 or labels.max() > 10):
    raise not_official("usps", what, f"its labels span {labels.min()}..{labels.max()}, not 1..10", exp)
  if values.size and (values.min() < -1.0 or values.max() > 1.0):
    raise not_official("usps", what, f"its values span {values.min()}..{values.max()}, not [-1, 1]", exp)
  grey = usps_to_uint8(values).reshape(-1, 16, 16)
  images = to_rgb32(grey) if len(grey) else np.zeros((0, 32, 32, 3), np.uint8)
  return images, (labels - 1).astype(np.int32)


def import_usps(path: Path, data_dir, table: Mapping[str, Expected]) -> dict[str, Path]:
  """Checks and caches the USPS `.bz2` files at `path` (a file or their folder): split -> the cache file written."""
  return import_checksummed(
    "usps",
    read_usps,
    lambda split, n, file, digest: (
      f"genuine USPS {split} ({n:,} digits, 16x16 bilinearly upsampled to 32x32) "
      f"from the libsvm {file.name} (md5 {digest}), "
      "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass.html#usps"
    ),
    path,
    data_dir,
    table,
  )
