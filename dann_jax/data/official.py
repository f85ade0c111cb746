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

This file is the entry point; each format is read and converted by its own module (`official_svhn.py`,
`official_mnist_m.py`, `official_usps.py`, `official_bsds500.py`, whose docstrings give the conversions), over the
checks and cache writes of `official_common.py`. Their public names are importable from here.

References: Netzer et al. 2011 (SVHN); Ganin & Lempitsky, arXiv 1409.7495, Sec. 5 (MNIST-M from BSDS500 patches);
Hull 1994 (USPS); Arbelaez et al., TPAMI 2011 (BSDS500).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Mapping

from dann_jax.data import domains, sources
from dann_jax.data.domains import Domain
from dann_jax.data.official_bsds500 import BSDS500_SIZES as BSDS500_SIZES
from dann_jax.data.official_bsds500 import BSDS500_SPLITS as BSDS500_SPLITS
from dann_jax.data.official_bsds500 import bsds500_dir as bsds500_dir
from dann_jax.data.official_bsds500 import bsds500_images, import_bsds500
from dann_jax.data.official_bsds500 import bsds500_photos as bsds500_photos
from dann_jax.data.official_common import (
  ARCHIVES,
  DOMAIN_NAMES,
  EXPECTED,
  OFFICIAL_NAMES,
  ORIGINS,
  Expected,
  official_cache_path,
)
from dann_jax.data.official_common import OfficialFileError as OfficialFileError
from dann_jax.data.official_common import file_md5 as file_md5
from dann_jax.data.official_mnist_m import import_mnist_m
from dann_jax.data.official_mnist_m import read_mnist_m as read_mnist_m
from dann_jax.data.official_svhn import import_svhn
from dann_jax.data.official_svhn import read_svhn_mat as read_svhn_mat
from dann_jax.data.official_usps import USPS_FEATURES as USPS_FEATURES
from dann_jax.data.official_usps import import_usps
from dann_jax.data.official_usps import parse_libsvm as parse_libsvm
from dann_jax.data.official_usps import read_usps as read_usps
from dann_jax.data.official_usps import usps_to_uint8 as usps_to_uint8


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


_IMPORTERS = {"svhn": import_svhn, "mnist-m": import_mnist_m, "usps": import_usps, "bsds500": import_bsds500}


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
