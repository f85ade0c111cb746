"""Tests of dann_jax.data.batching: half/half batches, masks, epoch reshuffling, mean subtraction, jit and scan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dann_jax.data import batching, domains


def _domain(n, offset, name="d"):
  """Image i is filled with the value offset + i, label offset + i: a row tells which sample it is."""
  values = (offset + np.arange(n)).astype(np.uint8)
  images = np.broadcast_to(values[:, None, None, None], (n, 32, 32, 3)).copy()
  return domains.Domain(name, images, (offset + np.arange(n)).astype(np.int32), 10, "test")


SOURCE, TARGET = _domain(10, 0), _domain(12, 100)
sample = jax.jit(batching.sample_batch, static_argnames=("batch_size", "rows"))


def _rows(batch, pair):
  """Recovers the sample index of each row from its pixels (undoing the normalisation)."""
  pixels = (np.asarray(batch["image"][:, 0, 0, 0]) + float(pair.mean[0])) * 255
  return np.rint(pixels).astype(int)


def test_batch_halves_labels_domains_and_masks():
  known = np.zeros(12, bool)
  known[[1, 5, 7]] = True
  pair = batching.make_domain_pair(SOURCE, TARGET, target_label_known=known)
  batch = sample(pair, jax.random.key(0), 3, batch_size=8)
  assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == jnp.float32
  assert batch["label"].dtype == jnp.int32 and batch["domain"].dtype == jnp.int32
  rows = _rows(batch, pair)
  assert all(rows[:4] < 10) and all(rows[4:] >= 100)
  np.testing.assert_array_equal(batch["label"], rows)  # labels travel with their images
  np.testing.assert_array_equal(batch["domain"], [0, 0, 0, 0, 1, 1, 1, 1])
  np.testing.assert_array_equal(batch["label_mask"], np.concatenate([[True] * 4, known[rows[4:] - 100]]))


def test_default_target_labels_are_all_hidden():
  pair = batching.make_domain_pair(SOURCE, TARGET)
  batch = sample(pair, jax.random.key(1), 0, batch_size=6)
  np.testing.assert_array_equal(batch["label_mask"], [True] * 3 + [False] * 3)


def test_each_epoch_visits_every_sample_once_in_a_new_order():
  pair = batching.make_domain_pair(SOURCE, TARGET)
  key = jax.random.key(7)
  source = [_rows(sample(pair, key, s, batch_size=4), pair)[:2] for s in range(15)]  # 5 steps per epoch
  target = [_rows(sample(pair, key, s, batch_size=4), pair)[2:] for s in range(18)]  # 6 steps per epoch
  epochs = [np.concatenate(source[e * 5 : (e + 1) * 5]) for e in range(3)]
  for order in epochs:
    assert sorted(order) == list(range(10))
  assert len({tuple(order) for order in epochs}) == 3  # reshuffled each epoch
  for e in range(3):
    assert sorted(np.concatenate(target[e * 6 : (e + 1) * 6])) == list(range(100, 112))


def test_remainder_of_an_epoch_is_dropped_without_repeats():
  pair = batching.make_domain_pair(_domain(11, 0), TARGET)
  rows = np.concatenate([_rows(sample(pair, jax.random.key(0), s, batch_size=4), pair)[:2] for s in range(5)])
  assert len(set(rows)) == 10  # 5 steps of 2 from 11 samples: no sample twice


@pytest.mark.parametrize("n", [1, 2, 3, 5, 16, 17, 64, 65, 1000, 4097])
def test_shuffled_index_is_a_bijection(n):
  index = jax.jit(batching.shuffled_index, static_argnums=2)(jax.random.key(n), jnp.arange(n), n)
  assert sorted(np.asarray(index).tolist()) == list(range(n))


def test_shuffled_index_depends_on_key():
  a = batching.shuffled_index(jax.random.key(0), jnp.arange(100), 100)
  b = batching.shuffled_index(jax.random.key(1), jnp.arange(100), 100)
  assert not np.array_equal(a, b)
  assert not np.array_equal(a, np.arange(100))


def test_mean_and_normalisation_match_numpy():
  rng = np.random.default_rng(0)
  source = (rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8), np.arange(6))
  target = (rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), np.arange(4))
  pair = batching.make_domain_pair(source, target)
  expected_mean = np.concatenate([source[0], target[0]]).reshape(-1, 3).astype(np.float64).mean(0) / 255
  np.testing.assert_allclose(pair.mean, expected_mean, rtol=1e-6)
  assert pair.mean.dtype == jnp.float32 and pair.mean.shape == (3,)
  batch = sample(pair, jax.random.key(0), 0, batch_size=4)
  source_index = np.asarray(batching.epoch_indices(jax.random.fold_in(jax.random.key(0), 0), 0, 6, 2))
  np.testing.assert_allclose(batch["image"][:2], source[0][source_index] / 255.0 - expected_mean, atol=1e-6)
  np.testing.assert_allclose(batching.preprocess(target[0], pair.mean), target[0] / 255.0 - expected_mean, atol=1e-6)


def test_scan_over_steps_matches_step_by_step():
  pair = batching.make_domain_pair(SOURCE, TARGET)
  key = jax.random.key(3)

  @jax.jit
  def labels_over_steps(pair):
    def body(carry, step):
      return carry, batching.sample_batch(pair, key, step, 4)["label"]

    return jax.lax.scan(body, 0, jnp.arange(7))[1]

  scanned = labels_over_steps(pair)
  for s in range(7):
    np.testing.assert_array_equal(scanned[s], sample(pair, key, s, batch_size=4)["label"])


def test_pair_is_a_pytree_of_device_arrays():
  pair = batching.make_domain_pair(SOURCE, TARGET)
  leaves = jax.tree_util.tree_leaves(pair)
  assert len(leaves) == 5 and all(isinstance(leaf, jax.Array) for leaf in leaves)
  assert pair.source_images.dtype == jnp.uint8 and pair.target_label_known is None  # unsupervised: seen statically
  assert batching.make_domain_pair(SOURCE, TARGET, target_label_known=np.zeros(12, bool)).target_label_known is None
  known = np.arange(12) == 4
  semi = batching.make_domain_pair(SOURCE, TARGET, target_label_known=known)
  assert len(jax.tree_util.tree_leaves(semi)) == 6 and semi.target_label_known.dtype == jnp.bool_


@pytest.mark.parametrize("known", [None, np.arange(12) % 3 == 0])
def test_one_half_of_a_batch_is_the_same_rows_as_in_the_whole_batch(known):
  pair = batching.make_domain_pair(SOURCE, TARGET, target_label_known=known)
  key = jax.random.key(3)
  for step in (0, 4, 9):
    whole = sample(pair, key, step, batch_size=6)
    halves = {rows: sample(pair, key, step, batch_size=6, rows=rows) for rows in ("source", "target")}
    for rows, part in (("source", slice(0, 3)), ("target", slice(3, 6))):
      for name in whole:
        np.testing.assert_array_equal(halves[rows][name], whole[name][part], err_msg=f"{rows} {name}")
  with pytest.raises(ValueError, match="rows='half' must be"):
    batching.sample_batch(pair, key, 0, 6, rows="half")


def test_odd_batch_size_is_rejected():
  pair = batching.make_domain_pair(SOURCE, TARGET)
  with pytest.raises(ValueError, match="batch_size=7 must be even and positive: half source, half target"):
    batching.sample_batch(pair, jax.random.key(0), 0, 7)


def test_half_batch_larger_than_a_domain_is_rejected():
  pair = batching.make_domain_pair(SOURCE, TARGET)
  with pytest.raises(ValueError, match="source has 10"):
    batching.sample_batch(pair, jax.random.key(0), 0, 22)


def test_mismatched_shapes_and_empty_target_are_rejected():
  small = (np.zeros((3, 28, 28, 3), np.uint8), np.zeros(3, np.int32))
  with pytest.raises(ValueError, match="differ in shape"):
    batching.make_domain_pair(SOURCE, small)
  empty = (np.zeros((0, 32, 32, 3), np.uint8), np.zeros(0, np.int32))
  with pytest.raises(ValueError, match="target images have shape"):
    batching.make_domain_pair(SOURCE, empty)
  with pytest.raises(ValueError, match="target_label_known"):
    batching.make_domain_pair(SOURCE, TARGET, target_label_known=np.ones(3, bool))


def test_eval_batches_cover_everything_in_order():
  chunks = list(batching.eval_batches(TARGET, 5))
  assert [len(labels) for _, labels in chunks] == [5, 5, 2]
  np.testing.assert_array_equal(np.concatenate([labels for _, labels in chunks]), TARGET.labels)
  assert all(images.dtype == np.uint8 for images, _ in chunks)
  images, labels = next(batching.eval_batches((TARGET.images, TARGET.labels), 100))
  assert len(labels) == 12


def test_float_images_are_converted_as_documented():
  unit = np.linspace(0, 1, 12 * 32 * 32 * 3).reshape(12, 32, 32, 3).astype(np.float32)
  pair = batching.make_domain_pair((unit[:10], np.arange(10) % 10), (unit[10:], np.zeros(2, int)))
  np.testing.assert_array_equal(np.asarray(pair.source_images), np.rint(unit[:10] * 255).astype(np.uint8))
  wide = (unit * 255).astype(np.float64)
  np.testing.assert_array_equal(batching.as_uint8_images(wide), np.rint(wide).astype(np.uint8))
  np.testing.assert_array_equal(batching.as_uint8_images(wide.astype(np.int32)), wide.astype(np.uint8))


@pytest.mark.parametrize(
  "bad, error, match",
  [
    (np.nan, ValueError, "source images hold 1 NaN or infinite pixels"),
    (np.inf, ValueError, "NaN or infinite"),
    (300.0, ValueError, r"floats in \[0.5, 300\]; give uint8 images"),
    (-1.0, ValueError, r"floats in \[-1, 0.5\]"),
  ],
)
def test_unusable_float_pixels_are_refused(bad, error, match):
  images = np.full((4, 32, 32, 3), 0.5, np.float32)
  images[1, 2, 3, 0] = bad
  with pytest.raises(error, match=match):
    batching.make_domain_pair((images, np.zeros(4, int)), TARGET)


def test_bad_labels_and_pixel_types_are_refused():
  with pytest.raises(ValueError, match=r"values in \[-3, 70\]"):
    batching.as_uint8_images(np.array([[[[-3, 70]]]]))
  with pytest.raises(TypeError, match="dtype bool"):
    batching.as_uint8_images(np.zeros((1, 2, 2, 3), bool))
  with pytest.raises(ValueError, match="source labels hold -1"):
    batching.make_domain_pair((SOURCE.images, SOURCE.labels - 1), TARGET)
  with pytest.raises(TypeError, match="not whole numbers"):
    batching.make_domain_pair((SOURCE.images, SOURCE.labels + 0.5), TARGET)
  # an unlabelled target may mark its labels unknown with -1
  pair = batching.make_domain_pair(SOURCE, (TARGET.images, np.full(12, -1)))
  assert int(pair.target_labels.min()) == -1
