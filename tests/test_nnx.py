"""The NNX front door: the Linen networks bridged, Linen converters, steps equal to Linen's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import assert_trees_close, image_batch, linen_state

from dann_jax.backend import xla_cpu
from dann_jax.core import methods, models, train
from dann_jax.core import nnx as dann_nnx
from dann_jax.core.config import TrainConfig
from dann_jax.core.objective import saddle_point_loss


def nnx_twin(linen_params, factory=dann_nnx.mnist_dann):
  """An NNX network holding `linen_params`."""
  return dann_nnx.from_linen(factory(rngs=nnx.Rngs(0)), linen_params)


def test_mnist_parameter_counts_match_paper_architecture():
  params = dann_nnx.to_linen(dann_nnx.mnist_dann(rngs=nnx.Rngs(0)))
  counts = {k: models.count_params(v) for k, v in params.items()}
  assert counts == {"features": 40_880, "label_predictor": 131_210, "domain_classifier": 120_201}
  assert models.count_params(nnx.state(dann_nnx.mnist_dann(rngs=nnx.Rngs(0)), nnx.Param)) == sum(counts.values())


@pytest.mark.parametrize("name", ["mnist_dann", "svhn_dann"])
def test_parameter_names_and_shapes_equal_linen(name):
  # Shapes only: no weights are materialised for the 40M-parameter SVHN net.
  nnx_shapes = jax.tree.map(
    jnp.shape, dann_nnx.to_linen(nnx.eval_shape(lambda: getattr(dann_nnx, name)(rngs=nnx.Rngs(0))))
  )
  linen_shapes = jax.tree.map(
    jnp.shape,
    jax.eval_shape(
      lambda: getattr(models, name)().init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), 0.0, train=False)["params"]
    ),
  )
  assert nnx_shapes == linen_shapes


def test_linen_to_nnx_to_linen_is_exact():
  batch = image_batch(jax.random.key(0))
  params = linen_state(TrainConfig(), batch).params
  back = dann_nnx.to_linen(nnx_twin(params))
  assert jax.tree.structure(back) == jax.tree.structure(params)
  jax.tree.map(np.testing.assert_array_equal, back, params)


def test_forward_equals_linen_stock_and_tuned_layers():
  batch = image_batch(jax.random.key(1), n=4)
  params = linen_state(TrainConfig(), batch).params
  expected = models.mnist_dann().apply({"params": params}, batch["image"], 0.5, train=True)
  stock = nnx_twin(params)
  tuned = nnx_twin(params, xla_cpu.tuned(dann_nnx.mnist_dann))
  assert tuned.to_nnx__module.features.max_pool is xla_cpu.max_pool
  assert tuned.to_nnx__module.features.conv_general_dilated is xla_cpu.conv_general_dilated
  for model in (stock, tuned):
    out = nnx.jit(lambda m, x: m(x, 0.5, train=True))(model, batch["image"])
    assert out[0].shape == (4, 10) and out[1].shape == (4,)
    assert_trees_close(out, expected)


@pytest.mark.slow
@pytest.mark.parametrize(
  "config",
  [
    TrainConfig(total_steps=4, learning_rate=0.05),
    TrainConfig(total_steps=4, max_norm=0.5, weight_decay=1e-3),
    TrainConfig(method="source_only", total_steps=4, optimizer="adam", learning_rate=1e-3),
  ],
  ids=["dann", "max_norm+decay", "source_only+adam"],
)
def test_k_steps_equal_linen_steps(config):
  batch = image_batch(jax.random.key(2))
  lstate = linen_state(config, batch)
  state = dann_nnx.create_train_state(nnx_twin(lstate.params), config)
  linen_step, nnx_step = jax.jit(train.train_step), nnx.jit(dann_nnx.train_step)
  for _ in range(3):
    lstate, linen_metrics = linen_step(lstate, batch)
    returned, metrics = nnx_step(state, batch)
    assert returned is state
    assert set(metrics) == set(linen_metrics)
    assert_trees_close(metrics, linen_metrics)
  assert int(state.step) == int(lstate.step) == 3
  params = dann_nnx.to_linen(state.model)
  for part in dann_nnx.PARTS:
    assert_trees_close(params[part], lstate.params[part])


@pytest.mark.slow
def test_one_step_follows_updates_4_to_6():
  """θ_y, θ_d descend L_y, L_d; θ_f descends L_y and ascends λ L_d."""
  # Plain rate 1 and a first step (zero momentum): the update is -gradient.
  config = TrainConfig(total_steps=10, learning_rate=1.0, anneal_learning_rate=False)
  batch = image_batch(jax.random.key(3))
  model = dann_nnx.mnist_dann(rngs=nnx.Rngs(4))
  theta0 = dann_nnx.to_linen(model)
  state = dann_nnx.create_train_state(model, config)
  state.optimizer.step[...] = 5  # past p = 0, so that λ > 0
  _, metrics = nnx.jit(dann_nnx.train_step)(state, batch)
  lam = float(metrics["lambda"])
  assert lam > 0.9
  update = jax.tree.map(lambda a, b: a - b, dann_nnx.to_linen(state.model), theta0)

  # The losses module by module, with no GRL anywhere, at the old weights
  # (the parts of the one Linen definition the NNX network bridges).
  linen = model.to_nnx__module
  zeros_d, zeros_c = jnp.zeros(8), jnp.zeros((8, 10))
  features = lambda p: linen.features.apply({"params": p}, batch["image"])

  def label_loss(features_params, label_params):
    c = linen.label_predictor.apply({"params": label_params}, features(features_params))
    return methods.batch_loss(methods.SOURCE_ONLY, c, zeros_d, batch)[0]

  def domain_loss(features_params, domain_params):
    d = linen.domain_classifier.apply({"params": domain_params}, features(features_params))[:, 0]
    return saddle_point_loss(zeros_c, d, batch)[1]["domain_loss"]

  dly_f, dly_y = jax.grad(label_loss, argnums=(0, 1))(theta0["features"], theta0["label_predictor"])
  dld_f, dld_d = jax.grad(domain_loss, argnums=(0, 1))(theta0["features"], theta0["domain_classifier"])
  close = lambda a, b: jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-4, atol=1e-6), a, b)
  neg = lambda tree: jax.tree.map(lambda g: -g, tree)
  close(update["label_predictor"], neg(dly_y))
  close(update["domain_classifier"], neg(dld_d))
  close(update["features"], jax.tree.map(lambda a, b: -(a - lam * b), dly_f, dld_f))
  # The reversal matters: the feature update is not minus the plain sum.
  assert not np.allclose(
    update["features"]["Conv_0"]["kernel"], -(dly_f["Conv_0"]["kernel"] + dld_f["Conv_0"]["kernel"]), rtol=1e-3
  )


@pytest.mark.slow
def test_same_seed_same_numbers_with_dropout():
  # The SVHN net's layers and dropout on 8x8 images (2x2x128 features): the
  # same randomness as at 32x32, a tenth of the weights.
  config = TrainConfig(total_steps=3, seed=7)
  batch = jax.tree.map(lambda x: x[3:5], image_batch(jax.random.key(5)))
  batch["image"] = batch["image"][:, :8, :8]
  build = lambda: dann_nnx.svhn_dann(rngs=nnx.Rngs(config.seed), input_shape=(8, 8, 3))
  model = build()
  jax.tree.map(np.testing.assert_array_equal, dann_nnx.to_linen(model), dann_nnx.to_linen(build()))
  model.eval()  # the step trains with dropout whatever the model's mode
  start = dann_nnx.create_train_state(model, config)
  rerun, other_key = nnx.clone(start), nnx.clone(start)
  # The bridged network holds no RNG streams (reseeding finds none): masks
  # depend on the run key and the step only.
  nnx.reseed(rerun.model, dropout=123)
  other_key.key.set_value(jax.random.key(8))
  step = nnx.jit(dann_nnx.train_step)
  runs = []
  for state in (start, rerun, other_key):
    losses = [float(step(state, batch)[1]["loss"]) for _ in range(2)]
    runs.append((losses, dann_nnx.to_linen(state.model)))
  (losses_a, params_a), (losses_b, params_b), (losses_c, _) = runs
  assert losses_a == losses_b
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
  # Another run key, the same weights: other dropout masks.
  assert losses_a[0] != losses_c[0]


def test_bridged_network_initialises_as_linen_from_a_key():
  batch = image_batch(jax.random.key(0))
  init_key, _ = jax.random.split(jax.random.key(TrainConfig().seed))
  expected = linen_state(TrainConfig(), batch).params
  jax.tree.map(np.testing.assert_array_equal, dann_nnx.to_linen(dann_nnx.mnist_dann(rngs=init_key)), expected)


@pytest.mark.slow
def test_dropout_steps_equal_linen_steps():
  """The step hands Linen's dropout the Linen step's key: the SVHN net (8x8
  images, as above) takes the Linen steps, masks included."""
  config = TrainConfig(total_steps=3, seed=7)
  batch = jax.tree.map(lambda x: x[3:5], image_batch(jax.random.key(5)))
  batch["image"] = batch["image"][:, :8, :8]
  lstate = linen_state(config, batch, lambda: models.svhn_dann().clone(input_shape=(8, 8, 3)))
  model = dann_nnx.svhn_dann(rngs=nnx.Rngs(0), input_shape=(8, 8, 3))
  state = dann_nnx.create_train_state(dann_nnx.from_linen(model, lstate.params), config)
  linen_step, nnx_step = jax.jit(train.train_step), nnx.jit(dann_nnx.train_step)
  for _ in range(2):
    lstate, linen_metrics = linen_step(lstate, batch)
    _, metrics = nnx_step(state, batch)
    assert_trees_close(metrics, linen_metrics)
  assert_trees_close(dann_nnx.to_linen(state.model), lstate.params)
  # Dropout is on: evaluation-mode logits differ from the training ones.
  x = batch["image"]
  assert not np.allclose(state.model(x, 0.0, train=True, rngs=jax.random.key(1))[0], state.model.classify(x))


@pytest.mark.slow
def test_data_parallel_step_equals_one_device_step():
  """Two members of a mapped axis, each with half the batch, take the
  one-device step (the NNX counterpart of the Linen pmap path)."""
  config = TrainConfig(total_steps=4)
  batch = image_batch(jax.random.key(6))
  whole = dann_nnx.create_train_state(dann_nnx.mnist_dann(rngs=nnx.Rngs(1)), config)
  graphdef, start = nnx.split(nnx.clone(whole))
  nnx.jit(dann_nnx.train_step)(whole, batch)

  def member(state, half):
    state = nnx.merge(graphdef, state)
    _, metrics = dann_nnx.train_step(state, half, axis_name="devices")
    return nnx.state(state), metrics

  # Rows 0-1 and 4-5 on one member, 2-3 and 6-7 on the other.
  halves = jax.tree.map(lambda x: x.reshape(2, 2, 2, *x.shape[1:]).swapaxes(0, 1).reshape(2, 4, *x.shape[1:]), batch)
  new, metrics = jax.jit(jax.vmap(member, in_axes=(None, 0), axis_name="devices"))(start, halves)
  first = nnx.merge(graphdef, jax.tree.map(lambda x: x[0], new))
  assert_trees_close(dann_nnx.to_linen(first.model), dann_nnx.to_linen(whole.model))


def test_eval_step_counts_like_linen():
  batch = image_batch(jax.random.key(7))
  lstate = linen_state(TrainConfig(), batch)
  state = dann_nnx.create_train_state(nnx_twin(lstate.params), TrainConfig())
  labels = jnp.argmax(models.mnist_dann().apply({"params": lstate.params}, batch["image"], method="classify"), -1)
  labels = labels.at[:3].add(1) % 10  # three wrong
  mask = jnp.arange(8) != 7  # leaves out a correct row
  assert int(dann_nnx.jit_eval_step(state, batch["image"], labels)) == 5
  assert int(dann_nnx.jit_eval_step(state, batch["image"], labels, mask)) == 4
  assert int(train.eval_step(lstate, batch["image"], labels, mask)) == 4


def test_wrong_input_shape_is_named():
  model = dann_nnx.mnist_dann(rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"\(batch, 32, 32, 3\).*\(2, 28, 28, 1\)"):
    model(jnp.zeros((2, 28, 28, 1)), 0.0, train=False)
  with pytest.raises(ValueError, match="NHWC"):
    model(jnp.zeros((32, 32, 3)), 0.0, train=False)


def test_converter_rejects_other_networks_params():
  params = dann_nnx.to_linen(dann_nnx.mnist_dann(rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r"\['out'\]\['kernel'\].*num_classes"):
    dann_nnx.from_linen(dann_nnx.mnist_dann(5, rngs=nnx.Rngs(0)), params)
  with pytest.raises(ValueError, match="'params' collection"):
    dann_nnx.from_linen(dann_nnx.mnist_dann(rngs=nnx.Rngs(0)), {"params": params})


def _key_data(tree):
  """`tree` with its PRNG keys as their raw bits (for array comparisons)."""
  return jax.tree.map(lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, tree)


def test_linen_state_round_trip_is_exact_after_steps():
  config = TrainConfig(total_steps=4, optimizer="adam", learning_rate=1e-3, weight_decay=1e-3)
  batch = image_batch(jax.random.key(8))
  lstate = linen_state(config, batch)
  state = dann_nnx.from_linen_state(dann_nnx.create_train_state(dann_nnx.mnist_dann(rngs=nnx.Rngs(3)), config), lstate)
  for _ in range(2):
    lstate, _ = jax.jit(train.train_step)(lstate, batch)
    dann_nnx.jit_train_step(state, batch)
  as_linen = dann_nnx.to_linen_state(state, lstate)
  assert as_linen.step.dtype == lstate.step.dtype and int(as_linen.step) == 2
  # Optimizer moments and counts in the Linen layout, as Linen's own step.
  assert_trees_close(as_linen.opt_state, lstate.opt_state)
  assert_trees_close(as_linen.params, lstate.params)
  # Back into a fresh NNX state, bit for bit.
  again = dann_nnx.from_linen_state(
    dann_nnx.create_train_state(dann_nnx.mnist_dann(rngs=nnx.Rngs(4)), config), as_linen
  )
  jax.tree.map(np.testing.assert_array_equal, _key_data(dann_nnx.to_linen_state(again, lstate)), _key_data(as_linen))


def test_linen_state_of_another_optimizer_is_refused():
  batch = image_batch(jax.random.key(9))
  adam = TrainConfig(total_steps=4, optimizer="adam")
  state = dann_nnx.create_train_state(dann_nnx.mnist_dann(rngs=nnx.Rngs(0)), TrainConfig(total_steps=4))
  with pytest.raises(ValueError, match="same TrainConfig"):
    dann_nnx.from_linen_state(state, linen_state(adam, batch))
  with pytest.raises(ValueError, match="same TrainConfig"):
    dann_nnx.to_linen_state(state, linen_state(adam, batch))


@pytest.mark.slow
def test_fit_trains_nnx_states_like_linen_ones():
  from dann_jax.data.batching import make_domain_pair
  from dann_jax.training.loop import fit, jit_nnx_train_on_pair

  rng = np.random.default_rng(0)
  pair = make_domain_pair(
    (rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 24).astype(np.int32)),
    (rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 16).astype(np.int32)),
  )
  config = TrainConfig(total_steps=3, batch_size=8, learning_rate=0.05)
  start = linen_state(config, image_batch(jax.random.key(0)), xla_cpu.tuned(models.mnist_dann))
  make = lambda: dann_nnx.from_linen_state(
    dann_nnx.create_train_state(xla_cpu.tuned(dann_nnx.mnist_dann)(rngs=nnx.Rngs(0)), config), start
  )
  state, scanned = make(), make()
  seen = []
  returned = fit(
    state, pair, num_steps=3, batch_size=8, num_classes=10, chunk=2, callback=lambda s, m: seen.append(int(s.step))
  )
  assert returned is state and seen == [2, 3]  # trained in place
  graphdef, arrays = nnx.split(scanned)
  arrays, metrics = jit_nnx_train_on_pair(graphdef, arrays, pair, 3, 8)
  nnx.update(scanned, arrays)
  assert metrics["loss"].shape == (3,)
  linen = fit(start, pair, num_steps=3, batch_size=8, num_classes=10, chunk=2)
  for nnx_state in (state, scanned):
    assert_trees_close(dann_nnx.to_linen(nnx_state.model), linen.params)
