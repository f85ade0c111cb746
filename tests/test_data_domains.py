"""Tests of dann_jax.data.domains, photos and render: pixel formulas, determinism, caching, errors, the CLI."""

import numpy as np
import pytest

from dann_jax import cli
from dann_jax.data import domains, photos, render, sources

pytestmark = pytest.mark.usefixtures("offline_data_dir")


def test_mnist_is_padded_with_zeros_and_channel_replicated():
  digits = np.arange(2 * 28 * 28).reshape(2, 28, 28).astype(np.uint8) | 1  # no zero inside
  out = domains.mnist_to_rgb32(digits)
  assert out.shape == (2, 32, 32, 3) and out.dtype == np.uint8
  for c in range(3):
    np.testing.assert_array_equal(out[:, 2:30, 2:30, c], digits)
  border = np.ones((32, 32), bool)
  border[2:30, 2:30] = False
  assert not out[:, border].any()


def _reference_dilation(mask):
  """Binary dilation with a 3x3 all-ones element, written out: OR of the mask shifted by -1..1 in each axis."""
  n, h, w = mask.shape
  out = np.zeros_like(mask)
  for i in range(n):
    for y in range(h):
      for x in range(w):
        out[i, y, x] = mask[i, max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].any()
  return out


def test_dilation_matches_numpy_reference():
  rng = np.random.default_rng(3)
  images = (rng.random((3, 12, 12)) < 0.08) * rng.integers(0, 256, (3, 12, 12))
  out = domains.dilate_digits(images.astype(np.uint8), threshold=128)
  expected = _reference_dilation(images >= 128)
  np.testing.assert_array_equal(out, np.where(expected, 255, 0))
  assert set(np.unique(out)) <= {0, 255}


def test_dilation_of_one_pixel_is_a_3x3_block_and_respects_threshold():
  image = np.zeros((2, 7, 7), np.uint8)
  image[0, 3, 3] = 128
  image[1, 3, 3] = 127  # below the threshold: not ink
  out = domains.dilate_digits(image)
  assert out[0].sum() == 9 * 255 and out[0, 2:5, 2:5].all()
  assert not out[1].any()


def test_mnist_m_formula_pixel_by_pixel():
  digit = np.zeros((1, 3, 3, 3), np.uint8)
  digit[0, 1, :, :] = 255  # a bar of white ink
  digit[0, 0, 0, :] = 100
  patch = np.array(
    [
      [
        [[10, 200, 255], [0, 0, 0], [77, 88, 99]],
        [[10, 200, 255], [0, 128, 250], [255, 255, 255]],
        [[1, 2, 3], [4, 5, 6], [7, 8, 9]],
      ]
    ],
    np.uint8,
  )
  out = domains.blend_abs_diff(digit, patch)
  for i in range(3):
    for j in range(3):
      for k in range(3):
        assert out[0, i, j, k] == abs(int(digit[0, i, j, k]) - int(patch[0, i, j, k]))
  assert out[0, 1, 0].tolist() == [245, 55, 0] and out[0, 0, 0].tolist() == [90, 100, 155]
  assert domains.blend_max(digit, patch)[0, 0, 0].tolist() == [100, 200, 255]


def _row_photo(height=120, width=80):
  """A photo whose pixel value is its row index, so a patch tells where it came from."""
  rows = np.broadcast_to(np.arange(height, dtype=np.uint8)[:, None, None], (height, width, 3))
  return photos.PhotoSet((np.ascontiguousarray(rows),), ("rows",), "bundled")


def test_train_and_test_patches_come_from_disjoint_regions():
  photo_set = _row_photo()
  rng = np.random.default_rng(0)
  train = photos.sample_patches(photo_set, "train", 200, rng)
  test = photos.sample_patches(photo_set, "test", 200, rng)
  assert train.shape == (200, 32, 32, 3)
  assert train.max() < 84 <= test.min()  # round(0.7 * 120) = 84
  assert train.min() == 0 and test.max() == 119  # the whole region is reachable
  # each patch is a contiguous crop: row values increase by one down the patch
  np.testing.assert_array_equal(np.diff(test[:, :, 0, 0].astype(int), axis=1), 1)


def test_bundled_photos_are_colour_and_described():
  photo_set = photos.bundled_photos()
  assert len(photo_set.photos) == len(photos.SKIMAGE_PHOTOS) + len(photos.SKLEARN_PHOTOS)
  assert all(p.ndim == 3 and p.shape[2] == 3 and p.dtype == np.uint8 for p in photo_set.photos)
  assert "astronaut" in photo_set.describe() and "BSDS500" in photo_set.describe()


def test_backgrounds_folder_is_used_for_mnist_m(fake_mnist, tmp_path):
  from PIL import Image

  folder = tmp_path / "BSDS500" / "images" / "train"
  folder.mkdir(parents=True)
  Image.fromarray(np.full((120, 90, 3), 40, np.uint8)).save(folder / "1.jpg", quality=100)
  idx_dir, arrays = fake_mnist
  domain = domains.load_domain("mnist-m", "train", idx_dir=idx_dir, backgrounds=tmp_path / "BSDS500")
  assert "MNIST-M:" in domain.provenance and "BSDS500 photos" in domain.provenance
  assert "-like" not in domain.provenance
  with pytest.raises(FileNotFoundError, match="does not exist"):
    domains.load_domain("mnist-m", "test", idx_dir=idx_dir, backgrounds=tmp_path / "nowhere")


def test_mnist_variants_from_fake_mnist(fake_mnist):
  idx_dir, arrays = fake_mnist
  mnist = domains.load_domain("mnist", "test", idx_dir=idx_dir)
  assert mnist.images.shape == (20, 32, 32, 3) and mnist.labels.dtype == np.int32
  np.testing.assert_array_equal(mnist.labels, arrays["test_labels"])
  dilated = domains.load_domain("mnist-dilated", "test", idx_dir=idx_dir)
  np.testing.assert_array_equal(
    dilated.images[..., 0], np.pad(domains.dilate_digits(arrays["test_images"]), ((0, 0), (2, 2), (2, 2)))
  )
  for name in ("mnist-m", "mnist-max-bg"):
    domain = domains.load_domain(name, "train", idx_dir=idx_dir)
    assert domain.images.shape == (40, 32, 32, 3) and domain.images.dtype == np.uint8
    assert "-like" in domain.provenance and "astronaut" in domain.provenance
    assert domain.images.std(axis=(1, 2)).mean() > 0  # colour photo patches, not blank


def test_photo_domains_are_deterministic_and_seeded(fake_mnist, offline_data_dir):
  idx_dir, _ = fake_mnist
  first = domains.load_domain("mnist-m", "train", idx_dir=idx_dir, seed=0)
  for path in (offline_data_dir / "domains").iterdir():
    path.unlink()  # rebuild from scratch, not from the cache
  second = domains.load_domain("mnist-m", "train", idx_dir=idx_dir, seed=0)
  assert first.images.tobytes() == second.images.tobytes()
  other = domains.load_domain("mnist-m", "train", idx_dir=idx_dir, seed=1)
  assert other.images.tobytes() != first.images.tobytes()
  np.testing.assert_array_equal(other.labels, first.labels)


def test_a_build_says_what_it_does_and_a_cached_load_is_silent(fake_mnist, offline_data_dir, capsys):
  idx_dir, _ = fake_mnist
  domains.load_domain("mnist-dilated", "test", idx_dir=idx_dir)  # MNIST cached, not a built domain
  capsys.readouterr()
  domains.load_domain("mnist-m", "test", idx_dir=idx_dir)
  err = capsys.readouterr().err.splitlines()
  assert err[0] == "dann-jax: building mnist-m test (first use; it is cached afterwards) ..."
  assert err[1].startswith("dann-jax: built mnist-m test: 20 images in ") and "cached at" in err[1]
  domains.load_domain("mnist-m", "test", idx_dir=idx_dir)
  assert capsys.readouterr().err == ""


def test_corrupt_domain_cache_is_rebuilt(fake_mnist, offline_data_dir, capsys):
  idx_dir, _ = fake_mnist
  first = domains.load_domain("mnist-max-bg", "test", idx_dir=idx_dir)
  (path,) = (offline_data_dir / "domains").iterdir()
  path.write_bytes(path.read_bytes()[:100])  # truncated, as by a full disk
  again = domains.load_domain("mnist-max-bg", "test", idx_dir=idx_dir)
  assert "corrupt" in capsys.readouterr().err
  assert again.images.tobytes() == first.images.tobytes()


def test_interrupted_build_leaves_no_cache(fake_mnist, offline_data_dir, monkeypatch):
  idx_dir, _ = fake_mnist
  domains.load_domain("mnist", "train", idx_dir=idx_dir)  # the MNIST cache itself is complete

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(photos, "sample_patches", interrupted)
  with pytest.raises(KeyboardInterrupt):
    domains.load_domain("mnist-m", "train", idx_dir=idx_dir)
  assert not (offline_data_dir / "domains").exists() or not list((offline_data_dir / "domains").iterdir())


def test_compose_number_label_is_the_centre_digit():
  rng = np.random.default_rng(0)
  lengths = set()
  for _ in range(200):
    text, centre = render.compose_number(rng)
    assert 1 <= len(text) <= 3 and 0 <= centre < len(text) and text.isdigit()
    lengths.add(len(text))
  assert lengths == {1, 2, 3}


def test_syn_digits_shapes_labels_and_determinism(offline_data_dir):
  domain = domains.load_domain("syn-digits", "train", size=600, workers=1)
  assert domain.images.shape == (600, 32, 32, 3) and domain.images.dtype == np.uint8
  counts = np.bincount(domain.labels, minlength=10)
  assert len(counts) == 10 and counts.min() >= 35 and counts.max() <= 90  # uniform labels, 60 expected
  assert domain.images.std() > 30  # varied colours, not blank
  assert "DejaVuSans" in domain.provenance
  images, labels = render.render_digits(600, seed=0, split="train", workers=1)
  assert images.tobytes() == domain.images.tobytes()  # the cache holds exactly the rendering
  np.testing.assert_array_equal(labels, domain.labels)


def test_syn_digits_bytes_do_not_depend_on_worker_count():
  fonts = render.find_fonts()[:2]
  serial = render.render_digits(30, seed=5, split="test", fonts=fonts, workers=1, chunk_size=10)
  parallel = render.render_digits(30, seed=5, split="test", fonts=fonts, workers=2, chunk_size=10)
  assert serial[0].tobytes() == parallel[0].tobytes()
  other = render.render_digits(30, seed=6, split="test", fonts=fonts, workers=1, chunk_size=10)
  assert other[0].tobytes() != serial[0].tobytes()


_UNGUARDED = """
import numpy as np
from dann_jax.data import render
fonts = render.find_fonts()[:2]
images, labels = render.render_digits(20, seed=5, split="test", fonts=fonts, workers=2, chunk_size=10)
np.save(OUT, images)
"""


@pytest.mark.parametrize("how", ["script", "stdin"])
def test_parallel_rendering_works_from_an_unguarded_caller(tmp_path, how):
  """No `if __name__ == "__main__":` guard in the caller: the pool must not re-run the caller's main module."""
  import subprocess
  import sys

  out = tmp_path / "images.npy"
  code = f"OUT = {str(out)!r}\n" + _UNGUARDED
  if how == "script":
    script = tmp_path / "unguarded.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
  else:
    done = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  assert "rendering in this process" not in done.stderr  # the helper's pool did the work, no fallback
  expected = render.render_digits(20, seed=5, split="test", fonts=render.find_fonts()[:2], workers=1, chunk_size=10)
  assert np.load(out).tobytes() == expected[0].tobytes()


def test_font_allowlist_excludes_math_fonts():
  fonts = render.find_fonts()
  assert any(f.endswith("DejaVuSans.ttf") for f in fonts)
  assert not any("Math" in f for f in fonts)


def test_optdigits_split_and_range():
  train = domains.load_domain("optdigits", "train")
  test = domains.load_domain("optdigits", "test")
  assert (len(train), len(test)) == (1348, 449)
  assert train.images.shape[1:] == (32, 32, 3) and train.images.max() == 255 and train.images.min() == 0
  assert set(np.unique(test.labels)) == set(range(10))


def test_unknown_domain_lists_the_known_ones():
  with pytest.raises(ValueError) as info:
    domains.load_domain("mnistm", "train")
  for name in domains.KNOWN_DOMAINS:
    assert name in str(info.value)


def test_bad_split_and_option_are_named():
  with pytest.raises(ValueError, match="split='val'"):
    domains.load_domain("optdigits", "val")
  with pytest.raises(ValueError, match="background"):
    domains.load_domain("optdigits", "train", background="x")


def test_cli_fetch_and_show(fake_mnist, tmp_path, capsys):
  idx_dir, _ = fake_mnist
  assert cli.main(["data", "fetch", "mnist", "--idx-dir", str(idx_dir), "--no-mirror", "--verify"]) == 0
  out = capsys.readouterr().out
  assert "checksums of the cached copy: OK" in out and "train-images-idx3-ubyte: md5" in out
  grid = tmp_path / "grid.png"
  assert (
    cli.main(["data", "show", "mnist-m", "--idx-dir", str(idx_dir), "--out", str(grid), "--n", "9", "--split", "test"])
    == 0
  )
  out = capsys.readouterr().out
  assert "MNIST-M-like" in out and "astronaut" in out
  from PIL import Image

  with Image.open(grid) as image:
    assert image.size == (3 * 96, 3 * (96 + 14))
  assert cli.main(["data", "show", "nope", "--out", str(grid)]) == 2
  assert "known domains" in capsys.readouterr().err


def test_mnist_cache_feeds_every_mnist_domain(fake_mnist, monkeypatch):
  idx_dir, _ = fake_mnist
  domains.load_domain("mnist", "train", idx_dir=idx_dir)
  monkeypatch.setattr(sources, "read_mnist_idx_dir", lambda d: pytest.fail("MNIST read twice"))
  assert len(domains.load_domain("mnist-dilated", "train")) == 40
