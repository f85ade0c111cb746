"""Gradient reversal: values, gradients, transformations, and compile caching."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from dann_jax import gradient_reversal


def test_forward_is_identity_on_pytrees():
  tree = {"a": jnp.arange(3.0), "b": (jnp.ones((2, 2)), jnp.float32(4.0))}
  out = jax.jit(gradient_reversal)(tree, 0.7)
  jax.tree.map(np.testing.assert_array_equal, out, tree)


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 2.5])
def test_gradient_is_minus_lambda_times_plain_gradient(lam):
  x = jnp.array([0.3, -1.2, 2.0])
  f = lambda x: jnp.sum(jnp.sin(x) * x)
  reversed_grad = jax.jit(jax.grad(lambda x: f(gradient_reversal(x, lam))))(x)
  np.testing.assert_allclose(reversed_grad, -lam * jax.grad(f)(x), rtol=1e-6)


def test_pytree_cotangents_are_all_reversed():
  tree = {"a": jnp.arange(3.0), "b": jnp.ones((2,))}
  loss = lambda t: jnp.sum(t["a"] ** 2) + 3 * jnp.sum(t["b"])
  g = jax.grad(lambda t: loss(gradient_reversal(t, 0.5)))(tree)
  np.testing.assert_allclose(g["a"], -0.5 * 2 * tree["a"])
  np.testing.assert_allclose(g["b"], -0.5 * 3 * np.ones(2))


def test_lambda_gets_zero_cotangent():
  x = jnp.array([1.0, 2.0])
  g = jax.grad(lambda lam: jnp.sum(gradient_reversal(x, lam) ** 2))(0.4)
  assert g == 0.0


def test_check_grads_on_linear_use():
  # phi(x) = R(x) - (1 + lam) * stop_gradient(x) has forward value -lam * x,
  # so finite differences of phi see exactly the slope the GRL claims
  # backwards (-lam); check_grads compares the two through a linear layer.
  w = jnp.array([[1.0, -2.0], [0.5, 3.0]])
  lam = 0.8
  phi = lambda x: gradient_reversal(x, lam) - (1 + lam) * jax.lax.stop_gradient(x)
  x = jnp.array([0.2, -0.7])
  np.testing.assert_allclose(phi(x), -lam * x, rtol=1e-6)
  check_grads(lambda x: w @ phi(x), (x,), order=1, modes=["rev"])
  check_grads(lambda x: jnp.tanh(w @ phi(x)), (x,), order=1, modes=["rev"])


def test_no_recompile_when_lambda_changes():
  f = jax.jit(jax.grad(lambda x, lam: jnp.sum(gradient_reversal(x, lam) ** 2)))
  x = jnp.ones(4)
  grads = [f(x, lam) for lam in (0.1, 0.5, 0.9)]
  assert f._cache_size() == 1
  for lam in (0.2, 0.3):
    f(x, jnp.float32(lam))
  assert f._cache_size() == 2  # one trace for Python floats, one for arrays
  np.testing.assert_allclose(grads[1], -0.5 * 2 * np.ones(4))
  # Lowering with two different values gives the same program text.
  assert f.lower(x, 0.1).as_text() == f.lower(x, 0.7).as_text()


def test_vmap_over_x_and_over_lambda():
  g = lambda x, lam: jax.grad(lambda x: jnp.sum(gradient_reversal(x, lam) ** 3))(x)
  xs = jnp.arange(6.0).reshape(3, 2)
  lams = jnp.array([0.0, 1.0, 2.0])
  over_x = jax.vmap(g, in_axes=(0, None))(xs, 0.5)
  np.testing.assert_allclose(over_x, -0.5 * 3 * xs**2)
  over_both = jax.jit(jax.vmap(g))(xs, lams)
  np.testing.assert_allclose(over_both, -lams[:, None] * 3 * xs**2)
  over_lam = jax.vmap(g, in_axes=(None, 0))(xs[1], lams)
  np.testing.assert_allclose(over_lam, -lams[:, None] * 3 * xs[1] ** 2)


def test_grad_of_function_using_it_twice():
  # f(x) = R_a(x) * R_b(x)^2: forward x^3; backward -a * x^2 - b * 2x^2.
  a, b = 0.5, 2.0
  f = lambda x: gradient_reversal(x, a) * gradient_reversal(x, b) ** 2
  x = 1.7
  np.testing.assert_allclose(f(x), x**3, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(jax.grad(f))(x), -a * x**2 - b * 2 * x**2, rtol=1e-6)
  # Reversing twice in sequence multiplies the factors: (-a)(-b) = ab.
  h = lambda x: gradient_reversal(gradient_reversal(x, a), b) ** 2
  np.testing.assert_allclose(jax.grad(h)(x), a * b * 2 * x, rtol=1e-6)


@pytest.mark.parametrize(
  "lam,shown", [(None, "got None"), (np.ones(5), "got shape (5,)"), (np.ones((1,)), "got shape (1,)")]
)
def test_lam_must_be_a_scalar(lam, shown):
  with pytest.raises(ValueError, match=rf"lam must be a scalar.*{re.escape(shown)}"):
    gradient_reversal(jnp.ones((2, 5)), lam)


def test_batched_lam_under_vmap_is_a_scalar_per_example():
  lams = jnp.array([0.5, 2.0])
  grads = jax.vmap(jax.grad(lambda x, lam: gradient_reversal(x, lam).sum()))(jnp.ones((2, 3)), lams)
  np.testing.assert_allclose(grads, -lams[:, None] * jnp.ones((2, 3)))
