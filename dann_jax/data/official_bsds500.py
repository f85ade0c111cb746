"""The official BSDS500 photos: `BSR_bsds500.tgz` or the folder it unpacks to, copied into the data root.

Published at https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/resources.html. The 500 JPEGs of
`BSR/BSDS500/data/images/{train,val,test}` are checked (each decodes as a 481x321 or 321x481 RGB photo, and the
counts per split) and copied byte for byte (no re-encoding) to `official/bsds500/images/` under the data root, the
folder that `photos.folder_photos` (`backgrounds=`) reads for MNIST-M patches. The folder is replaced whole: a
failed import leaves the previous one.

References: Arbelaez et al., TPAMI 2011 (BSDS500); Ganin & Lempitsky, arXiv 1409.7495, Sec. 5 (MNIST-M from BSDS500
patches).
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

from dann_jax import io as dann_io
from dann_jax.data import photos as photos_lib
from dann_jax.data import sources
from dann_jax.data.official_common import (
  DAMAGE_ERRORS,
  ORIGINS,
  Expected,
  OfficialFileError,
  check_count,
  file_md5,
  not_official,
  open_image,
  unreadable,
)

BSDS500_SPLITS = ("train", "val", "test")
BSDS500_SIZES = frozenset({(481, 321), (321, 481)})  # (width, height) of every BSDS500 photo
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
  with open_image(data, "JPEG") as image:
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


def import_bsds500(path: Path, data_dir, table: Mapping[str, Expected]) -> dict[str, Path]:
  """Checks the 500 photos (the archive or its folder) and copies them to `bsds500_dir`: split -> its folder."""
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
          raise not_official("bsds500", what, f"images/{split}/{filename} is {e}", table[split]) from None
        (tmp / split / filename).write_bytes(data)
        counts[split] += 1
    except OfficialFileError:
      raise
    except DAMAGE_ERRORS as e:
      raise not_official("bsds500", what, unreadable(e)) from None
    for split in BSDS500_SPLITS:
      check_count("bsds500", f"{what} (images/{split})", counts[split], table[split])
    _replace_dir(tmp, final)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  digest = f"md5 {file_md5(path)}" if path.is_file() else "folder"
  dann_io.write_text_atomic(
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
