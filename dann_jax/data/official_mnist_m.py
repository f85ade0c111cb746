"""The official MNIST-M: `mnist_m.tar.gz` or the folder it unpacks to, with its two label files and PNG folders.

Published at http://yaroslav.ganin.net/; no md5 is published, so the structure is checked: the label files
`mnist_m_{train,test}_labels.txt` (`<file> <label>` lines), every listed 32x32 PNG present and decodable, and the
image counts. Each PNG is kept as is (RGB; a palette or grey PNG converted to RGB by Pillow), in the order of the
label files.

References: Ganin & Lempitsky, arXiv 1409.7495, Sec. 5 (MNIST-M from BSDS500 patches).
"""

from __future__ import annotations

import os
import re
import tarfile
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from dann_jax.data.official_common import (
  DAMAGE_ERRORS,
  EXPECTED,
  ORIGINS,
  Expected,
  OfficialFileError,
  check_count,
  file_md5,
  not_official,
  open_image,
  save_split,
  unreadable,
)

_MNIST_M_IMAGE = re.compile(r"(?:^|/)mnist_m_(train|test)/([^/.][^/]*\.png)$")  # not macOS "._x.png" sidecars
_MNIST_M_LABELS = re.compile(r"(?:^|/)mnist_m_(train|test)_labels\.txt$")


def _mnist_m_members(path: Path) -> Iterator[tuple[str, bytes]]:
  """(path inside the data set, bytes) of the label files and PNGs, from the archive or the folder."""
  if path.is_file():
    with tarfile.open(path, "r:*") as tar:
      for member in tar:
        if member.isfile() and (_MNIST_M_IMAGE.search(member.name) or _MNIST_M_LABELS.search(member.name)):
          yield member.name, tar.extractfile(member).read()
    return
  root = _mnist_m_root(path)
  for split in ("train", "test"):
    labels = root / f"mnist_m_{split}_labels.txt"
    if labels.is_file():
      yield labels.name, labels.read_bytes()
    folder = root / f"mnist_m_{split}"
    if folder.is_dir():
      for png in sorted(p for p in folder.glob("*.png") if not p.name.startswith(".")):
        yield f"{folder.name}/{png.name}", png.read_bytes()


def _mnist_m_root(folder: Path) -> Path:
  """The MNIST-M folder: `folder` itself or its `mnist_m/`, whichever holds the label files."""
  for root in (folder, folder / "mnist_m"):
    if any((root / f"mnist_m_{split}_labels.txt").is_file() for split in ("train", "test")):
      return root
  raise FileNotFoundError(
    f"no mnist_m_train_labels.txt in {str(folder)!r} or its mnist_m/; give mnist_m.tar.gz or "
    f"the folder it unpacks to (from {ORIGINS['mnist-m']})"
  )


def _decode_png(data: bytes) -> np.ndarray:
  """A 32x32 MNIST-M PNG as (32, 32, 3) uint8 (converted to RGB by Pillow if stored in another mode)."""
  with open_image(data, "PNG") as image:
    if image.size != (32, 32) or image.mode not in ("RGB", "P", "L"):
      raise ValueError(f"a {image.size[0]}x{image.size[1]} {image.mode} image, not 32x32 RGB")
    return np.asarray(image.convert("RGB"), np.uint8)


def _parse_mnist_m_labels(text: str, what: str, exp: Expected) -> list[tuple[str, int]]:
  rows, seen = [], set()
  for number, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    parts = line.split()
    if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
      raise not_official("mnist-m", what, f"line {number} reads {line[:60]!r}, not '<file> <label>'", exp)
    label = int(parts[1])
    if not 0 <= label <= 9:
      raise not_official("mnist-m", what, f"line {number} has the label {label}, outside 0..9", exp)
    if parts[0] in seen:
      raise not_official("mnist-m", what, f"line {number} lists {parts[0]} a second time", exp)
    seen.add(parts[0])
    rows.append((parts[0], label))
  return rows


def read_mnist_m(
  path: str | os.PathLike[str], table: Mapping[str, Expected] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Reads MNIST-M as distributed: split -> (images (N,32,32,3) uint8, labels (N,) int32), in label-file order.

  Args:
    path: `mnist_m.tar.gz`, the folder `mnist_m/` (with `mnist_m_train/`, `mnist_m_test/` and the two label files),
      or its parent.
    table: the expectations per split (default `EXPECTED["mnist-m"]`).

  Raises:
    ValueError: an unreadable archive, a missing or malformed label file, a listed image that is missing or not a
      32x32 RGB PNG, a label outside 0..9, or a wrong count.
  """
  path = Path(path).expanduser()
  table = table or EXPECTED["mnist-m"]
  what = repr(str(path))
  if path.is_dir():
    _mnist_m_root(path)  # a folder without MNIST-M is a missing file, not a damaged one
  texts, images = {}, {"train": {}, "test": {}}
  try:
    for member, data in _mnist_m_members(path):
      if match := _MNIST_M_LABELS.search(member):
        texts[match.group(1)] = data.decode("ascii", errors="replace")
        continue
      split, filename = _MNIST_M_IMAGE.search(member).groups()
      try:
        images[split][filename] = _decode_png(data)
      except ValueError as e:
        raise not_official("mnist-m", what, f"mnist_m_{split}/{filename} is {e}", table[split]) from None
  except OfficialFileError:
    raise
  except DAMAGE_ERRORS as e:
    raise not_official("mnist-m", what, unreadable(e), table["train"]) from None
  out = {}
  for split in ("train", "test"):
    exp = table[split]
    if split not in texts:
      raise not_official("mnist-m", what, f"it has no mnist_m_{split}_labels.txt", exp)
    rows = _parse_mnist_m_labels(texts[split], f"{what} (mnist_m_{split}_labels.txt)", exp)
    missing = [f for f, _ in rows if f not in images[split]]
    if missing:
      raise not_official(
        "mnist-m",
        what,
        f"mnist_m_{split}_labels.txt lists {len(missing):,} images that "
        f"mnist_m_{split}/ lacks ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})",
        exp,
      )
    check_count("mnist-m", f"{what} (mnist_m_{split})", len(rows), exp)
    stacked = np.stack([images[split][f] for f, _ in rows]) if rows else np.zeros((0, 32, 32, 3), np.uint8)
    out[split] = (stacked, np.asarray([label for _, label in rows], np.int32))
  return out


def import_mnist_m(path: Path, data_dir, table: Mapping[str, Expected]) -> dict[str, Path]:
  """Checks and caches both splits of MNIST-M (the archive or its folder): split -> the cache file written."""
  splits = read_mnist_m(path, table)
  digest = f"md5 {file_md5(path)}" if path.is_file() else "folder"
  written = {}
  for split, (images, labels) in splits.items():
    written[split] = save_split(
      "mnist-m",
      split,
      data_dir,
      images,
      labels,
      f"genuine MNIST-M {split} ({len(images):,} images) as distributed by Ganin & Lempitsky, "
      f"from {path.name} ({digest}), http://yaroslav.ganin.net/",
    )
  return written
