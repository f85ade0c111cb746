"""The fast layers compute the plain layers' function: outputs and gradients."""

import flax.linen as nn
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from dann_jax.backend import xla_cpu

_TOL = dict(rtol=1e-5, atol=1e-5)


def _plain_pool(x, window, stride, padding):
  return nn.max_pool(x, (window, window), strides=(stride, stride), padding=padding)


def _value_and_grad(f, x, cotangent):
  y, vjp = jax.vjp(f, x)
  return y, vjp(cotangent)[0]


@pytest.mark.parametrize(
  "shape, window, stride, padding",
  [
    ((4, 28, 28, 8), 2, 2, "VALID"),  # MNIST net, first pool
    ((4, 10, 10, 8), 2, 2, "VALID"),  # MNIST net, second pool
    ((4, 7, 9, 3), 2, 2, "VALID"),  # odd sizes: the remainder is dropped
    ((4, 32, 32, 8), 3, 2, "SAME"),  # SVHN net, overlapping windows
    ((4, 15, 13, 3), 3, 2, "SAME"),  # odd sizes with -inf padding
    ((4, 11, 8, 3), 3, 2, "VALID"),
    ((4, 9, 9, 3), 3, 3, "SAME"),
    ((4, 10, 11, 3), 3, 3, "SAME"),  # window == stride, padded
    ((4, 11, 8, 3), 3, 3, "VALID"),  # window == stride, remainder dropped
    ((4, 6, 6, 3), 3, 1, "SAME"),
  ],
)
def test_max_pool_matches_flax_values_and_gradients(shape, window, stride, padding):
  # Continuous random inputs have no ties, so the gradients must agree exactly
  # (each window's gradient goes to its unique maximum).
  x = jax.random.normal(jax.random.key(0), shape)
  plain = lambda x: _plain_pool(x, window, stride, padding)
  fast = lambda x: xla_cpu.max_pool(x, window, stride, padding)
  expected_y = plain(x)
  cotangent = jax.random.normal(jax.random.key(1), expected_y.shape)
  y, g = jax.jit(lambda x: _value_and_grad(fast, x, cotangent))(x)
  expected_y, expected_g = _value_and_grad(plain, x, cotangent)
  assert y.shape == expected_y.shape
  np.testing.assert_allclose(y, expected_y, **_TOL)
  np.testing.assert_allclose(g, expected_g, **_TOL)


@pytest.mark.parametrize("window, stride, padding", [(2, 2, "VALID"), (3, 2, "SAME"), (3, 3, "SAME"), (3, 1, "VALID")])
def test_max_pool_gradient_at_ties_is_select_and_scatters(window, stride, padding):
  # Small integers make ties everywhere: equal pairs, whole windows of one
  # value, ties across overlapping windows. `nn.max_pool`'s gradient sends
  # each window's cotangent to its first maximum (row-major); so must ours:
  # the same entries get gradient, and the same amounts (exactly for tiling
  # windows; overlapping ones may add a shared entry's terms in another
  # order).
  x = jax.random.randint(jax.random.key(4), (2, 9, 10, 3), 0, 3).astype(jnp.float32)
  x = x.at[0, :4, :4, 0].set(1.0)  # windows that are entirely one value
  plain = lambda x: _plain_pool(x, window, stride, padding)
  fast = lambda x: xla_cpu.max_pool(x, window, stride, padding)
  cotangent = jax.random.normal(jax.random.key(5), plain(x).shape)
  y, g = _value_and_grad(fast, x, cotangent)
  expected_y, expected_g = _value_and_grad(plain, x, cotangent)
  np.testing.assert_array_equal(y, expected_y)
  np.testing.assert_array_equal(g != 0, expected_g != 0)
  if window == stride:
    np.testing.assert_array_equal(g, expected_g)
  np.testing.assert_allclose(g, expected_g, rtol=1e-6, atol=1e-6)


def test_max_pool_ties_hand_worked():
  # One 2x2 window [[3, 3], [1, -2]]: the first 3 gets the cotangent.
  x = jnp.array([[3.0, 3.0], [1.0, -2.0]])[None, :, :, None]
  _, g = _value_and_grad(lambda x: xla_cpu.max_pool(x, 2, 2), x, jnp.full((1, 1, 1, 1), 7.0))
  np.testing.assert_array_equal(g[0, :, :, 0], [[7.0, 0.0], [0.0, 0.0]])


@pytest.mark.parametrize("window, stride, padding", [(2, 2, "VALID"), (3, 2, "SAME")])
def test_max_pool_propagates_nan_like_reduce_window(window, stride, padding):
  x = jax.random.normal(jax.random.key(6), (1, 8, 8, 2))
  x = x.at[0, 3, 5, 1].set(jnp.nan)
  y = xla_cpu.max_pool(x, window, stride, padding)
  expected = _plain_pool(x, window, stride, padding)
  np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
  assert np.isnan(y).any()
  np.testing.assert_array_equal(y, expected)  # equal_nan by default


@pytest.mark.parametrize("window, stride, padding", [(2, 2, "VALID"), (3, 2, "SAME")])
def test_max_pool_forward_mode_matches_flax(window, stride, padding):
  x = jax.random.normal(jax.random.key(7), (2, 10, 10, 3))
  tangent = jax.random.normal(jax.random.key(8), x.shape)
  y, dy = jax.jvp(lambda x: xla_cpu.max_pool(x, window, stride, padding), (x,), (tangent,))
  expected_y, expected_dy = jax.jvp(lambda x: _plain_pool(x, window, stride, padding), (x,), (tangent,))
  np.testing.assert_array_equal(y, expected_y)
  np.testing.assert_allclose(dy, expected_dy, **_TOL)


@pytest.mark.parametrize("window, stride, padding", [(2, 2, "VALID"), (3, 2, "SAME")])
def test_max_pool_forward_mode_is_the_adjoint_of_reverse_mode_at_ties(window, stride, padding):
  # At ties JAX's own forward mode of `reduce_window` max (a packed reduction
  # in unspecified order) need not pick the entry its reverse mode picks;
  # ours picks the first maximum in both, so <vjp(c), t> == <c, jvp(t)>.
  x = jnp.round(jax.random.normal(jax.random.key(7), (2, 10, 10, 3)))
  pool = lambda x: xla_cpu.max_pool(x, window, stride, padding)
  tangent = jax.random.normal(jax.random.key(8), x.shape)
  y, dy = jax.jvp(pool, (x,), (tangent,))
  cotangent = jax.random.normal(jax.random.key(9), y.shape)
  grad = jax.vjp(pool, x)[1](cotangent)[0]
  np.testing.assert_allclose(jnp.sum(grad * tangent), jnp.sum(cotangent * dy), rtol=1e-5)


def test_max_pool_after_relu_gradient_matches_at_zero_ties():
  # Windows that are entirely negative before the ReLU tie at 0 after it; the
  # ReLU's zero derivative there makes both formulations give zero.
  x = jax.random.normal(jax.random.key(2), (2, 12, 12, 4)) - 1.0
  cotangent = jax.random.normal(jax.random.key(3), (2, 6, 6, 4))
  fast = lambda x: xla_cpu.max_pool(nn.relu(x), 2, 2)
  plain = lambda x: _plain_pool(nn.relu(x), 2, 2, "VALID")
  assert np.any(np.asarray(plain(x)) == 0)  # the tie case does occur
  _, g = _value_and_grad(fast, x, cotangent)
  _, expected = _value_and_grad(plain, x, cotangent)
  np.testing.assert_allclose(g, expected, **_TOL)


def test_max_pool_off_cpu_is_reduce_window(monkeypatch):
  x = jax.random.normal(jax.random.key(9), (2, 9, 9, 3))
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  jaxpr = jax.make_jaxpr(lambda x: xla_cpu.max_pool(x, 3, 2, "SAME"))(x)
  assert [e.primitive.name for e in jaxpr.jaxpr.eqns] == ["reduce_window_max"]
  np.testing.assert_array_equal(xla_cpu.max_pool(x, 3, 2, "SAME"), _plain_pool(x, 3, 2, "SAME"))
  with pytest.raises(ValueError, match="larger than"):
    xla_cpu.max_pool(jnp.zeros((1, 2, 2, 1)), 3, 1)


def test_max_pool_rejects_bad_arguments():
  with pytest.raises(ValueError, match="padding"):
    xla_cpu.max_pool(jnp.zeros((1, 4, 4, 1)), 2, 2, padding="FULL")
  with pytest.raises(ValueError, match="NHWC"):
    xla_cpu.max_pool(jnp.zeros((4, 4, 1)), 2, 2)
  with pytest.raises(ValueError, match="larger than"):
    xla_cpu.max_pool(jnp.zeros((1, 2, 2, 1)), 3, 1)


def _plain_conv(x, k, padding, strides=(1, 1)):
  return lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _fast_conv(x, k, padding, strides=(1, 1)):
  return xla_cpu.conv_general_dilated(x, k, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize(
  "x_shape, k_shape, padding, strides",
  [
    ((3, 32, 32, 3), (5, 5, 3, 8), "VALID", (1, 1)),  # MNIST net, layer 1
    ((3, 14, 14, 8), (5, 5, 8, 6), "VALID", (1, 1)),  # MNIST net, layer 2
    ((3, 16, 16, 3), (5, 5, 3, 8), "SAME", (1, 1)),  # SVHN net
    ((3, 9, 7, 2), (3, 2, 2, 4), "SAME", (1, 1)),  # odd sizes, odd kernel
    ((3, 9, 7, 2), (3, 3, 2, 4), ((1, 0), (2, 1)), (1, 1)),  # explicit pads
    ((3, 9, 7, 2), (3, 3, 2, 4), "SAME", (2, 1)),  # strided: plain fallback
  ],
)
def test_conv_matches_lax_values_and_gradients(x_shape, k_shape, padding, strides):
  x = jax.random.normal(jax.random.key(0), x_shape)
  k = jax.random.normal(jax.random.key(1), k_shape)
  expected, plain_vjp = jax.vjp(lambda x, k: _plain_conv(x, k, padding, strides), x, k)
  cotangent = jax.random.normal(jax.random.key(2), expected.shape)

  @jax.jit
  def fast(x, k):
    y, vjp = jax.vjp(lambda x, k: _fast_conv(x, k, padding, strides), x, k)
    return y, vjp(cotangent)

  y, (gx, gk) = fast(x, k)
  ex, ek = plain_vjp(cotangent)
  assert y.shape == expected.shape
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(gx, ex, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(gk, ek, rtol=1e-4, atol=2e-4)


def test_conv_module_keeps_flax_parameters_and_outputs():
  x = jax.random.normal(jax.random.key(0), (2, 12, 12, 3))
  plain = nn.Conv(5, (3, 3), padding="VALID")
  fast = nn.Conv(5, (3, 3), padding="VALID", conv_general_dilated=xla_cpu.conv_general_dilated)
  variables = plain.init(jax.random.key(1), x)
  assert jax.tree.structure(fast.init(jax.random.key(1), x)) == (jax.tree.structure(variables))
  np.testing.assert_allclose(fast.apply(variables, x), plain.apply(variables, x), rtol=1e-5, atol=1e-5)


def _conv_eqns(fun, *args):
  """The convolutions in `fun`'s jaxpr, nested ones too."""
  eqns = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "conv_general_dilated":
        eqns.append(eqn)
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        walk(sub)

  walk(jax.make_jaxpr(fun)(*args).jaxpr)
  return eqns


def _conv_shapes(fun, *args):
  """Output shapes of the convolutions in `fun`'s jaxpr, nested ones too."""
  return [eqn.outvars[0].aval.shape for eqn in _conv_eqns(fun, *args)]


def test_plain_convolutions_context_emits_the_plain_convolution():
  x = jnp.zeros((2, 14, 14, 4))
  k = jnp.zeros((5, 5, 4, 6))
  # A new function per trace: JAX caches traces by function, not by context.
  shapes = lambda: _conv_shapes(lambda x, k: _fast_conv(x, k, "VALID"), x, k)
  # Outside the context it computes one row taller than the input (CPU).
  assert shapes() == [(2, 15, 10, 6)]
  with xla_cpu.plain_convolutions():
    with xla_cpu.plain_convolutions():
      pass
    assert shapes() == [(2, 10, 10, 6)]  # nesting kept it on
  assert shapes() == [(2, 15, 10, 6)]  # the exit restored it
  with pytest.raises(RuntimeError):
    with xla_cpu.plain_convolutions():
      raise RuntimeError
  assert shapes() == [(2, 15, 10, 6)]


def _traced_plain(fun):
  """`fun` traced as `cpu_jit` traces on CPU: under `plain_convolutions()`."""

  def traced(*args):
    with xla_cpu.plain_convolutions():
      return fun(*args)

  return traced


@pytest.mark.parametrize(
  "x_shape, k_shape",
  [
    ((3, 14, 14, 8), (5, 5, 8, 6)),  # MNIST net, layer 2
    ((2, 9, 12, 3), (3, 4, 3, 5)),  # non-square kernel and image
  ],
)
def test_eigen_formulation_gradients_match_the_plain_convolution(x_shape, k_shape):
  # Inside cpu_jit the input gradient is computed row-stacked (a convolution
  # padded in width only, then shifted adds over rows): same function, same
  # gradients to float32 rounding, in reverse and forward mode.
  x = jax.random.normal(jax.random.key(0), x_shape)
  k = jax.random.normal(jax.random.key(1), k_shape)
  fast = _traced_plain(lambda x, k: _fast_conv(x, k, "VALID"))
  plain = lambda x, k: _plain_conv(x, k, "VALID")
  y, vjp = jax.vjp(jax.jit(fast), x, k)
  expected_y, expected_vjp = jax.vjp(plain, x, k)
  cotangent = jax.random.normal(jax.random.key(2), y.shape)
  np.testing.assert_allclose(y, expected_y, **_TOL)
  for got, want in zip(vjp(cotangent), expected_vjp(cotangent)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  tangents = (jax.random.normal(jax.random.key(3), x.shape), jax.random.normal(jax.random.key(4), k.shape))
  _, dy = jax.jvp(fast, (x, k), tangents)
  _, expected_dy = jax.jvp(plain, (x, k), tangents)
  np.testing.assert_allclose(dy, expected_dy, rtol=1e-4, atol=1e-4)


def test_eigen_formulation_input_gradient_pads_width_only():
  x = jnp.zeros((2, 14, 14, 4))
  k = jnp.zeros((5, 5, 4, 6))
  fast = _traced_plain(lambda x, k: _fast_conv(x, k, "VALID"))
  # The input gradient: one convolution to (2, 10, 14, 5 * 4), not the plain
  # transpose's (2, 14, 14, 4) from an input padded by 4 on both axes.
  grad_x = lambda x, k: jax.grad(lambda x: fast(x, k).sum())(x)
  assert _conv_shapes(grad_x, x, k) == [(2, 10, 10, 6), (2, 10, 14, 20)]
  # A kernel-only gradient (the first layer's case) runs no input gradient.
  grad_k = lambda x, k: jax.grad(lambda k: fast(x, k).sum())(k)
  assert _conv_shapes(grad_k, x, k) == [(2, 10, 10, 6), (5, 5, 4, 6)]


def test_eigen_formulation_stacks_rows_of_few_channel_inputs():
  # A 3-channel input (the first layer) is convolved as 5 stacked rows of 3
  # channels with a 1 x 5 kernel; a 32-channel one as is.
  def lhs_shapes(x, k):
    fast = _traced_plain(lambda x, k: _fast_conv(x, k, "VALID"))
    return [(eqn.invars[0].aval.shape, eqn.invars[1].aval.shape) for eqn in _conv_eqns(fast, x, k)]

  assert lhs_shapes(jnp.zeros((2, 32, 32, 3)), jnp.zeros((5, 5, 3, 8))) == [((2, 28, 32, 15), (1, 5, 15, 8))]
  assert lhs_shapes(jnp.zeros((2, 14, 14, 32)), jnp.zeros((5, 5, 32, 8))) == [((2, 14, 14, 32), (5, 5, 32, 8))]


def test_conv_off_cpu_is_the_plain_convolution(monkeypatch):
  x = jnp.zeros((2, 14, 14, 4))
  k = jnp.zeros((5, 5, 4, 6))
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  conv = lambda x, k: _fast_conv(x, k, "VALID")
  assert _conv_shapes(conv, x, k) == [(2, 10, 10, 6)]
  with xla_cpu.plain_convolutions():
    grad_x = lambda x, k: jax.grad(lambda x: conv(x, k).sum())(x)
    assert _conv_shapes(grad_x, x, k) == [(2, 10, 10, 6), (2, 14, 14, 4)]


def test_cpu_jit_matches_jit_with_static_and_donated_arguments():
  x = jax.random.normal(jax.random.key(0), (3, 14, 14, 4))
  k = jax.random.normal(jax.random.key(1), (5, 5, 4, 6))

  def loss(x, k, power):
    return jnp.sum(nn.relu(_fast_conv(x, k, "VALID")) ** power)

  def value_and_grad(k, x, power):
    return jax.value_and_grad(loss, argnums=1)(x, k, power)

  expected = jax.jit(value_and_grad, static_argnames="power")(k, x, power=2)
  fast = xla_cpu.cpu_jit(value_and_grad, static_argnames="power", donate_argnums=0)
  got = fast(jnp.array(k), x, power=2)
  np.testing.assert_allclose(got[0], expected[0], rtol=1e-5)
  np.testing.assert_allclose(got[1], expected[1], rtol=1e-4, atol=1e-4)
  assert fast.__name__ == "value_and_grad"
  assert "conv" in fast.lower(k, x, power=2).as_text()
  decorated = xla_cpu.cpu_jit(static_argnames="power")(value_and_grad)
  np.testing.assert_allclose(decorated(k, x, power=2)[0], expected[0], rtol=1e-5)


def test_cpu_jit_composes_inside_other_transformations():
  """Inside a user's jit or vmap the compiler options cannot apply (they belong
  to the outermost jit): the call is the plain jit of the same function."""
  x = jax.random.normal(jax.random.key(0), (2, 3, 14, 14, 4))
  k = jax.random.normal(jax.random.key(1), (5, 5, 4, 6))
  fast = xla_cpu.cpu_jit(lambda x, k: jnp.sum(nn.relu(_fast_conv(x, k, "VALID")) ** 2))
  alone = np.stack([fast(xi, k) for xi in x])
  np.testing.assert_allclose(jax.jit(lambda x, k: fast(x[0], k))(x, k), alone[0], rtol=1e-5)
  np.testing.assert_allclose(jax.vmap(fast, in_axes=(0, None))(x, k), alone, rtol=1e-5)
  np.testing.assert_allclose(jax.grad(fast, argnums=1)(x[1], k), jax.grad(jax.jit(fast), argnums=1)(x[1], k), rtol=1e-5)


def test_cpu_compiler_options_leave_a_donating_train_step_bit_for_bit_unchanged():
  from helpers import image_batch, linen_state

  from dann_jax.core import models, train
  from dann_jax.core.config import TrainConfig

  batch = image_batch(jax.random.key(0), n=16)
  config = TrainConfig(method="dann", learning_rate=0.05)

  def traced(state, batch):
    with xla_cpu.plain_convolutions():
      return train.train_step(state, batch)

  states = []
  for jitted in (
    xla_cpu.cpu_jit(train.train_step, donate_argnums=0),
    jax.jit(traced, compiler_options=xla_cpu.EIGEN_CONVOLUTIONS),
  ):
    state = linen_state(config, batch, xla_cpu.tuned(models.mnist_dann))
    for _ in range(3):
      state, _ = jitted(state, batch)
    states.append(jax.device_get(state.params))
  jax.tree.map(np.testing.assert_array_equal, *states)
