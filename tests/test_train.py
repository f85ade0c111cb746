"""Train state, steps, optimizer arithmetic, the loop, and a toy domain shift."""

import pickle

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import image_batch, linen_state
from sklearn.datasets import make_moons

from dann_jax.core.config import TrainConfig
from dann_jax.core.models import DANN, MLP, mnist_dann
from dann_jax.core.objective import saddle_point_loss
from dann_jax.core.train import DATA_STREAM, DROPOUT_STREAM, create_train_state, eval_step, step_key, train_step
from dann_jax.data.batching import SOURCE, TARGET
from dann_jax.training.loop import Diverged, check_finite, check_labels, chunk_sizes, jit_train_steps


class TwoLayerFeatures(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.relu(nn.Dense(32)(nn.relu(nn.Dense(32)(x))))


def toy_model(classes=2):
  return DANN(TwoLayerFeatures(), MLP(hidden=(), outputs=classes), MLP(hidden=(32,), outputs=1))


def test_two_steps_match_hand_written_sgd_momentum():
  config = TrainConfig(total_steps=4, learning_rate=0.05)
  model = mnist_dann()
  batch = image_batch(jax.random.key(0))
  state = create_train_state(model, config, batch["image"])
  theta0 = state.params

  def grad_at(params, step):
    lam = 2 / (1 + np.exp(-10 * step / 4)) - 1

    def loss(p):
      c, d = model.apply({"params": p}, batch["image"], lam, train=True)
      return saddle_point_loss(c, d, batch)[0]

    return jax.grad(loss)(params)

  step = jax.jit(train_step)
  s1, m1 = step(state, batch)
  s2, m2 = step(s1, batch)
  mu = lambda k: 0.05 / (1 + 10 * k / 4) ** 0.75
  g0 = grad_at(theta0, 0)
  v1 = g0
  theta1 = jax.tree.map(lambda t, v: t - mu(0) * v, theta0, v1)
  g1 = grad_at(theta1, 1)
  v2 = jax.tree.map(lambda v, g: 0.9 * v + g, v1, g1)
  theta2 = jax.tree.map(lambda t, v: t - mu(1) * v, theta1, v2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), s2.params, theta2)
  assert int(s2.step) == 2
  np.testing.assert_allclose(m2["learning_rate"], mu(1), rtol=1e-6)
  np.testing.assert_allclose(m2["lambda"], 2 / (1 + np.exp(-2.5)) - 1, rtol=1e-6)
  assert float(m1["lambda"]) == 0.0


@pytest.mark.parametrize(
  "method,changed",
  [
    ("dann", {"features", "label_predictor", "domain_classifier"}),
    ("source_only", {"features", "label_predictor"}),
    ("target_only", {"features", "label_predictor"}),
  ],
)
def test_which_parameter_sets_move(method, changed):
  config = TrainConfig(method=method, total_steps=10)
  batch = image_batch(jax.random.key(1))
  state = linen_state(config, batch)
  # Start past p = 0 so that λ > 0 for DANN.
  state = state.replace(step=jnp.asarray(5, jnp.int32))
  new, _ = jax.jit(train_step)(state, batch)
  moved = {
    name
    for name in state.params
    if not all(
      np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params[name]), jax.tree.leaves(new.params[name]))
    )
  }
  assert moved == changed


def test_target_only_uses_target_labels_only():
  config = TrainConfig(method="target_only", total_steps=10)
  batch = image_batch(jax.random.key(2))
  state = linen_state(config, batch)
  _, m_a = jax.jit(train_step)(state, batch)
  # Changing source labels changes nothing; changing target labels does.
  flipped_source = dict(batch, label=batch["label"].at[0].add(1) % 10)
  _, m_b = jax.jit(train_step)(state, flipped_source)
  flipped_target = dict(batch, label=batch["label"].at[7].add(1) % 10)
  _, m_c = jax.jit(train_step)(state, flipped_target)
  assert float(m_a["label_loss"]) == float(m_b["label_loss"])
  assert float(m_a["label_loss"]) != float(m_c["label_loss"])


def _moons(n, seed, angle_deg):
  x, y = make_moons(n, noise=0.1, random_state=seed)
  x = x - x.mean(0)
  a = np.deg2rad(angle_deg)
  rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
  return (x @ rot.T).astype(np.float32), y.astype(np.int32)


def _toy_run(method, steps=1500, seed=0):
  xs, ys = _moons(300, 0, 0)
  xt, yt = _moons(300, 1, 30)  # the target: the moons rotated by 30 degrees
  config = TrainConfig(method=method, total_steps=steps, batch_size=64, learning_rate=0.1, seed=seed)
  state = create_train_state(toy_model(), config, jnp.zeros((2, 2)))
  rng = np.random.default_rng(seed)
  i_s, i_t = rng.integers(0, 300, (2, steps, 32))
  batches = {
    "image": np.concatenate([xs[i_s], xt[i_t]], 1),
    "label": np.concatenate([ys[i_s], yt[i_t]], 1),
    "domain": np.tile(np.repeat([0, 1], 32), (steps, 1)).astype(np.int32),
    "label_mask": np.tile(np.repeat([True, False], 32), (steps, 1)),
  }
  state, metrics = jit_train_steps(state, batches)
  assert metrics["loss"].shape == (steps,)
  return float(eval_step(state, xt, yt)) / len(yt)


@pytest.mark.slow
def test_dann_beats_source_only_on_rotated_moons():
  source_only = _toy_run("source_only")
  dann = _toy_run("dann")
  assert dann > source_only + 0.1, (dann, source_only)
  assert dann > 0.85


def test_no_step_or_dropout_key_is_a_key_the_batches_draw_from():
  run_key = jax.random.key(0)
  data_key = jax.random.fold_in(run_key, DATA_STREAM)
  batch_keys = [data_key, jax.random.fold_in(data_key, SOURCE), jax.random.fold_in(data_key, TARGET)]
  steps = [step_key(run_key, s) for s in range(64)]
  dropout = [jax.random.fold_in(k, DROPOUT_STREAM) for k in steps]
  raw = [tuple(np.asarray(jax.random.key_data(k)).ravel()) for k in batch_keys + steps + dropout]
  assert len(set(raw)) == len(raw)


def test_dropout_draws_from_the_steps_key():
  """Replaying step 2's forward pass of the SVHN net (dropout 0.5) with `fold_in(step_key(key, 2), DROPOUT_STREAM)`
  gives the loss the step reports."""
  from dann_jax.core import methods
  from dann_jax.core.models import svhn_dann

  model = svhn_dann()
  batch = image_batch(jax.random.key(1))
  state = create_train_state(model, TrainConfig(), batch["image"][:1], jax.random.key(3))
  state = state.replace(step=jnp.asarray(2, state.step.dtype))
  _, metrics = jax.jit(train_step)(state, batch)

  def replayed_loss(key):
    logits = model.apply(
      {"params": state.params}, batch["image"], state.adaptation_factor(2), train=True, rngs={"dropout": key}
    )
    return float(methods.batch_loss(state.method, *logits, batch)[0])

  assert float(metrics["loss"]) == pytest.approx(
    replayed_loss(jax.random.fold_in(step_key(state.key, 2), DROPOUT_STREAM)), rel=1e-5
  )
  assert float(metrics["loss"]) != pytest.approx(replayed_loss(jax.random.fold_in(state.key, 3)), rel=1e-3)


def test_same_seed_same_numbers():
  config = TrainConfig(total_steps=3)
  batch = image_batch(jax.random.key(3))
  runs = []
  for _ in range(2):
    state = linen_state(config, batch)
    for _ in range(2):
      state, m = jax.jit(train_step)(state, batch)
    runs.append(state.params)
  jax.tree.map(np.testing.assert_array_equal, *runs)


def test_non_finite_loss_names_the_step():
  metrics = {"loss": np.array([1.0, 0.5, np.nan, np.inf])}
  with pytest.raises(Diverged, match="step 12") as info:
    check_finite(metrics, first_step=10)
  assert info.value.step == 12 and isinstance(info.value, FloatingPointError)
  assert pickle.loads(pickle.dumps(info.value)).step == 12  # crosses process boundaries intact
  check_finite({"loss": np.ones(3)}, first_step=0)


def test_diverging_run_stops_with_step():
  # A huge learning rate on the toy problem overflows within a few steps.
  config = TrainConfig(total_steps=50, batch_size=64, learning_rate=1e12, anneal_learning_rate=False)
  state = create_train_state(toy_model(), config, jnp.zeros((2, 2)))
  xs, ys = _moons(64, 0, 0)
  batches = {
    "image": np.tile(xs * 1e3, (50, 1, 1)),
    "label": np.tile(ys, (50, 1)),
    "domain": np.tile(np.repeat([0, 1], 32), (50, 1)).astype(np.int32),
    "label_mask": np.ones((50, 64), bool),
  }
  _, metrics = jit_train_steps(state, batches)
  with pytest.raises(FloatingPointError, match=r"non-finite at step \d+"):
    check_finite(jax.device_get(metrics), first_step=0)


def test_bad_config_values():
  with pytest.raises(ValueError, match="must be even"):
    TrainConfig(batch_size=127)
  with pytest.raises(ValueError, match="total_steps"):
    TrainConfig(total_steps=0)
  with pytest.raises(ValueError, match="unknown method"):
    TrainConfig(method="coral")
  for field, value, words in (
    ("learning_rate", float("inf"), "finite number > 0"),
    ("learning_rate", float("nan"), "finite number > 0"),
    ("momentum", 1.0, r"in \[0, 1\)"),
    ("adam_b1", -0.1, r"in \[0, 1\)"),
    ("lam_warmup", 1.0, r"in \[0, 1\)"),
    ("weight_decay", -1e-4, "finite number >= 0"),
    ("lam_max", float("nan"), "finite number >= 0"),
    ("gamma", float("inf"), "finite number >= 0"),
  ):
    with pytest.raises(ValueError, match=f"{field}=.* must be .*{words}"):
      TrainConfig(**{field: value})
  TrainConfig(momentum=0.0, lam_max=0.0, weight_decay=0.0)  # the edges that are allowed


def test_labels_outside_range():
  with pytest.raises(ValueError, match=r"\[0, 10\).*num_classes=11"):
    check_labels(np.array([0, 3, 10]), 10, "source")
  with pytest.raises(ValueError, match=r"\[-1, 2\]"):
    check_labels(np.array([-1, 2]), 10, "target")
  check_labels(np.array([0, 9]), 10, "source")


def test_chunks_end_on_multiples():
  assert list(chunk_sizes(0, 250, 100)) == [100, 100, 50]
  assert list(chunk_sizes(130, 300, 100)) == [70, 100]
  assert list(chunk_sizes(300, 300, 100)) == []


def test_max_norm_clips_each_units_incoming_weights():
  config = TrainConfig(total_steps=10, max_norm=0.5, weight_decay=1e-3)
  batch = image_batch(jax.random.key(5))
  state = linen_state(config, batch)
  new, _ = jax.jit(train_step)(state, batch)
  kernels = [w for path, w in jax.tree_util.tree_leaves_with_path(new.params) if path[-1].key == "kernel"]
  assert kernels
  for w in kernels:
    norms = np.sqrt(np.sum(np.asarray(w) ** 2, axis=tuple(range(w.ndim - 1))))
    assert norms.max() <= 0.5 + 1e-5
  # Without the restriction some unit exceeds the bound (the test can fail).
  free, _ = jax.jit(train_step)(linen_state(config.replace(max_norm=None), batch), batch)
  w = free.params["features"]["Conv_1"]["kernel"]
  assert np.sqrt(np.sum(np.asarray(w) ** 2, axis=(0, 1, 2))).max() > 0.5


def test_create_train_state_initialises_as_eager_init_bit_for_bit():
  from dann_jax.core import models

  config = TrainConfig(total_steps=10)
  key = jax.random.key(3)
  sample = jax.random.normal(jax.random.key(4), (8, 32, 32, 3))  # the jitted init runs on one zero row instead
  state = create_train_state(models.mnist_dann(), config, sample, key)
  init_key, _ = jax.random.split(key)
  eager = models.mnist_dann().init({"params": init_key, "dropout": init_key}, sample, 0.0, train=False)
  jax.tree.map(np.testing.assert_array_equal, state.params, eager["params"])


class _ScaledInput(nn.Module):
  """A network with an array attribute: not hashable, so not a static argument of jit."""

  scale: np.ndarray

  @nn.compact
  def __call__(self, x, lam, *, train: bool):
    f = (x * self.scale).reshape(x.shape[0], -1)[:, :8]
    return nn.Dense(10)(f), nn.Dense(1)(f)[:, 0]


def test_an_unhashable_network_is_initialised_eagerly():
  model = _ScaledInput(scale=np.ones((32, 32, 3), np.float32))
  with pytest.raises(TypeError):
    hash(model)
  state = create_train_state(model, TrainConfig(total_steps=10), jnp.zeros((1, 32, 32, 3)), jax.random.key(0))
  init_key, _ = jax.random.split(jax.random.key(0))
  eager = model.init({"params": init_key, "dropout": init_key}, jnp.zeros((1, 32, 32, 3)), 0.0, train=False)
  jax.tree.map(np.testing.assert_array_equal, state.params, eager["params"])
