"""The official files of SVHN, MNIST-M, USPS and BSDS500, read from disk, verified, and cached under the data root.

Nothing here downloads. Get the files from their publishers, then `import_official(name, path)` checks them and
writes them, atomically, under `data_root()/official/` (`$DANN_JAX_DATA`, default `~/.cache/dann_jax`);
`load_official(name, split)` then serves a split as a `Domain`, and `bsds500_images()` the photo folder.

- svhn: train_32x32.mat, test_32x32.mat (Format 2, cropped digits), from http://ufldl.stanford.edu/housenumbers/
- mnist-m: mnist_m.tar.gz or its folder mnist_m/ (the unpacked MNIST-M), from http://yaroslav.ganin.net/
- usps: usps.bz2, usps.t.bz2 (libsvm), from https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass.html
- bsds500: BSR_bsds500.tgz or its folder BSR/, from
  https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/resources.html

Checks: the md5 of each file that has a published one (SVHN and USPS, `EXPECTED`), and for every file its
structure: image counts per split, shapes, label ranges, and that every image decodes. A file that fails gets one
error naming the expected checksum and counts and where the file comes from.

Conversions, all deterministic:
- SVHN: `X` (32,32,3,N) uint8 -> (N,32,32,3); `y` (N,1) in 1..10 with 10 meaning the digit 0 -> 0..9.
- MNIST-M: each 32x32 PNG as is (RGB; a palette or grey PNG converted to RGB by Pillow); labels from
  `mnist_m_{train,test}_labels.txt` (`<file> <label>` lines), in the order of those files.
- USPS: libsvm lines `label index:value ...` (indices 1..256 row-major, a missing index means 0), labels 1..10 ->
  0..9, values v in [-1, 1] -> round((v + 1) * 127.5) as 16x16 uint8 grey, then resized to 32x32 with Pillow's
  BILINEAR filter and repeated to three channels (`custom.to_rgb32`).
- BSDS500: the 500 JPEGs of `BSR/BSDS500/data/images/{train,val,test}` copied byte for byte (no re-encoding) to
  `official/bsds500/images/`, the folder that `photos.folder_photos` (`backgrounds=`) reads for MNIST-M patches.

References: Netzer et al. 2011 (SVHN); Ganin & Lempitsky, arXiv 1409.7495, Sec. 5 (MNIST-M from BSDS500 patches);
Hull 1994 (USPS); Arbelaez et al., TPAMI 2011 (BSDS500).
"""

from __future__ import annotations

import bz2
import contextlib
import dataclasses
import hashlib
import io
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from dann_jax.data import custom
from dann_jax.data import domains
from dann_jax.data import photos as photos_lib
from dann_jax.data import sources
from dann_jax.data.domains import Domain

OFFICIAL_NAMES = ("svhn", "mnist-m", "usps", "bsds500")
DOMAIN_NAMES = ("svhn", "mnist-m", "usps")  # the ones served as Domains; bsds500 is photos
BSDS500_SPLITS = ("train", "val", "test")
BSDS500_SIZES = frozenset({(481, 321), (321, 481)})  # (width, height) of every BSDS500 photo
USPS_FEATURES = 256


@dataclasses.dataclass(frozen=True)
class Expected:
  """What one official file (or one split inside an archive) must be.

  Attributes:
    filename: the published name, e.g. "train_32x32.mat" (for archives, the split's folder inside it).
    md5: the published md5 of the file, or None where none is published (then only the structure is checked).
    count: the number of images, or None to skip that check.
  """

  filename: str
  md5: str | None
  count: int | None


EXPECTED: dict[str, dict[str, Expected]] = {
  "svhn": {
    "train": Expected("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373", 73_257),
    "test": Expected("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3", 26_032),
  },
  "mnist-m": {"train": Expected("mnist_m_train", None, 59_001), "test": Expected("mnist_m_test", None, 9_001)},
  "usps": {
    "train": Expected("usps.bz2", "ec16c51db3855ca6c91edd34d0e9b197", 7_291),
    "test": Expected("usps.t.bz2", "8ea070ee2aca1ac39742fdd1ef5ed118", 2_007),
  },
  "bsds500": {
    "train": Expected("train", None, 200),
    "val": Expected("val", None, 100),
    "test": Expected("test", None, 200),
  },
}
ARCHIVES = {"mnist-m": "mnist_m.tar.gz", "bsds500": "BSR_bsds500.tgz"}
ORIGINS = {
  "svhn": "http://ufldl.stanford.edu/housenumbers/ (Format 2: cropped digits, train_32x32.mat and test_32x32.mat)",
  "mnist-m": "http://yaroslav.ganin.net/ (the unpacked MNIST-M, mnist_m.tar.gz)",
  "usps": "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass.html#usps (usps.bz2, usps.t.bz2)",
  "bsds500": "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/resources.html (BSR_bsds500.tgz)",
}
_DAMAGE = (OSError, EOFError, ValueError, zlib.error, tarfile.TarError)  # what a damaged or truncated file raises


class OfficialFileError(ValueError):
  """A file that is not the official one (wrong checksum, truncated, damaged, wrong structure)."""


def _check_name(name: str) -> None:
  if name not in OFFICIAL_NAMES:
    raise ValueError(f"unknown official data set {name!r}; known: {', '.join(OFFICIAL_NAMES)}")


def _expected(name: str, expected: Mapping[str, Expected] | None) -> dict[str, Expected]:
  table = dict(EXPECTED[name])
  if expected:
    unknown = sorted(set(expected) - set(table))
    if unknown:
      raise ValueError(f"expected= names splits {unknown} that {name} does not have; its splits: {list(table)}")
    table.update(expected)
  return table


def _fail(name: str, what: str, problem: str, exp: Expected | None = None) -> OfficialFileError:
  """The one error of a file that is not the official one: the problem, what was expected, where to get it."""
  wanted = []
  if exp is not None and exp.count is not None:
    wanted.append(f"{exp.count:,} images")
  if exp is not None and exp.md5 is not None:
    wanted.append(f"md5 {exp.md5}")
  expect = f"; expected {', '.join(wanted)}" if wanted else ""
  return OfficialFileError(
    f"{what} is not the official {name} file: {problem}{expect}. The file is truncated, "
    f"damaged or another version: get it again from {ORIGINS[name]}"
  )


def file_md5(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
  """The md5 of a file, read in chunks."""
  digest = hashlib.md5()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(chunk), b""):
      digest.update(block)
  return digest.hexdigest()


def _verify_md5(name: str, path: Path, exp: Expected) -> str:
  digest = file_md5(path)
  if exp.md5 is not None and digest != exp.md5:
    raise _fail(name, repr(str(path)), f"its md5 is {digest} ({path.stat().st_size:,} bytes)", exp)
  return digest


def _check_count(name: str, what: str, count: int, exp: Expected) -> None:
  if exp.count is not None and count != exp.count:
    raise _fail(name, what, f"it holds {count:,} images", exp)


def official_cache_path(name: str, split: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
  """Where `import_official` caches one split of `name` (svhn, mnist-m, usps); `domains` reads it from there."""
  return domains.official_cache_path(name, split, data_dir)


def _save(name: str, split: str, data_dir, images: np.ndarray, labels: np.ndarray, provenance: str) -> Path:
  if images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8 or len(images) != len(labels):
    raise AssertionError(f"{name} {split}: made images {images.shape} {images.dtype} and labels {labels.shape}")
  path = official_cache_path(name, split, data_dir)
  sources.save_npz_atomic(
    path,
    images=np.ascontiguousarray(images),
    labels=np.ascontiguousarray(labels, np.int32),
    provenance=np.array(provenance),
  )
  return path


def _files_named(name: str, path: Path, table: Mapping[str, Expected]) -> dict[str, Path]:
  """split -> file, for a data set published as one file per split: `path` is one of them or their folder."""
  if path.is_file():
    for split, exp in table.items():
      if path.name == exp.filename:
        return {split: path}
    names = " or ".join(exp.filename for exp in table.values())
    raise ValueError(
      f"{str(path)!r} is not named {names}; give the official file under its published name "
      f"(from {ORIGINS[name]}), or the folder that holds it"
    )
  found = {split: path / exp.filename for split, exp in table.items() if (path / exp.filename).is_file()}
  if not found:
    names = ", ".join(exp.filename for exp in table.values())
    raise FileNotFoundError(f"the folder {str(path)!r} holds none of {names}; get them from {ORIGINS[name]}")
  return found


# ---------------------------------------------------------------------------------------------------------------
# SVHN (.mat, Format 2).


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
    raise _fail("svhn", what, f"it cannot be read as a MATLAB file ({type(e).__name__}: {e})", exp) from None
  missing = [k for k in ("X", "y") if k not in mat]
  if missing:
    found = sorted(variable for variable, _, _ in scipy_io.whosmat(path))
    raise _fail(
      "svhn",
      what,
      f"it has no variable {' or '.join(missing)} (found {found}); the cropped-digits "
      "files (Format 2) hold X (32,32,3,N) and y (N,1)",
      exp,
    )
  x, y = np.asarray(mat["X"]), np.asarray(mat["y"])
  if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
    raise _fail("svhn", what, f"X has shape {x.shape} and dtype {x.dtype}, not (32, 32, 3, N) uint8", exp)
  if y.shape not in ((x.shape[3], 1), (x.shape[3],)) or y.dtype.kind not in "iuf":
    raise _fail("svhn", what, f"y has shape {y.shape} ({y.dtype}), not ({x.shape[3]}, 1) labels", exp)
  y = y.reshape(-1)
  if y.size and (y.min() < 1 or y.max() > 10 or np.any(y != np.round(y))):
    raise _fail("svhn", what, f"its labels span {y.min()}..{y.max()}, not the integers 1..10", exp)
  labels = np.where(y == 10, 0, y).astype(np.int32)
  return np.ascontiguousarray(np.transpose(x, (3, 0, 1, 2))), labels


def _import_checksummed(
  name: str, read, describe, path: Path, data_dir, table: Mapping[str, Expected]
) -> dict[str, Path]:
  """Imports each split file of `name` whose md5 is published: md5, read with `read(file, exp)`, count, cache.

  `describe(split, count, file, digest)` is the provenance text kept with the cached split.
  """
  written = {}
  for split, file in _files_named(name, path, table).items():
    exp = table[split]
    digest = _verify_md5(name, file, exp)
    images, labels = read(file, exp)
    _check_count(name, repr(str(file)), len(images), exp)
    written[split] = _save(name, split, data_dir, images, labels, describe(split, len(images), file, digest))
  return written


def _import_svhn(path: Path, data_dir, table: Mapping[str, Expected]) -> dict[str, Path]:
  return _import_checksummed(
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


# ---------------------------------------------------------------------------------------------------------------
# MNIST-M (mnist_m.tar.gz or its folder).

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


def _open_image(data: bytes, kind: str):
  """A decoded PIL image from bytes; ValueError("not a readable ...") when it does not decode to the end."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  try:
    image = Image.open(io.BytesIO(data))
    image.load()
  except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
    raise ValueError(f"not a readable {kind} ({type(e).__name__}: {e})") from None
  return image


def _decode_png(data: bytes) -> np.ndarray:
  """A 32x32 MNIST-M PNG as (32, 32, 3) uint8 (converted to RGB by Pillow if stored in another mode)."""
  with _open_image(data, "PNG") as image:
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
      raise _fail("mnist-m", what, f"line {number} reads {line[:60]!r}, not '<file> <label>'", exp)
    label = int(parts[1])
    if not 0 <= label <= 9:
      raise _fail("mnist-m", what, f"line {number} has the label {label}, outside 0..9", exp)
    if parts[0] in seen:
      raise _fail("mnist-m", what, f"line {number} lists {parts[0]} a second time", exp)
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
        raise _fail("mnist-m", what, f"mnist_m_{split}/{filename} is {e}", table[split]) from None
  except OfficialFileError:
    raise
  except _DAMAGE as e:
    raise _fail("mnist-m", what, f"it cannot be read to the end ({type(e).__name__}: {e})", table["train"]) from None
  out = {}
  for split in ("train", "test"):
    exp = table[split]
    if split not in texts:
      raise _fail("mnist-m", what, f"it has no mnist_m_{split}_labels.txt", exp)
    rows = _parse_mnist_m_labels(texts[split], f"{what} (mnist_m_{split}_labels.txt)", exp)
    missing = [f for f, _ in rows if f not in images[split]]
    if missing:
      raise _fail(
        "mnist-m",
        what,
        f"mnist_m_{split}_labels.txt lists {len(missing):,} images that "
        f"mnist_m_{split}/ lacks ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})",
        exp,
      )
    _check_count("mnist-m", f"{what} (mnist_m_{split})", len(rows), exp)
    stacked = np.stack([images[split][f] for f, _ in rows]) if rows else np.zeros((0, 32, 32, 3), np.uint8)
    out[split] = (stacked, np.asarray([label for _, label in rows], np.int32))
  return out


def _import_mnist_m(path: Path, data_dir, table: Mapping[str, Expected]) -> dict[str, Path]:
  splits = read_mnist_m(path, table)
  digest = f"md5 {file_md5(path)}" if path.is_file() else "folder"
  written = {}
  for split, (images, labels) in splits.items():
    written[split] = _save(
      "mnist-m",
      split,
      data_dir,
      images,
      labels,
      f"genuine MNIST-M {split} ({len(images):,} images) as distributed by Ganin & Lempitsky, "
      f"from {path.name} ({digest}), http://yaroslav.ganin.net/",
    )
  return written


# ---------------------------------------------------------------------------------------------------------------
# USPS (libsvm text, bzip2).


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
  except (*_DAMAGE, UnicodeDecodeError) as e:
    raise _fail("usps", what, f"it cannot be decompressed to the end ({type(e).__name__}: {e})", exp) from None
  try:
    values, labels = parse_libsvm(text, USPS_FEATURES)
  except ValueError as e:
    raise _fail("usps", what, str(e), exp) from None
  if labels.size and (labels.min() < 1 or labels.max() > 10):
    raise _fail("usps", what, f"its labels span {labels.min()}..{labels.max()}, not 1..10", exp)
  if values.size and (values.min() < -1.0 or values.max() > 1.0):
    raise _fail("usps", what, f"its values span {values.min()}..{values.max()}, not [-1, 1]", exp)
  grey = usps_to_uint8(values).reshape(-1, 16, 16)
  images = custom.to_rgb32(grey) if len(grey) else np.zeros((0, 32, 32, 3), np.uint8)
  return images, (labels - 1).astype(np.int32)


def _import_usps(path: Path, data_dir, table: Mapping[str, Expected]) -> dict[str, Path]:
  return _import_checksummed(
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


# ---------------------------------------------------------------------------------------------------------------
# BSDS500 (BSR_bsds500.tgz or its folder).

_BSDS_IMAGE = re.compile(r"(?:^|/)BSDS500/data/images/(train|val|test)/([^/.][^/]*\.jpg)$")


def _bsds_images_dir(path: Path) -> Path | None:
  """The `images` folder (with train/ val/ test/) at or below `path`, for the usual ways of pointing at BSDS500."""
  for candidate in (
    path,
    path / "images",
    path / "data" / "images",
    path / "BSDS500" / "data" / "images",
    path / "BSR" / "BSDS500" / "data" / "images",
  ):
    if all((candidate / split).is_dir() for split in BSDS500_SPLITS):
      return candidate
  return None


def _bsds_members(path: Path, images: Path | None) -> Iterator[tuple[str, str, bytes]]:
  """(split, file name, JPEG bytes) of the photos, from the archive `path` or the images folder `images`."""
  if images is None:
    with tarfile.open(path, "r:*") as tar:
      for member in tar:
        if member.isfile() and (match := _BSDS_IMAGE.search(member.name)):
          yield match.group(1), match.group(2), tar.extractfile(member).read()
    return
  for split in BSDS500_SPLITS:
    for jpg in sorted(p for p in (images / split).glob("*.jpg") if not p.name.startswith(".")):
      yield split, jpg.name, jpg.read_bytes()


def _check_jpeg(data: bytes) -> None:
  with _open_image(data, "JPEG") as image:
    if image.mode != "RGB" or image.size not in BSDS500_SIZES:
      raise ValueError(f"a {image.size[0]}x{image.size[1]} {image.mode} image, not a 481x321 (or 321x481) RGB photo")


def _replace_dir(tmp: Path, final: Path) -> None:
  """Puts the finished folder `tmp` at `final`, replacing an older one, so `final` is complete or the old one."""
  old = None
  if final.exists():
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(final, old)
  os.replace(tmp, final)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


def bsds500_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
  """Where `import_official('bsds500', ...)` puts the photos: `data_root()/official/bsds500/images`."""
  return sources.data_root(data_dir) / "official" / "bsds500" / "images"


def _import_bsds500(path: Path, data_dir, table: Mapping[str, Expected]) -> dict[str, Path]:
  images = None
  if path.is_dir():
    images = _bsds_images_dir(path)
    if images is None:
      raise FileNotFoundError(
        f"no BSDS500 images folder (with train/, val/ and test/) at or below {str(path)!r}; "
        f"give BSR_bsds500.tgz or the folder it unpacks to (from {ORIGINS['bsds500']})"
      )
  final = bsds500_dir(data_dir)
  final.parent.mkdir(parents=True, exist_ok=True)
  what = repr(str(path))
  tmp = Path(tempfile.mkdtemp(prefix=".images.", suffix=".tmp", dir=final.parent))
  try:
    counts = dict.fromkeys(BSDS500_SPLITS, 0)
    for split in BSDS500_SPLITS:
      (tmp / split).mkdir()
    try:
      for split, filename, data in _bsds_members(path, images):
        try:
          _check_jpeg(data)
        except ValueError as e:
          raise _fail("bsds500", what, f"images/{split}/{filename} is {e}", table[split]) from None
        (tmp / split / filename).write_bytes(data)
        counts[split] += 1
    except OfficialFileError:
      raise
    except _DAMAGE as e:
      raise _fail("bsds500", what, f"it cannot be read to the end ({type(e).__name__}: {e})") from None
    for split in BSDS500_SPLITS:
      _check_count("bsds500", f"{what} (images/{split})", counts[split], table[split])
    _replace_dir(tmp, final)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  digest = f"md5 {file_md5(path)}" if path.is_file() else "folder"
  sources.write_text_atomic(
    final.parent / "provenance.txt",
    f"BSDS500 photos ({', '.join(f'{s} {n}' for s, n in counts.items())}) from {path.name} "
    f"({digest}), {ORIGINS['bsds500']}\n",
  )
  return {split: final / split for split in BSDS500_SPLITS}


def bsds500_images(data_dir: str | os.PathLike[str] | None = None) -> Path:
  """The imported BSDS500 photo folder, to pass as `backgrounds=` (MNIST-M and MNIST(max,BG) patches).

  Raises:
    FileNotFoundError: BSDS500 was not imported (the message says from where).
  """
  folder = bsds500_dir(data_dir)
  if not all((folder / split).is_dir() for split in BSDS500_SPLITS):
    raise FileNotFoundError(
      f"BSDS500 is not imported into {str(folder)!r}; get BSR_bsds500.tgz from "
      f"{ORIGINS['bsds500']} and run import_official('bsds500', PATH)"
    )
  return folder


def bsds500_photos(data_dir: str | os.PathLike[str] | None = None) -> photos_lib.PhotoSet:
  """The imported BSDS500 photos as a `photos.PhotoSet` (all 500, sorted by path)."""
  return photos_lib.folder_photos(bsds500_images(data_dir))


# ---------------------------------------------------------------------------------------------------------------
# Import and load.

_IMPORTERS = {"svhn": _import_svhn, "mnist-m": _import_mnist_m, "usps": _import_usps, "bsds500": _import_bsds500}


def import_official(
  name: str,
  path: str | os.PathLike[str],
  data_dir: str | os.PathLike[str] | None = None,
  *,
  expected: Mapping[str, Expected] | None = None,
) -> dict[str, Path]:
  """Verifies official files on disk and caches them under the data root.

  Args:
    name: svhn, mnist-m, usps or bsds500.
    path: the file (svhn: train_32x32.mat or test_32x32.mat; usps: usps.bz2 or usps.t.bz2; mnist-m:
      mnist_m.tar.gz; bsds500: BSR_bsds500.tgz) or a folder holding it (the .mat / .bz2 files, `mnist_m/`,
      `BSR/`). SVHN and USPS import the splits found; MNIST-M and BSDS500 need all of theirs.
    data_dir: the data root (default `$DANN_JAX_DATA`, else `~/.cache/dann_jax`).
    expected: per split, an `Expected` that replaces `EXPECTED[name][split]` (another md5 or count, or None to
      skip one); meant for tests and for re-packed copies.

  Returns:
    split -> the cache file written (bsds500: split -> its photo folder).

  Raises:
    ValueError: an unknown name, or a file that fails a check (one message: what is wrong, the expected md5 and
      counts, the official URL).
    FileNotFoundError: `path` does not exist or holds none of the files.
  """
  _check_name(name)
  table = _expected(name, expected)
  path = Path(path).expanduser()
  if not path.exists():
    raise FileNotFoundError(f"{str(path)!r} does not exist; get the {name} files from {ORIGINS[name]}")
  sources.writable_data_root(data_dir)  # before reading the files, not after
  return _IMPORTERS[name](path, data_dir, table)


def is_imported(name: str, split: str, data_dir: str | os.PathLike[str] | None = None) -> bool:
  """Whether `import_official` has cached `split` of `name` (svhn, mnist-m, usps; bsds500: any split name)."""
  _check_name(name)
  if name == "bsds500":
    with contextlib.suppress(FileNotFoundError):
      return bsds500_images(data_dir).is_dir()
    return False
  return official_cache_path(name, split, data_dir).is_file()


def load_official(name: str, split: str, data_dir: str | os.PathLike[str] | None = None) -> Domain:
  """One imported split (svhn, mnist-m, usps) as a `Domain` of (N,32,32,3) uint8 images and int32 labels 0..9.

  Raises:
    ValueError: an unknown name or split (bsds500 is photos: see `bsds500_images`).
    FileNotFoundError: the split was not imported (or its cache was damaged and removed); the message says from
      where to get the file.
  """
  _check_name(name)
  if name not in DOMAIN_NAMES:
    raise ValueError(f"{name} is a set of photos, not a domain; use bsds500_images() (backgrounds=) for it")
  if split not in EXPECTED[name]:
    raise ValueError(f"{split=} is not a split of {name}; use one of {list(EXPECTED[name])}")
  imported = domains.read_imported(name, split, data_dir)
  if imported is None:
    source = ARCHIVES.get(name, EXPECTED[name][split].filename)
    raise FileNotFoundError(
      f"{name} {split} is not imported into "
      f"{str(official_cache_path(name, split, data_dir).parent)!r}; get {source} from "
      f"{ORIGINS[name]} and run import_official({name!r}, PATH)"
    )
  return Domain(name, *imported[:2], 10, imported[2])
