"""The training loop: resume from a checkpoint, seeds in one program, evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dann_jax.core.config import TrainConfig
from dann_jax.core.models import mnist_dann
from dann_jax.core.train import create_train_state
from dann_jax.data.batching import make_domain_pair, preprocess
from dann_jax.training.checkpoint import latest_step, restore_checkpoint, save_checkpoint
from dann_jax.training.evaluation import accuracy, features
from dann_jax.training.loop import fit, replicate_seeds

BATCH = 16


@pytest.fixture(scope="module")
def pair():
  rng = np.random.default_rng(0)
  source = (rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 40).astype(np.int32))
  target = (rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 24).astype(np.int32))
  return make_domain_pair(source, target)


def _state(seed=0, **overrides):
  config = TrainConfig(total_steps=6, batch_size=BATCH, seed=seed, **overrides)
  return create_train_state(mnist_dann(), config, jnp.zeros((1, 32, 32, 3)))


def _assert_trees_close(a, b, rtol=1e-6):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-7), a, b)


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted(pair, tmp_path):
  straight = fit(_state(), pair, num_steps=6, batch_size=BATCH, num_classes=10, chunk=3)
  half = fit(_state(), pair, num_steps=3, batch_size=BATCH, num_classes=10, chunk=3)
  assert save_checkpoint(tmp_path, half) == 3
  assert latest_step(tmp_path) == 3
  restored = restore_checkpoint(tmp_path, _state())
  assert int(restored.step) == 3
  _assert_trees_close(restored.params, half.params, rtol=0)
  resumed = fit(restored, pair, num_steps=6, batch_size=BATCH, num_classes=10, chunk=3)
  assert int(resumed.step) == 6
  _assert_trees_close(resumed.params, straight.params)
  _assert_trees_close(resumed.opt_state, straight.opt_state)


def test_restore_without_checkpoint(tmp_path):
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    restore_checkpoint(tmp_path / "empty", _state())


@pytest.mark.slow
def test_seeds_in_one_program_equal_separate_runs(pair):
  seeds = [3, 7]
  make = lambda key: create_train_state(
    mnist_dann(), TrainConfig(total_steps=6, batch_size=BATCH), jnp.zeros((1, 32, 32, 3)), key=key
  )
  stacked = fit(replicate_seeds(make, seeds), pair, num_steps=3, batch_size=BATCH, num_classes=10, chunk=3)
  assert stacked.step.shape == (2,)
  for i, seed in enumerate(seeds):
    alone = fit(make(jax.random.key(seed)), pair, num_steps=3, batch_size=BATCH, num_classes=10, chunk=3)
    _assert_trees_close(jax.tree.map(lambda x: x[i], stacked.params), alone.params, rtol=2e-5)
  # Different seeds give different models.
  assert not np.allclose(
    stacked.params["features"]["Conv_0"]["kernel"][0], stacked.params["features"]["Conv_0"]["kernel"][1]
  )
  accs = accuracy(stacked, pair.target_images, pair.target_labels, pair.mean, batch_size=10)
  assert accs.shape == (2,)


def test_no_seeds():
  with pytest.raises(ValueError, match="give at least one seed"):
    replicate_seeds(lambda key: None, [])


@pytest.mark.slow
def test_callback_sees_every_chunk(pair):
  seen = []
  fit(
    _state(),
    pair,
    num_steps=5,
    batch_size=BATCH,
    num_classes=10,
    chunk=2,
    callback=lambda s, m: seen.append((int(s.step), len(m["loss"]))),
  )
  assert seen == [(2, 2), (4, 2), (5, 1)]


def test_a_non_finite_last_update_stops_the_run_before_the_callback(pair):
  from dann_jax.training.loop import Diverged

  def runner(state, pair, num_steps, batch_size):
    # Finite losses, but the chunk's updates leave one weight NaN once past step 2.
    state = state.replace(step=state.step + num_steps)
    if int(state.step) > 2:
      kernel = state.params["label_predictor"]["Dense_0"]["kernel"]
      bad = {**state.params["label_predictor"]["Dense_0"], "kernel": kernel.at[0, 0].set(jnp.nan)}
      params = {**state.params, "label_predictor": {**state.params["label_predictor"], "Dense_0": bad}}
      state = state.replace(params=params)
    return state, {"loss": jnp.ones(num_steps)}

  seen = []
  with pytest.raises(Diverged, match="step 4") as caught:
    fit(
      _state(),
      pair,
      num_steps=6,
      batch_size=BATCH,
      num_classes=10,
      chunk=2,
      runner=runner,
      callback=lambda s, m: seen.append(int(s.step)),
    )
  assert caught.value.step == 4 and seen == [2]


def test_fit_rejects_bad_input(pair):
  with pytest.raises(ValueError, match="must be even"):
    fit(_state(), pair, num_steps=2, batch_size=15, num_classes=10)
  with pytest.raises(ValueError, match="chunk=0 must be a positive integer"):
    fit(_state(), pair, num_steps=2, batch_size=BATCH, num_classes=10, chunk=0)
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
    fit(_state(), pair, num_steps=2, batch_size=BATCH, num_classes=5)


def test_accuracy_and_features_against_direct_apply(pair):
  state = _state()
  images = np.asarray(pair.target_images)
  labels = np.asarray(pair.target_labels)
  x = preprocess(images, pair.mean)
  variables = {"params": state.params}
  logits = mnist_dann().apply(variables, x, method="classify")
  expected = np.mean(np.argmax(logits, -1) == labels)
  # A chunk size that does not divide the 24 images exercises the padding.
  assert accuracy(state, images, labels, pair.mean, batch_size=10) == pytest.approx(expected)
  f = features(state, images, pair.mean, batch_size=10)
  np.testing.assert_allclose(f, mnist_dann().apply(variables, x, method="embed"), rtol=1e-5, atol=1e-6)
  h = features(state, images, pair.mean, layer="hidden", batch_size=7)
  assert h.shape == (24, 100)


@pytest.mark.slow
def test_scan_and_stepwise_runners_agree(pair):
  from dann_jax.training.loop import jit_train_on_pair, train_on_pair_stepwise

  scanned, m_scan = jit_train_on_pair(_state(), pair, 3, BATCH)
  looped, m_loop = train_on_pair_stepwise(_state(), pair, 3, BATCH)
  _assert_trees_close(scanned.params, looped.params, rtol=1e-5)
  np.testing.assert_allclose(m_scan["loss"], m_loop["loss"], rtol=1e-5)
  assert m_loop["loss"].shape == (3,)


@pytest.mark.parametrize("steps", [-5, 2.5])
def test_fit_rejects_a_bad_step_count(steps):
  with pytest.raises(ValueError, match="must be a non-negative integer"):
    fit(None, None, num_steps=steps, batch_size=8, num_classes=10)


@pytest.mark.slow
def test_on_cpu_seeds_take_exactly_the_steps_they_take_alone(pair):
  from dann_jax.training.loop import default_runner, train_on_pair_seed_by_seed

  assert default_runner(seeds_axis=True) is train_on_pair_seed_by_seed  # the suite runs on CPU
  seeds = [3, 7]
  make = lambda key: create_train_state(
    mnist_dann(), TrainConfig(total_steps=6, batch_size=BATCH), jnp.zeros((1, 32, 32, 3)), key=key
  )
  seen = []
  stacked = fit(
    replicate_seeds(make, seeds),
    pair,
    num_steps=4,
    batch_size=BATCH,
    num_classes=10,
    chunk=2,
    callback=lambda s, m: seen.append(m),
  )
  assert stacked.step.tolist() == [4, 4] and seen[0]["loss"].shape == (2, 2)  # (steps, seeds)
  for i, seed in enumerate(seeds):
    alone_seen = []
    alone = fit(
      make(jax.random.key(seed)),
      pair,
      num_steps=4,
      batch_size=BATCH,
      num_classes=10,
      chunk=2,
      callback=lambda s, m: alone_seen.append(m),
    )
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[i], b), stacked.params, alone.params)
    np.testing.assert_array_equal(seen[1]["loss"][:, i], alone_seen[1]["loss"])
    assert jax.random.key_data(stacked.key)[i].tolist() == jax.random.key_data(alone.key).tolist()
