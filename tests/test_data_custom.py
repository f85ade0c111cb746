"""Tests of dann_jax.data.custom: class folders, flat folders, .npz files, specs, seeded splits, label-set checks."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from dann_jax.data import custom
from dann_jax.data.domains import Domain


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
  """Nothing here may read or write the user's cache."""
  monkeypatch.setenv("DANN_JAX_DATA", str(tmp_path / "dann_jax_data"))
  return tmp_path / "dann_jax_data"


def _save(path, array, mode=None):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.asarray(array), mode).save(path) if mode else Image.fromarray(np.asarray(array)).save(path)
  return path


def _rgb(seed, h=32, w=32):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _triangle_matrix(n_in, n_out):
  """Pillow's BILINEAR resampling as a matrix: a triangle filter widened by the shrink factor, renormalised."""
  scale = n_in / n_out
  width = max(scale, 1.0)
  centres = (np.arange(n_out) + 0.5) * scale
  weights = np.clip(1 - np.abs((np.arange(n_in) + 0.5)[None, :] - centres[:, None]) / width, 0, None)
  return weights / weights.sum(axis=1, keepdims=True)


def _bilinear_reference(grey):
  """(H, W) -> (32, 32) float, the numpy reference of Pillow's bilinear resize."""
  h, w = grey.shape
  return _triangle_matrix(h, 32) @ grey.astype(np.float64) @ _triangle_matrix(w, 32).T


# ---------------------------------------------------------------------------------------------------------------
# Pixels.


def test_resize_matches_numpy_bilinear_reference_down_and_up(tmp_path):
  rng = np.random.default_rng(0)
  for h, w in ((64, 48), (16, 16), (100, 32)):
    grey = rng.integers(0, 256, (h, w), dtype=np.uint8)
    out = custom.read_image(_save(tmp_path / f"g{h}x{w}.png", grey))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    np.testing.assert_allclose(out[..., 0], _bilinear_reference(grey), atol=1)


def test_exact_2x_upsample_values():
  grey = np.array([[0, 100], [200, 40]], np.uint8)
  grey = np.kron(grey, np.ones((8, 8), np.uint8))  # 16x16 of four flat blocks
  out = custom.to_rgb32(grey[None])[0, ..., 0]
  assert out[0, 0] == 0 and out[0, 31] == 100 and out[31, 0] == 200 and out[31, 31] == 40
  # Inside a block, far from its edges, the value is the block's; across the middle, 3/4 and 1/4 blends.
  assert out[5, 5] == 0 and out[5, 26] == 100
  assert out[5, 15] == 25 and out[5, 16] == 75  # 0.75 * 0 + 0.25 * 100, and the reverse


def test_image_already_32x32_is_unchanged(tmp_path):
  image = _rgb(1)
  np.testing.assert_array_equal(custom.read_image(_save(tmp_path / "a.png", image)), image)
  np.testing.assert_array_equal(custom.to_rgb32(image[None]), image[None])


def test_grey_rgba_palette_1bit_and_16bit_conversions(tmp_path):
  grey = np.random.default_rng(2).integers(0, 256, (32, 32), dtype=np.uint8)
  np.testing.assert_array_equal(custom.read_image(_save(tmp_path / "l.png", grey)), np.stack([grey] * 3, -1))
  rgba = np.random.default_rng(3).integers(0, 256, (32, 32, 4), dtype=np.uint8)
  np.testing.assert_array_equal(custom.read_image(_save(tmp_path / "rgba.png", rgba)), rgba[..., :3])
  palette = Image.fromarray(_rgb(4)).quantize(16)
  palette.save(tmp_path / "p.png")
  np.testing.assert_array_equal(custom.read_image(tmp_path / "p.png"), np.asarray(palette.convert("RGB")))
  bits = Image.fromarray(grey > 127).convert("1")
  bits.save(tmp_path / "b.png")
  np.testing.assert_array_equal(custom.read_image(tmp_path / "b.png"), np.stack([(grey > 127) * 255] * 3, -1))
  deep = np.random.default_rng(5).integers(0, 65536, (32, 32)).astype(np.uint16)
  Image.fromarray(deep).save(tmp_path / "d.png")
  np.testing.assert_array_equal(custom.read_image(tmp_path / "d.png")[..., 1], np.rint(deep / 257).astype(np.uint8))


def test_corrupt_and_truncated_images_name_the_file(tmp_path):
  (tmp_path / "bad.png").write_bytes(b"this is not a png")
  with pytest.raises(ValueError, match="bad.png.*damaged or not an image"):
    custom.read_image(tmp_path / "bad.png")
  data = (_save(tmp_path / "whole.png", _rgb(6, 64, 64))).read_bytes()
  (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
  with pytest.raises(ValueError, match="cut.png"):
    custom.read_image(tmp_path / "cut.png")


def test_to_rgb32_rejects_other_dtypes_and_shapes():
  with pytest.raises(ValueError, match="dtype float32.*uint8"):
    custom.to_rgb32(np.zeros((2, 32, 32, 3), np.float32))
  with pytest.raises(ValueError, match="C = 1"):
    custom.to_rgb32(np.zeros((2, 32, 32, 2), np.uint8))


# ---------------------------------------------------------------------------------------------------------------
# Folders.


def _class_tree(root):
  """cat: 2 RGB images of other sizes + 1 grey in a nested folder; dog: 1 RGBA; plus files to be ignored."""
  cat_a, cat_b, dog = (
    _rgb(10, 40, 60),
    _rgb(11, 32, 32),
    np.random.default_rng(12).integers(0, 256, (20, 20, 4), dtype=np.uint8),
  )
  grey = np.full((64, 64), 77, np.uint8)
  _save(root / "cat" / "a.png", cat_a)
  _save(root / "cat" / "b.bmp", cat_b)
  _save(root / "cat" / "more" / "c.png", grey)
  _save(root / "dog" / "x.png", dog)
  (root / "cat" / "notes.txt").write_text("not an image")
  _save(root / ".hidden" / "h.png", cat_b)
  _save(root / "dog" / ".thumb.png", cat_b)
  (root / "empty").mkdir()
  return cat_a, cat_b, grey, dog


def test_class_folder_layout_sorted_classes_labels_and_pixels(tmp_path):
  cat_a, cat_b, grey, dog = _class_tree(tmp_path / "data")
  domain = custom.load_custom(f"folder:{tmp_path / 'data'}", "train")
  assert isinstance(domain, Domain) and isinstance(domain, custom.CustomDomain)
  assert domain.class_names == ("cat", "dog") and domain.num_classes == 2
  assert domain.images.shape == (4, 32, 32, 3) and domain.images.dtype == np.uint8
  np.testing.assert_array_equal(domain.labels, [0, 0, 0, 1])
  assert domain.labels.dtype == np.int32
  # Sorted by path inside a class: a.png, b.bmp, more/c.png.
  np.testing.assert_array_equal(domain.images[1], cat_b)
  np.testing.assert_array_equal(domain.images[2], np.full((32, 32, 3), 77, np.uint8))
  expected_a = np.asarray(Image.fromarray(cat_a).resize((32, 32), Image.Resampling.BILINEAR))
  np.testing.assert_array_equal(domain.images[0], expected_a)
  expected_dog = np.asarray(Image.fromarray(dog[..., :3]).resize((32, 32), Image.Resampling.BILINEAR))
  np.testing.assert_array_equal(domain.images[3], expected_dog)
  assert domain.name == f"folder:{tmp_path / 'data'}"
  assert "2 classes: cat, dog" in domain.provenance and "bilinear" in domain.provenance


def test_reading_twice_gives_identical_bytes(tmp_path):
  _class_tree(tmp_path / "data")
  first = custom.load_folder(tmp_path / "data")
  second = custom.load_folder(tmp_path / "data")
  assert first.images.tobytes() == second.images.tobytes()


def test_flat_folder_is_unlabelled(tmp_path):
  for i in range(3):
    _save(tmp_path / "flat" / f"{i}.png", _rgb(i, 50, 50))
  domain = custom.load_custom(f"folder:{tmp_path / 'flat'}")
  np.testing.assert_array_equal(domain.labels, [custom.UNLABELLED] * 3)
  assert domain.class_names == () and domain.num_classes == 0
  assert not custom.is_labelled(domain) and "unlabelled" in domain.provenance


def test_empty_folder_and_folder_without_images(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no image below"):
    custom.load_custom(f"folder:{tmp_path / 'empty'}")
  (tmp_path / "texts" / "a").mkdir(parents=True)
  (tmp_path / "texts" / "a" / "x.txt").write_text("x")
  with pytest.raises(FileNotFoundError, match="no image below"):
    custom.read_folder(tmp_path / "texts")


def test_loose_images_beside_class_folders_are_refused(tmp_path):
  _save(tmp_path / "d" / "cat" / "a.png", _rgb(0))
  _save(tmp_path / "d" / "stray.png", _rgb(1))
  with pytest.raises(ValueError, match="both class subfolders.*stray.png"):
    custom.read_folder(tmp_path / "d")


def test_corrupt_image_in_a_class_folder_names_it(tmp_path):
  _save(tmp_path / "d" / "cat" / "a.png", _rgb(0))
  (tmp_path / "d" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
  with pytest.raises(ValueError, match="broken.jpg"):
    custom.load_custom(f"folder:{tmp_path / 'd'}")


def test_train_test_parent_labels_test_by_train_classes(tmp_path):
  for split, classes in (("train", ("a", "b", "c")), ("test", ("a", "c"))):
    for k, name in enumerate(classes):
      _save(tmp_path / "p" / split / name / f"{k}.png", _rgb(k))
  spec = f"folder:{tmp_path / 'p'}"
  train, test = custom.load_custom(spec, "train"), custom.load_custom(spec, "test")
  assert train.class_names == test.class_names == ("a", "b", "c")
  np.testing.assert_array_equal(train.labels, [0, 1, 2])
  np.testing.assert_array_equal(test.labels, [0, 2])  # "c" keeps index 2 although test has no "b"
  assert custom.load_custom_splits(spec)[1].labels.tolist() == [0, 2]


def test_test_split_with_a_class_the_train_split_lacks(tmp_path):
  _save(tmp_path / "p" / "train" / "a" / "0.png", _rgb(0))
  _save(tmp_path / "p" / "test" / "zebra" / "0.png", _rgb(1))
  with pytest.raises(ValueError, match=r"\['zebra'\].*not among the classes \['a'\]"):
    custom.load_custom(f"folder:{tmp_path / 'p'}", "test")


def test_explicit_classes_order_and_unknown_folder(tmp_path):
  _save(tmp_path / "d" / "b" / "0.png", _rgb(0))
  _save(tmp_path / "d" / "a" / "0.png", _rgb(1))
  domain = custom.load_custom(f"folder:{tmp_path / 'd'}", classes=["b", "a", "z"])
  assert domain.class_names == ("b", "a", "z") and domain.num_classes == 3
  np.testing.assert_array_equal(domain.labels, [0, 1])
  with pytest.raises(ValueError, match=r"\['b'\]"):
    custom.load_custom(f"folder:{tmp_path / 'd'}", classes=["a"])


# ---------------------------------------------------------------------------------------------------------------
# .npz files.


def test_npz_rgb_grey_rgba_and_resize(tmp_path):
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
  np.savez(tmp_path / "rgb.npz", images=rgb, labels=np.array([0, 1, 2, 1, 0]))
  domain = custom.load_custom(f"npz:{tmp_path / 'rgb.npz'}")
  np.testing.assert_array_equal(domain.images, rgb)
  np.testing.assert_array_equal(domain.labels, [0, 1, 2, 1, 0])
  assert domain.class_names == ("0", "1", "2") and domain.num_classes == 3
  grey = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
  np.savez(tmp_path / "grey.npz", images=grey)
  domain = custom.load_npz(tmp_path / "grey.npz")
  for image, out in zip(grey, domain.images):
    reference = np.asarray(Image.fromarray(image).resize((32, 32), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(out, np.stack([reference] * 3, -1))
  assert not custom.is_labelled(domain)
  rgba = rng.integers(0, 256, (2, 32, 32, 4), dtype=np.uint8)
  single = rng.integers(0, 256, (2, 32, 32, 1), dtype=np.uint8)
  np.savez(tmp_path / "rgba.npz", images=rgba, labels=np.array([1, 0]), class_names=np.array(["no", "yes"]))
  np.savez(tmp_path / "one.npz", images=single)
  domain = custom.load_npz(tmp_path / "rgba.npz")
  np.testing.assert_array_equal(domain.images, rgba[..., :3])
  assert domain.class_names == ("no", "yes")
  np.testing.assert_array_equal(custom.load_npz(tmp_path / "one.npz").images, np.repeat(single, 3, -1))


@pytest.mark.parametrize(
  "arrays, message",
  [
    (dict(x=np.zeros((2, 32, 32, 3), np.uint8), y=np.zeros(2, int)), r"keys \['x', 'y'\].*'images'"),
    (dict(images=np.zeros((2, 32, 32, 3), np.uint8), label=np.zeros(2, int)), r"unexpected: \['label'\]"),
    (dict(images=np.zeros((2, 32, 32, 3), np.float32)), "dtype float32.*uint8"),
    (dict(images=np.zeros((0, 32, 32, 3), np.uint8)), "N > 0"),
    (dict(images=np.zeros((2, 32, 32, 3), np.uint8), labels=np.zeros(2, np.float32)), "integers"),
    (dict(images=np.zeros((2, 32, 32, 3), np.uint8), labels=np.zeros(3, int)), r"shape \(3,\), need \(2,\)"),
    (dict(images=np.zeros((2, 32, 32, 3), np.uint8), labels=np.array([0, -2])), "include -2"),
    (
      dict(images=np.zeros((2, 32, 32, 3), np.uint8), labels=np.array([0, 2]), class_names=np.array(["a", "b"])),
      r"reach 2 but there are 2 classes",
    ),
    (dict(images=np.zeros((2, 32, 32, 3), np.uint8), class_names=np.array(["a", "a"])), "distinct strings"),
  ],
)
def test_npz_bad_files(tmp_path, arrays, message):
  np.savez(tmp_path / "bad.npz", **arrays)
  with pytest.raises(ValueError, match=message):
    custom.load_custom(f"npz:{tmp_path / 'bad.npz'}")


def test_npz_not_an_archive(tmp_path):
  (tmp_path / "junk.npz").write_bytes(b"junk")
  with pytest.raises(ValueError, match="cannot read .* as .npz"):
    custom.read_npz(tmp_path / "junk.npz")
  np.save(tmp_path / "array.npy", np.zeros((2, 32, 32, 3), np.uint8))
  (tmp_path / "array.npy").rename(tmp_path / "array.npz")
  with pytest.raises(ValueError, match="single array"):
    custom.read_npz(tmp_path / "array.npz")
  with pytest.raises(FileNotFoundError):
    custom.read_npz(tmp_path / "absent.npz")


def test_npz_parent_with_train_and_test(tmp_path):
  rng = np.random.default_rng(1)
  (tmp_path / "p").mkdir()
  np.savez(
    tmp_path / "p" / "train.npz",
    images=rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8),
    labels=np.array([0, 1, 2, 0, 1, 2]),
  )
  np.savez(
    tmp_path / "p" / "test.npz", images=rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8), labels=np.array([0, 3])
  )
  train, test = custom.load_custom_splits(f"npz:{tmp_path / 'p'}")
  # The classes of both splits together: labels 0..3 in either file.
  assert train.class_names == test.class_names == ("0", "1", "2", "3")
  assert len(train) == 6 and test.labels.tolist() == [0, 3]


# ---------------------------------------------------------------------------------------------------------------
# Specs and splits.


def test_parse_spec_forms_and_errors(tmp_path):
  _save(tmp_path / "p" / "train" / "a" / "0.png", _rgb(0))
  _save(tmp_path / "p" / "test" / "a" / "0.png", _rgb(1))
  spec = custom.parse_spec(f"folder:{tmp_path / 'p'}")
  assert spec.kind == "folder" and spec.train == tmp_path / "p" / "train" and spec.test == tmp_path / "p" / "test"
  assert custom.is_spec("folder:x") and custom.is_spec("npz:y.npz")
  assert not custom.is_spec("mnist") and not custom.is_spec("folder:") and not custom.is_spec("csv:x")
  for bad in ("mnist", "csv:/tmp", "folder:"):
    with pytest.raises(ValueError, match="folder:PATH"):
      custom.parse_spec(bad)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    custom.parse_spec(f"folder:{tmp_path / 'absent'}")
  with pytest.raises(ValueError, match="already has a test split"):
    custom.parse_spec(f"folder:{tmp_path / 'p'}", test_fraction=0.5)
  with pytest.raises(ValueError, match="give one of them"):
    custom.parse_spec(f"folder:{tmp_path / 'p' / 'train'}", test=tmp_path / "p" / "test", test_fraction=0.2)
  for fraction in (0.0, 1.0, 1.5):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
      custom.parse_spec(f"folder:{tmp_path / 'p' / 'train'}", test_fraction=fraction)
  with pytest.raises(ValueError, match="is a npz but the train split is a folder"):
    custom.parse_spec(f"folder:{tmp_path / 'p' / 'train'}", test="npz:x.npz")
  with pytest.raises(FileNotFoundError, match="train.npz"):
    custom.parse_spec(f"npz:{tmp_path / 'p'}")


def test_explicit_test_folder(tmp_path):
  _save(tmp_path / "tr" / "a" / "0.png", _rgb(0))
  _save(tmp_path / "tr" / "b" / "0.png", _rgb(1))
  _save(tmp_path / "te" / "b" / "0.png", _rgb(2))
  test = custom.load_custom(f"folder:{tmp_path / 'tr'}", "test", test=f"folder:{tmp_path / 'te'}")
  np.testing.assert_array_equal(test.labels, [1])
  np.testing.assert_array_equal(test.images[0], _rgb(2))


def test_missing_test_split_says_how_to_get_one(tmp_path):
  _save(tmp_path / "d" / "a" / "0.png", _rgb(0))
  with pytest.raises(ValueError, match="no test split.*test_fraction"):
    custom.load_custom(f"folder:{tmp_path / 'd'}", "test")
  with pytest.raises(ValueError, match="not a split"):
    custom.load_custom(f"folder:{tmp_path / 'd'}", "val")


def test_seeded_fraction_split_is_deterministic_stratified_and_disjoint(tmp_path):
  labels = np.repeat(np.arange(3), [10, 20, 5])
  train, test = custom.split_indices(labels, 0.2, seed=7)
  again = custom.split_indices(labels, 0.2, seed=7)
  np.testing.assert_array_equal(train, again[0])
  np.testing.assert_array_equal(test, again[1])
  assert not np.array_equal(test, custom.split_indices(labels, 0.2, seed=8)[1])
  assert np.bincount(labels[test]).tolist() == [2, 4, 1]  # floor(n * 0.2 + 0.5) per class
  assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(labels)))
  with pytest.raises(ValueError, match="empty test split"):
    custom.split_indices(np.zeros(1, int), 0.2)

  rng = np.random.default_rng(3)
  images = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
  np.savez(tmp_path / "all.npz", images=images, labels=np.arange(20) % 2)
  spec = f"npz:{tmp_path / 'all.npz'}"
  tr = custom.load_custom(spec, "train", test_fraction=0.25, seed=1)
  te = custom.load_custom(spec, "test", test_fraction=0.25, seed=1)
  assert len(tr) == 14 and len(te) == 6 and "test_fraction=0.25, seed=1" in te.provenance
  expected_train, expected_test = custom.split_indices(np.arange(20) % 2, 0.25, seed=1)
  np.testing.assert_array_equal(tr.images, images[expected_train])
  np.testing.assert_array_equal(te.images, images[expected_test])
  both = custom.load_custom_splits(spec, test_fraction=0.25, seed=1)
  np.testing.assert_array_equal(both[0].images, tr.images)
  np.testing.assert_array_equal(both[1].labels, te.labels)


# ---------------------------------------------------------------------------------------------------------------
# Label sets, and the domains in the rest of the library.


def _domain(name, classes, labels):
  return custom.CustomDomain(
    name,
    np.zeros((len(labels), 32, 32, 3), np.uint8),
    np.asarray(labels, np.int32),
    len(classes),
    "test",
    tuple(classes),
  )


def test_check_label_sets():
  source = _domain("s", ("cat", "dog"), [0, 1])
  custom.check_label_sets(source, _domain("t", ("cat", "dog"), [1, 1]))
  custom.check_label_sets(source, _domain("t", (), [-1, -1]))  # an unlabelled target
  with pytest.raises(ValueError, match=r"only in the source: \['dog'\]; only in the target: \['fox'\]"):
    custom.check_label_sets(source, _domain("t", ("cat", "fox"), [0, 1]))
  with pytest.raises(ValueError, match="different orders"):
    custom.check_label_sets(source, _domain("t", ("dog", "cat"), [0, 1]))
  with pytest.raises(ValueError, match="without a label"):
    custom.check_label_sets(_domain("s", (), [-1, -1]), source)
  digits = Domain("mnist", np.zeros((1, 32, 32, 3), np.uint8), np.zeros(1, np.int32), 10, "test")
  custom.check_label_sets(digits, _domain("t", tuple("0123456789"), [3]))
  with pytest.raises(ValueError, match=r"only in the source: \['9'\]"):
    custom.check_label_sets(digits, _domain("t", tuple("012345678"), [3]))


def test_target_lacking_a_class_aligns_with_classes_option(tmp_path):
  for name in ("a", "b", "c"):
    _save(tmp_path / "src" / name / "0.png", _rgb(0))
  for name in ("a", "c"):
    _save(tmp_path / "tgt" / name / "0.png", _rgb(1))
  source = custom.load_custom(f"folder:{tmp_path / 'src'}")
  target = custom.load_custom(f"folder:{tmp_path / 'tgt'}")
  with pytest.raises(ValueError, match=r"only in the source: \['b'\]"):
    custom.check_label_sets(source, target)
  target = custom.load_custom(f"folder:{tmp_path / 'tgt'}", classes=source.class_names)
  custom.check_label_sets(source, target)
  np.testing.assert_array_equal(target.labels, [0, 2])


def test_custom_domains_work_with_batching_and_holdout(tmp_path):
  import jax

  from dann_jax.data import make_domain_pair, sample_batch
  from dann_jax.data.pair_data import split_holdout

  for k in range(8):
    _save(tmp_path / "src" / ("ab"[k % 2]) / f"{k}.png", _rgb(k, 40, 40))
    _save(tmp_path / "tgt" / f"{k}.png", _rgb(100 + k, 24, 24))
  source = custom.load_custom(f"folder:{tmp_path / 'src'}")
  target = custom.load_custom(f"folder:{tmp_path / 'tgt'}")
  custom.check_label_sets(source, target)
  pair = make_domain_pair(source, target)
  batch = jax.jit(sample_batch, static_argnums=3)(pair, jax.random.key(0), 0, 4)
  assert batch["image"].shape == (4, 32, 32, 3)
  assert batch["label_mask"].tolist() == [True, True, False, False]
  rest, held = split_holdout(source, 2)
  assert isinstance(held, custom.CustomDomain) and held.class_names == ("a", "b")
  assert dataclasses.replace(source, name="x").class_names == ("a", "b")


# ---------------------------------------------------------------------------------------------------------------
# Pairs of a user's domains (dann_jax.data.pairs, dann_jax.runner.runs).


def test_absolute_keeps_the_kind(tmp_path, monkeypatch):
  import os

  monkeypatch.chdir(tmp_path)
  assert custom.absolute("folder:data/a") == f"folder:{tmp_path / 'data' / 'a'}"
  assert custom.absolute("npz:~/x.npz") == f"npz:{os.path.expanduser('~/x.npz')}"
  assert custom.absolute("plain/test") == str(tmp_path / "plain" / "test")


def test_get_pair_of_own_data(tmp_path, monkeypatch):
  from dann_jax.data.pairs import PAIRS, get_pair

  monkeypatch.chdir(tmp_path)
  pair = get_pair("folder:a", "mnist", network="svhn")
  assert (pair.source, pair.target, pair.network) == (f"folder:{tmp_path / 'a'}", "mnist", "svhn")
  assert pair.paper is None and pair.note == "your own data; no paper numbers"
  assert get_pair("mnist", "usps") is PAIRS["mnist->usps"]
  with pytest.raises(ValueError, match="unknown domain 'cifar'.*folder:PATH or npz:PATH"):
    get_pair("folder:a", "cifar")
  with pytest.raises(ValueError, match="network='resnet' is not a network"):
    get_pair("folder:a", "mnist", network="resnet")
  with pytest.raises(ValueError, match="unknown pair 'mnist->cifar'.*folder:PATH"):
    get_pair("mnist", "cifar")


def test_pair_data_labels_the_target_by_the_source_classes(tmp_path):
  from dann_jax.data.pair_data import SplitOptions, load_pair_data
  from dann_jax.data.pairs import get_pair

  for c in ("ant", "bee", "cow"):
    for i in range(4):
      _save(tmp_path / "src" / c / f"{i}.png", _rgb(i))
  # The target has two of the three classes, named in another order, and unknown labels.
  images = np.stack([_rgb(10 + i) for i in range(6)])
  np.savez(
    tmp_path / "tgt.npz", images=images, labels=np.array([0, 1, 0, 1, -1, -1]), class_names=np.array(["cow", "ant"])
  )
  pair = get_pair(f"folder:{tmp_path / 'src'}", f"npz:{tmp_path / 'tgt.npz'}")
  data = load_pair_data(pair, splits={"target": SplitOptions(test_fraction=0.5, seed=0)})
  assert data.target_train.class_names == data.source_train.class_names == ("ant", "bee", "cow")
  assert data.target_train.num_classes == 3
  labels = np.concatenate([data.target_train.labels, data.target_test.labels])
  assert sorted(labels.tolist()) == [-1, -1, 0, 0, 2, 2]  # cow -> 2, ant -> 0, unknown stays -1
  assert len(data.source_test) == 12 and "no test split" in data.source_test.provenance
  with pytest.raises(ValueError, match="split options apply to folder:PATH and npz:PATH domains only"):
    load_pair_data(get_pair(f"folder:{tmp_path / 'src'}", "mnist"), splits={"target": {"test_fraction": 0.2}})


def test_pair_data_refuses_other_classes_and_an_unlabelled_source(tmp_path):
  from dann_jax.data.pair_data import load_pair_data
  from dann_jax.data.pairs import get_pair

  for root, classes in (("src", ("ant", "bee")), ("tgt", ("ant", "elk"))):
    for c in classes:
      _save(tmp_path / root / c / "0.png", _rgb(0))
  _save(tmp_path / "flat" / "0.png", _rgb(1))
  with pytest.raises(ValueError, match=r"only in the source: \['bee'\]; only in the target: \['elk'\]"):
    load_pair_data(get_pair(f"folder:{tmp_path / 'src'}", f"folder:{tmp_path / 'tgt'}"))
  with pytest.raises(ValueError, match="a source must be labelled"):
    load_pair_data(get_pair(f"folder:{tmp_path / 'flat'}", f"folder:{tmp_path / 'tgt'}"))
