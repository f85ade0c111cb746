"""Tests of dann_jax.data.official on small files written in the official formats: SVHN .mat, MNIST-M, USPS, BSDS500."""

import bz2
import io
import tarfile

import numpy as np
import pytest
import scipy.io
from PIL import Image

from dann_jax import io as dann_io
from dann_jax.data import official
from dann_jax.data import photos as photos_lib
from dann_jax.data.official import Expected


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
  """The data root of every test: a fresh folder (never the user's cache)."""
  monkeypatch.setenv("DANN_JAX_DATA", str(tmp_path / "dann_jax_data"))
  return tmp_path / "dann_jax_data"


def _no_checks(name, **counts):
  """`expected=` with no md5 and the given counts per split."""
  return {split: Expected(official.EXPECTED[name][split].filename, None, n) for split, n in counts.items()}


def _with_md5(name, split, path, count):
  return {split: Expected(official.EXPECTED[name][split].filename, official.file_md5(path), count)}


# ---------------------------------------------------------------------------------------------------------------
# SVHN.


def _svhn_mat(path, n=20, seed=0, **overrides):
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
  y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10, 10 meaning the digit 0
  variables = {"X": x, "y": y, **overrides}
  path.parent.mkdir(parents=True, exist_ok=True)
  scipy.io.savemat(path, variables)
  return x, y


def test_svhn_import_transposes_and_maps_label_10_to_0(tmp_path, data_dir):
  mat = tmp_path / "svhn" / "train_32x32.mat"
  x, y = _svhn_mat(mat)
  written = official.import_official("svhn", mat, expected=_with_md5("svhn", "train", mat, 20))
  assert written == {"train": official.official_cache_path("svhn", "train")}
  assert written["train"].is_relative_to(data_dir)
  domain = official.load_official("svhn", "train")
  np.testing.assert_array_equal(domain.images, np.transpose(x, (3, 0, 1, 2)))
  np.testing.assert_array_equal(domain.images[4, 7, 9], x[7, 9, :, 4])
  expected = np.where(y[:, 0] == 10, 0, y[:, 0])
  np.testing.assert_array_equal(domain.labels, expected)
  assert domain.labels[9] == 0 and domain.labels[0] == 1 and domain.labels.dtype == np.int32
  assert domain.num_classes == 10 and official.file_md5(mat) in domain.provenance
  assert official.is_imported("svhn", "train") and not official.is_imported("svhn", "test")


def test_svhn_folder_imports_both_splits(tmp_path):
  _svhn_mat(tmp_path / "d" / "train_32x32.mat", 20, 0)
  _svhn_mat(tmp_path / "d" / "test_32x32.mat", 10, 1)
  written = official.import_official("svhn", tmp_path / "d", expected=_no_checks("svhn", train=20, test=10))
  assert set(written) == {"train", "test"}
  assert len(official.load_official("svhn", "test")) == 10


def test_svhn_wrong_checksum_names_md5_and_url(tmp_path, data_dir):
  mat = tmp_path / "train_32x32.mat"
  _svhn_mat(mat)
  with pytest.raises(ValueError, match="e26dedcc434d2e4c54c9b2d4a06d8373") as error:
    official.import_official("svhn", mat)
  assert "http://ufldl.stanford.edu/housenumbers/" in str(error.value)
  assert "73,257 images" in str(error.value)
  assert not official.official_cache_path("svhn", "train").exists()


def test_svhn_truncated_file(tmp_path):
  mat = tmp_path / "test_32x32.mat"
  _svhn_mat(mat)
  whole = official.file_md5(mat)
  mat.write_bytes(mat.read_bytes()[:5000])
  with pytest.raises(ValueError, match=f"md5 is .*expected .*md5 {whole}.*housenumbers"):
    official.import_official("svhn", mat, expected={"test": Expected("test_32x32.mat", whole, 20)})
  with pytest.raises(ValueError, match="cannot be read as a MATLAB file.*housenumbers"):
    official.import_official("svhn", mat, expected=_no_checks("svhn", test=20))


@pytest.mark.parametrize(
  "overrides, message",
  [
    (dict(X=None, y=None, images=np.zeros((32, 32, 3, 2), np.uint8)), r"no variable X or y \(found \['images'\]\)"),
    (dict(X=np.zeros((28, 28, 3, 20), np.uint8)), r"X has shape \(28, 28, 3, 20\)"),
    (dict(y=np.full((20, 1), 11, np.uint8)), "labels span 11..11, not the integers 1..10"),
    (dict(y=np.zeros((20, 1), np.uint8)), "labels span 0..0"),
    (dict(y=np.ones((19, 1), np.uint8)), r"y has shape \(19, 1\)"),
  ],
)
def test_svhn_bad_contents(tmp_path, overrides, message):
  mat = tmp_path / "train_32x32.mat"
  rng = np.random.default_rng(0)
  variables = {"X": rng.integers(0, 256, (32, 32, 3, 20), dtype=np.uint8), "y": np.ones((20, 1), np.uint8)}
  variables.update(overrides)
  scipy.io.savemat(mat, {k: v for k, v in variables.items() if v is not None})
  with pytest.raises(ValueError, match=message):
    official.import_official("svhn", mat, expected=_no_checks("svhn", train=20))


def test_svhn_count_names_and_missing_files(tmp_path):
  mat = tmp_path / "train_32x32.mat"
  _svhn_mat(mat)
  with pytest.raises(ValueError, match="holds 20 images; expected 21 images"):
    official.import_official("svhn", mat, expected=_no_checks("svhn", train=21))
  other = tmp_path / "svhn.mat"
  mat.rename(other)
  with pytest.raises(ValueError, match="not named train_32x32.mat or test_32x32.mat"):
    official.import_official("svhn", other)
  with pytest.raises(FileNotFoundError, match="holds none of train_32x32.mat"):
    official.import_official("svhn", tmp_path)
  with pytest.raises(FileNotFoundError, match="does not exist.*housenumbers"):
    official.import_official("svhn", tmp_path / "absent.mat")


def test_load_before_import_and_damaged_cache(tmp_path):
  with pytest.raises(FileNotFoundError, match="not imported.*train_32x32.mat.*housenumbers"):
    official.load_official("svhn", "train")
  mat = tmp_path / "train_32x32.mat"
  _svhn_mat(mat)
  path = official.import_official("svhn", mat, expected=_no_checks("svhn", train=20))["train"]
  path.write_bytes(path.read_bytes()[:100])
  with pytest.raises(FileNotFoundError, match="not imported"):
    official.load_official("svhn", "train")
  assert not path.exists()  # the damaged cache file was removed


def test_unknown_names_and_splits(tmp_path):
  with pytest.raises(ValueError, match="unknown official data set 'mnist'"):
    official.import_official("mnist", tmp_path)
  with pytest.raises(ValueError, match="does not have"):
    official.import_official("svhn", tmp_path, expected={"val": Expected("x", None, 1)})
  with pytest.raises(ValueError, match="not a split of usps"):
    official.load_official("usps", "val")
  with pytest.raises(ValueError, match="photos, not a domain"):
    official.load_official("bsds500", "train")


# ---------------------------------------------------------------------------------------------------------------
# MNIST-M.


def _png_bytes(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def _mnist_m_files(counts=(("train", 6), ("test", 3)), seed=0):
  """{relative path: bytes} of a mini MNIST-M, label files listing the images out of name order; and the arrays."""
  rng = np.random.default_rng(seed)
  files, arrays = {}, {}
  for split, n in counts:
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    order = np.arange(n)[::-1]
    for i in range(n):
      files[f"mnist_m/mnist_m_{split}/{i:08d}.png"] = _png_bytes(images[i])
    files[f"mnist_m/mnist_m_{split}_labels.txt"] = "".join(f"{i:08d}.png {labels[i]}\n" for i in order).encode()
    arrays[split] = (images[order], labels[order])
  return files, arrays


def _write_tree(root, files):
  for name, data in files.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(data)
  return root


def _write_tar(path, files, mode="w:gz"):
  with tarfile.open(path, mode) as tar:
    for name, data in files.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return path


MNIST_M_COUNTS = _no_checks("mnist-m", train=6, test=3)


@pytest.mark.parametrize("form", ["folder", "parent", "tar.gz"])
def test_mnist_m_folder_and_archive(tmp_path, form):
  files, arrays = _mnist_m_files()
  if form == "tar.gz":
    path = _write_tar(tmp_path / "mnist_m.tar.gz", files)
  else:
    parent = _write_tree(tmp_path / "unpacked", files)
    path = parent / "mnist_m" if form == "folder" else parent
  written = official.import_official("mnist-m", path, expected=MNIST_M_COUNTS)
  assert set(written) == {"train", "test"}
  for split, (images, labels) in arrays.items():
    domain = official.load_official("mnist-m", split)
    np.testing.assert_array_equal(domain.images, images)  # in the order of the label file
    np.testing.assert_array_equal(domain.labels, labels)
    assert "MNIST-M" in domain.provenance and "yaroslav.ganin.net" in domain.provenance


def _break(files, name, data):
  return {**files, name: data}


@pytest.mark.parametrize(
  "change, message",
  [
    (lambda f: _break(f, "mnist_m/mnist_m_train_labels.txt", b"00000000.png 12\n"), "label 12, outside 0..9"),
    (lambda f: _break(f, "mnist_m/mnist_m_train_labels.txt", b"00000000.png\n"), "not '<file> <label>'"),
    (lambda f: _break(f, "mnist_m/mnist_m_test_labels.txt", b"00000000.png 1\n00000000.png 2\n"), "second time"),
    (lambda f: _break(f, "mnist_m/mnist_m_train_labels.txt", b"00000099.png 1\n"), "lacks \\(00000099.png\\)"),
    (
      lambda f: _break(f, "mnist_m/mnist_m_train/00000001.png", _png_bytes(np.zeros((28, 28, 3), np.uint8))),
      "28x28 RGB image, not 32x32 RGB",
    ),
    (lambda f: _break(f, "mnist_m/mnist_m_train/00000001.png", b"\x89PNG broken"), "00000001.png"),
    (lambda f: {k: v for k, v in f.items() if "test_labels" not in k}, "no mnist_m_test_labels.txt"),
  ],
)
def test_mnist_m_bad_archives(tmp_path, change, message):
  files, _ = _mnist_m_files()
  archive = _write_tar(tmp_path / "mnist_m.tar.gz", change(files))
  with pytest.raises(ValueError, match=message) as error:
    official.import_official("mnist-m", archive, expected=MNIST_M_COUNTS)
  assert "http://yaroslav.ganin.net/" in str(error.value)


def test_mnist_m_counts_and_truncated_archive(tmp_path, data_dir):
  files, _ = _mnist_m_files()
  archive = _write_tar(tmp_path / "mnist_m.tar.gz", files)
  with pytest.raises(ValueError, match="holds 6 images; expected 59,001 images"):
    official.import_official("mnist-m", archive)
  data = archive.read_bytes()
  archive.write_bytes(data[: len(data) * 2 // 3])
  with pytest.raises(ValueError, match="cannot be read to the end.*yaroslav.ganin.net"):
    official.import_official("mnist-m", archive, expected=MNIST_M_COUNTS)
  assert not (data_dir / "official").exists() or not any((data_dir / "official").glob("mnist-m*"))
  with pytest.raises(FileNotFoundError, match="no mnist_m_train_labels.txt"):
    official.import_official("mnist-m", tmp_path)


@pytest.mark.parametrize("name", ["mnist-m", "bsds500"])
def test_an_archive_of_random_bytes_is_one_line(name, tmp_path, data_dir, capsys):
  from dann_jax.cli import main

  archive = tmp_path / official.ARCHIVES[name]
  archive.write_bytes(np.random.default_rng(0).bytes(20_000))
  assert main(["data", "import", name, str(archive)]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "not a tar archive, compressed or not" in err and "ReadError" not in err
  assert str(archive) in err


# ---------------------------------------------------------------------------------------------------------------
# USPS.


def _usps_line(label, grey_values, sparse=False):
  tokens = [str(label)]
  for i, v in enumerate(grey_values, 1):
    if not (sparse and v == 0):
      tokens.append(f"{i}:{v:g}")
  return " ".join(tokens)


def _usps_rows():
  """Three 16x16 rows: a ramp, quarter values, and a sparse row (zeros left out), with labels 10, 1, 5."""
  ramp = np.tile(np.linspace(-1, 1, 16), (16, 1))
  quarters = np.full((16, 16), -0.5)
  quarters[4:12, 6:10] = 0.5
  sparse = np.zeros((16, 16))
  sparse[0, 0], sparse[15, 15] = -1.0, 1.0
  return [(10, ramp), (1, quarters), (5, sparse)]


def _write_usps(path, rows, sparse_last=True):
  lines = [
    _usps_line(label, grid.ravel(), sparse=sparse_last and k == len(rows) - 1) for k, (label, grid) in enumerate(rows)
  ]
  path.write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
  return path


def test_usps_values_labels_and_resampling(tmp_path):
  path = _write_usps(tmp_path / "usps.bz2", _usps_rows())
  official.import_official("usps", path, expected=_with_md5("usps", "train", path, 3))
  domain = official.load_official("usps", "train")
  np.testing.assert_array_equal(domain.labels, [9, 0, 4])  # 1..10 -> 0..9
  # The 16x16 stage: round((v + 1) * 127.5).
  assert official.usps_to_uint8(np.array([-1.0, -0.5, 0.0, 0.5, 1.0])).tolist() == [0, 64, 128, 191, 255]
  quarters = np.full((16, 16), 64, np.uint8)
  quarters[4:12, 6:10] = 191
  sparse = np.full((16, 16), 128, np.uint8)
  sparse[0, 0], sparse[15, 15] = 0, 255
  ramp = np.rint((np.linspace(-1, 1, 16) + 1) * 127.5).astype(np.uint8)
  for image, grey in zip(domain.images, (np.tile(ramp, (16, 1)), quarters, sparse)):
    np.testing.assert_array_equal(image[..., 0], image[..., 1])
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    reference = np.kron(np.eye(16), [[1], [1]]) @ grey  # rows doubled, to check the layout
    assert reference.shape == (32, 16)
    # Pillow's bilinear 2x upsample: edge pixels copied, inside 3/4 of the nearer and 1/4 of the farther pixel.
    weights = np.zeros((32, 16))
    for i in range(32):
      centre = (i + 0.5) / 2 - 0.5
      lo = int(np.floor(centre))
      for j, w in ((lo, 1 - (centre - lo)), (lo + 1, centre - lo)):
        weights[i, min(max(j, 0), 15)] += w
    expected = weights @ grey.astype(np.float64) @ weights.T
    np.testing.assert_allclose(image[..., 0], expected, atol=1)
  ramp_image = domain.images[0, ..., 0]
  assert ramp_image[0, 0] == 0 and ramp_image[31, 31] == 255 and ramp_image[10, 0] == 0
  assert (np.diff(ramp_image[5].astype(int)) >= 0).all()  # left to right: row-major, not transposed
  quarters_image = domain.images[1, ..., 0]
  assert quarters_image[0, 0] == 64 and quarters_image[16, 16] == 191


def test_usps_test_file_in_a_folder(tmp_path):
  _write_usps(tmp_path / "usps.t.bz2", _usps_rows()[:2])
  written = official.import_official("usps", tmp_path, expected=_no_checks("usps", test=2))
  assert set(written) == {"test"}
  assert official.load_official("usps", "test").labels.tolist() == [9, 0]


def test_usps_wrong_checksum_and_truncated(tmp_path):
  path = _write_usps(tmp_path / "usps.bz2", _usps_rows())
  with pytest.raises(ValueError, match="ec16c51db3855ca6c91edd34d0e9b197") as error:
    official.import_official("usps", path)
  assert "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass.html#usps" in str(error.value)
  assert "7,291 images" in str(error.value)
  path.write_bytes(path.read_bytes()[:-20])
  with pytest.raises(ValueError, match="cannot be decompressed to the end.*csie"):
    official.import_official("usps", path, expected=_no_checks("usps", train=3))
  test_path = _write_usps(tmp_path / "usps.t.bz2", _usps_rows())
  with pytest.raises(ValueError, match="8ea070ee2aca1ac39742fdd1ef5ed118"):
    official.import_official("usps", test_path)


@pytest.mark.parametrize(
  "line, message",
  [
    ("11 1:0.5", "labels span 1..11, not 1..10"),
    ("0 1:0.5", "labels span 0..1"),
    ("3 1:1.5", r"values span .*, not \[-1, 1\]"),
    ("3 257:0.5", "outside 1..256"),
    ("3 1:0.5 1:0.2", "repeated"),
    ("3 1-0.5", "not 'label index:value"),
    ("2.5 1:0.5", "not an integer"),
  ],
)
def test_usps_bad_lines(tmp_path, line, message):
  path = tmp_path / "usps.bz2"
  path.write_bytes(bz2.compress(f"1 1:0.1\n{line}\n".encode()))
  with pytest.raises(ValueError, match=message):
    official.import_official("usps", path, expected=_no_checks("usps", train=2))


def test_parse_libsvm_sparse_rows():
  values, labels = official.parse_libsvm("3 2:0.5 4:-1\n\n7\n", num_features=4)
  np.testing.assert_array_equal(values, [[0, 0.5, 0, -1], [0, 0, 0, 0]])
  np.testing.assert_array_equal(labels, [3, 7])


# ---------------------------------------------------------------------------------------------------------------
# BSDS500.


def _jpeg_bytes(width, height, seed):
  y, x = np.mgrid[0:height, 0:width]
  image = np.stack([(x * 255 // width), (y * 255 // height), np.full_like(x, 40 * seed)], -1).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="JPEG", quality=80)
  return buffer.getvalue()


BSDS_COUNTS = _no_checks("bsds500", train=2, val=1, test=2)


def _bsds_files():
  files, k = {}, 0
  for split, n in (("train", 2), ("val", 1), ("test", 2)):
    for i in range(n):
      size = (481, 321) if (i + k) % 2 == 0 else (321, 481)
      files[f"BSR/BSDS500/data/images/{split}/{1000 + k}.jpg"] = _jpeg_bytes(*size, seed=k)
      k += 1
    files[f"BSR/BSDS500/data/images/{split}/Thumbs.db"] = b"windows junk"
  files["BSR/BSDS500/data/groundTruth/train/1000.mat"] = b"not read"
  files["BSR/documentation/readme.txt"] = b"not read"
  return files


@pytest.mark.parametrize("form", ["tgz", "folder", "images"])
def test_bsds500_archive_and_folder(tmp_path, data_dir, form):
  files = _bsds_files()
  if form == "tgz":
    path = _write_tar(tmp_path / "BSR_bsds500.tgz", files)
  else:
    root = _write_tree(tmp_path / "unpacked", files)
    path = root if form == "folder" else root / "BSR" / "BSDS500" / "data" / "images"
  written = official.import_official("bsds500", path, expected=BSDS_COUNTS)
  folder = official.bsds500_images()
  assert folder == data_dir / "official" / "bsds500" / "images"
  assert written == {split: folder / split for split in official.BSDS500_SPLITS}
  for name, data in files.items():
    if name.endswith(".jpg"):
      split, filename = name.split("/")[-2:]
      assert (folder / split / filename).read_bytes() == data  # byte for byte, never re-encoded
  assert not list(folder.rglob("Thumbs.db"))
  photo_set = official.bsds500_photos()
  assert len(photo_set.photos) == 5 and photo_set.is_bsds500
  patches = photos_lib.sample_patches(photo_set, "train", 4, np.random.default_rng(0))
  assert patches.shape == (4, 32, 32, 3)
  assert official.is_imported("bsds500", "train")
  assert not list(folder.parent.glob(".images.*"))  # no temporary folder left behind


def test_bsds500_bad_inputs_keep_the_previous_import(tmp_path, data_dir):
  files = _bsds_files()
  official.import_official("bsds500", _write_tar(tmp_path / "BSR_bsds500.tgz", files), expected=BSDS_COUNTS)
  before = sorted(p.name for p in official.bsds500_images().rglob("*.jpg"))
  with pytest.raises(ValueError, match="holds 2 images; expected 200 images.*resources.html"):
    official.import_official("bsds500", tmp_path / "BSR_bsds500.tgz")
  wrong_size = _break(files, "BSR/BSDS500/data/images/val/1002.jpg", _jpeg_bytes(100, 80, 0))
  with pytest.raises(ValueError, match="100x80 RGB image, not a 481x321"):
    official.import_official("bsds500", _write_tar(tmp_path / "a.tgz", wrong_size), expected=BSDS_COUNTS)
  corrupt = _break(files, "BSR/BSDS500/data/images/test/1003.jpg", b"\xff\xd8\xff\xe0 not really")
  with pytest.raises(ValueError, match="images/test/1003.jpg"):
    official.import_official("bsds500", _write_tar(tmp_path / "b.tgz", corrupt), expected=BSDS_COUNTS)
  data = (tmp_path / "BSR_bsds500.tgz").read_bytes()
  (tmp_path / "cut.tgz").write_bytes(data[: len(data) // 2])
  with pytest.raises(ValueError, match="cannot be read to the end.*BSR_bsds500.tgz"):
    official.import_official("bsds500", tmp_path / "cut.tgz", expected=BSDS_COUNTS)
  (tmp_path / "empty_dir").mkdir()
  with pytest.raises(FileNotFoundError, match="no BSDS500 images folder"):
    official.import_official("bsds500", tmp_path / "empty_dir")
  assert sorted(p.name for p in official.bsds500_images().rglob("*.jpg")) == before
  assert not list(official.bsds500_dir().parent.glob(".images.*"))


def test_bsds500_not_imported(tmp_path):
  with pytest.raises(FileNotFoundError, match="BSDS500 is not imported.*BSR_bsds500.tgz"):
    official.bsds500_images()
  assert not official.is_imported("bsds500", "train")


def test_cache_files_are_written_atomically(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(dann_io, "save_npz_atomic", lambda path, **arrays: calls.append(path))
  mat = tmp_path / "train_32x32.mat"
  _svhn_mat(mat)
  official.import_official("svhn", mat, expected=_no_checks("svhn", train=20))
  assert calls == [official.official_cache_path("svhn", "train")]


# ---------------------------------------------------------------------------------------------------------------
# The imported files as domains.


def test_imported_usps_and_mnist_m_are_domains(tmp_path):
  from dann_jax.data import domains

  _write_usps(tmp_path / "usps.t.bz2", _usps_rows())
  official.import_official("usps", tmp_path / "usps.t.bz2", expected=_no_checks("usps", test=3))
  usps, imported = domains.load_domain("usps", "test"), official.load_official("usps", "test")
  assert usps.name == "usps" and usps.provenance == imported.provenance
  np.testing.assert_array_equal(usps.images, imported.images)
  np.testing.assert_array_equal(usps.labels, [9, 0, 4])
  files, arrays = _mnist_m_files()
  _write_tree(tmp_path / "m", files)
  official.import_official("mnist-m", tmp_path / "m", expected=_no_checks("mnist-m", train=6, test=3))
  mnist_m = domains.load_domain("mnist-m-official", "train")
  assert mnist_m.name == "mnist-m-official" and "genuine MNIST-M" in mnist_m.provenance
  np.testing.assert_array_equal(mnist_m.images, arrays["train"][0])
  np.testing.assert_array_equal(mnist_m.labels, arrays["train"][1])
  assert official.official_cache_path("usps", "test") == domains.official_cache_path("usps", "test")


@pytest.mark.parametrize("domain,name", [("usps", "usps"), ("mnist-m-official", "mnist-m")])
def test_domains_not_imported_say_how_to_import(domain, name):
  from dann_jax.data import domains

  with pytest.raises(FileNotFoundError, match=f"^{domain} test needs the file: `dann-jax data import {name} PATH`"):
    domains.load_domain(domain, "test")
