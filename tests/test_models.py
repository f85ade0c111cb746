"""The paper's architectures and the DANN module that joins any three modules."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dann_jax.core.models import DANN, MLP, count_params, mnist_dann, svhn_dann


def _init(model, shape=(2, 32, 32, 3)):
  return model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, jnp.zeros(shape), 0.0, train=False)


def test_mnist_parameter_counts_match_paper_architecture():
  params = _init(mnist_dann())["params"]
  assert set(params) == {"features", "label_predictor", "domain_classifier"}
  counts = {k: count_params(v) for k, v in params.items()}
  assert counts == {"features": 40_880, "label_predictor": 131_210, "domain_classifier": 120_201}


@pytest.mark.slow
def test_svhn_architecture_shapes():
  params = _init(svhn_dann())["params"]
  # conv 5x5x3x64, 5x5x64x64, 5x5x64x128; 8x8x128 features after SAME pools.
  f = params["features"]
  assert [f[f"Conv_{i}"]["kernel"].shape for i in range(3)] == [(5, 5, 3, 64), (5, 5, 64, 64), (5, 5, 64, 128)]
  lp = params["label_predictor"]
  assert lp["Dense_0"]["kernel"].shape == (8 * 8 * 128, 3072)
  assert lp["Dense_1"]["kernel"].shape == (3072, 2048)
  assert lp["out"]["kernel"].shape == (2048, 10)
  dc = params["domain_classifier"]
  assert dc["Dense_0"]["kernel"].shape == (8 * 8 * 128, 1024)
  assert dc["out"]["kernel"].shape == (1024, 1)


def test_output_shapes_and_jit():
  model = mnist_dann()
  variables = _init(model)
  x = jax.random.normal(jax.random.key(2), (5, 32, 32, 3))
  c, d = jax.jit(lambda v, x, lam: model.apply(v, x, lam, train=True))(variables, x, 0.3)
  assert c.shape == (5, 10) and d.shape == (5,)
  # λ only acts backwards: forward outputs do not depend on it.
  c2, d2 = model.apply(variables, x, 0.9, train=False)
  np.testing.assert_allclose(c, c2, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(d, d2, rtol=1e-5, atol=1e-5)


def test_svhn_dropout_only_in_training():
  model = svhn_dann()
  variables = _init(model)
  x = jax.random.normal(jax.random.key(3), (2, 32, 32, 3))
  eval_a = model.apply(variables, x, 1.0, train=False)[0]
  eval_b = model.apply(variables, x, 1.0, train=False)[0]
  np.testing.assert_array_equal(eval_a, eval_b)
  train_a = model.apply(variables, x, 1.0, train=True, rngs={"dropout": jax.random.key(4)})[0]
  assert not np.allclose(train_a, eval_a)


def test_joins_arbitrary_modules():
  model = DANN(features=nn.Dense(8), label_predictor=nn.Dense(3), domain_classifier=MLP(hidden=(4,), outputs=1))
  x = jnp.ones((6, 5))
  variables = model.init(jax.random.key(0), x, 0.5, train=False)
  c, d = model.apply(variables, x, 0.5, train=True)
  assert c.shape == (6, 3) and d.shape == (6,)
  f = model.apply(variables, x, method="embed")
  assert f.shape == (6, 8)


def test_domain_classifier_with_several_outputs_is_rejected():
  model = DANN(features=nn.Dense(8), label_predictor=nn.Dense(3), domain_classifier=nn.Dense(2))
  with pytest.raises(ValueError, match="one logit per sample"):
    model.init(jax.random.key(0), jnp.ones((4, 5)), 0.5, train=False)


def test_images_must_be_nhwc():
  with pytest.raises(ValueError, match="NHWC"):
    _init(mnist_dann(), shape=(32, 32, 3))


def test_last_hidden_layer_is_sown():
  model = mnist_dann()
  variables = _init(model)
  x = jnp.ones((3, 32, 32, 3))
  _, state = model.apply(variables, x, method="classify", mutable=["intermediates"])
  (hidden,) = state["intermediates"]["label_predictor"]["hidden"]
  assert hidden.shape == (3, 100)


@pytest.mark.parametrize("shape", [(2, 28, 28, 1), (2, 32, 32, 1), (2, 28, 28, 3)])
def test_paper_nets_name_the_input_shape_they_expect(shape):
  for make in (mnist_dann, svhn_dann):
    model = make()
    variables = _init(model)
    with pytest.raises(ValueError, match=r"NHWC images of shape \(batch, 32, 32, 3\); got \(2, "):
      model.apply(variables, jnp.zeros(shape), 0.0, train=False)
    with pytest.raises(ValueError, match="mnist_to_rgb32"):
      model.apply(variables, jnp.zeros(shape), method="classify")
