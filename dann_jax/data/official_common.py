"""What the importers of official files share: the expected files, their origins, the checks and the cache writes.

`EXPECTED` says, per data set and split, the published file name, md5 (where one is published) and image count;
`ORIGINS` where each data set is published. A file that fails a check gets one `OfficialFileError` (from
`not_official`) naming what is wrong, the expected checksum and counts, and where the file comes from. A checked
split is cached, atomically, as `.npz` at `official_cache_path` (under `data_root()/official/`), where `domains.py`
reads it. The per-format readers are `official_svhn.py`, `official_mnist_m.py`, `official_usps.py` and
`official_bsds500.py`; `official.py` dispatches to them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import tarfile
import zlib
from pathlib import Path
from typing import Mapping

import numpy as np

from dann_jax import io as dann_io
from dann_jax.data import domains

OFFICIAL_NAMES = ("svhn", "mnist-m", "usps", "bsds500")
DOMAIN_NAMES = ("svhn", "mnist-m", "usps")  # the ones served as Domains; bsds500 is photos


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
DAMAGE_ERRORS = (OSError, EOFError, ValueError, zlib.error, tarfile.TarError)  # what a damaged or truncated file raises


def unreadable(error: BaseException) -> str:
  """Why a damaged file could not be read, in one line: "it cannot be read to the end (...)"."""
  if isinstance(error, tarfile.ReadError) and "could not be opened successfully" in str(error):
    why = "not a tar archive, compressed or not"  # tarfile lists every compression it tried, one per line
  else:
    lines = str(error).strip().splitlines()
    why = f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
  return f"it cannot be read to the end ({why})"


class OfficialFileError(ValueError):
  """A file that is not the official one (wrong checksum, truncated, damaged, wrong structure)."""


def not_official(name: str, what: str, problem: str, exp: Expected | None = None) -> OfficialFileError:
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


def verify_md5(name: str, path: Path, exp: Expected) -> str:
  """The md5 of `path`, after checking it against `exp.md5` where one is published."""
  digest = file_md5(path)
  if exp.md5 is not None and digest != exp.md5:
    raise not_official(name, repr(str(path)), f"its md5 is {digest} ({path.stat().st_size:,} bytes)", exp)
  return digest


def check_count(name: str, what: str, count: int, exp: Expected) -> None:
  """Raises `not_official` when `count` images differ from `exp.count` (unless that is None)."""
  if exp.count is not None and count != exp.count:
    raise not_official(name, what, f"it holds {count:,} images", exp)


def official_cache_path(name: str, split: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
  """Where `import_official` caches one split of `name` (svhn, mnist-m, usps); `domains` reads it from there."""
  return domains.official_cache_path(name, split, data_dir)


def save_split(name: str, split: str, data_dir, images: np.ndarray, labels: np.ndarray, provenance: str) -> Path:
  """Caches one converted split at `official_cache_path`, atomically; returns that path."""
  if images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8 or len(images) != len(labels):
    raise AssertionError(f"{name} {split}: made images {images.shape} {images.dtype} and labels {labels.shape}")
  path = official_cache_path(name, split, data_dir)
  dann_io.save_npz_atomic(
    path,
    images=np.ascontiguousarray(images),
    labels=np.ascontiguousarray(labels, np.int32),
    provenance=np.array(provenance),
  )
  return path


def files_named(name: str, path: Path, table: Mapping[str, Expected]) -> dict[str, Path]:
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


def import_checksummed(
  name: str, read, describe, path: Path, data_dir, table: Mapping[str, Expected]
) -> dict[str, Path]:
  """Imports each split file of `name` whose md5 is published: md5, read with `read(file, exp)`, count, cache.

  `describe(split, count, file, digest)` is the provenance text kept with the cached split.
  """
  written = {}
  for split, file in files_named(name, path, table).items():
    exp = table[split]
    digest = verify_md5(name, file, exp)
    images, labels = read(file, exp)
    check_count(name, repr(str(file)), len(images), exp)
    written[split] = save_split(name, split, data_dir, images, labels, describe(split, len(images), file, digest))
  return written


def open_image(data: bytes, kind: str):
  """A decoded PIL image from bytes; ValueError("not a readable ...") when it does not decode to the end."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  try:
    image = Image.open(io.BytesIO(data))
    image.load()
  except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
    raise ValueError(f"not a readable {kind} ({type(e).__name__}: {e})") from None
  return image
