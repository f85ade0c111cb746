"""Subspace alignment, SVM heads, and the proxy A-distance on synthetic features."""

import numpy as np
import pytest

from dann_jax.validation.baselines import align_subspaces, linear_svm_accuracy, subspace_alignment
from dann_jax.validation.divergence import proxy_a_distance


def _clouds(n=600, dim=10, seed=0):
  """Two classes along dimension 0; the target rescales and shifts every dim."""
  rng = np.random.default_rng(seed)

  def draw():
    y = rng.integers(0, 2, n)
    z = rng.normal(size=(n, dim)) * np.linspace(3.0, 0.5, dim)
    z[:, 0] = (2 * y - 1) * 3.0 + rng.normal(size=n) * 0.7
    return z, y

  xs, ys = draw()
  zt, yt = draw()
  # A per-feature affine distortion (like a sensor change): a classifier fit
  # on source statistics fails on it, while SA standardises each domain on
  # its own statistics and aligns their principal subspaces.
  scale = rng.uniform(0.3, 3.0, dim)
  offset = rng.normal(0.0, 6.0, dim)
  offset[0] = 6.0  # moves both classes across the source decision boundary
  return xs, ys, zt * scale + offset, yt


def test_alignment_helps_under_a_feature_shift():
  xs, ys, xt, yt = _clouds()
  no_adapt = linear_svm_accuracy(xs, ys, xt, yt)
  result = subspace_alignment(xs, ys, xt, yt, dims=range(2, 11))
  assert no_adapt < 0.8
  assert result.accuracy > 0.95
  assert result.accuracy == max(result.by_d.values())
  assert result.by_d[result.d] == result.accuracy
  assert set(result.by_d) == set(range(2, 11))


def test_alignment_of_a_domain_with_itself_is_the_identity():
  # Identical domains have identical bases, so M = P^T P = I.
  xs, _, _, _ = _clouds()
  a, b = align_subspaces(xs, xs, d=4)
  np.testing.assert_allclose(a, b, atol=1e-8)
  assert a.shape == (600, 4)


def test_bad_dimension():
  xs, _, xt, _ = _clouds(n=50, dim=4)
  with pytest.raises(ValueError, match="subspace dimension"):
    align_subspaces(xs, xt, d=5)


def test_linear_svm_accuracy_on_separable_data():
  xs, ys, _, _ = _clouds()
  assert linear_svm_accuracy(xs[:300], ys[:300], xs[300:], ys[300:]) > 0.95


def test_proxy_a_distance_identical_and_separable():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(1000, 5))
  same = proxy_a_distance(x[:500], x[500:])
  assert abs(same) < 0.25
  far = proxy_a_distance(x[:500], x[500:] + 10.0)
  assert far > 1.95


def test_proxy_a_distance_needs_samples():
  with pytest.raises(ValueError, match="at least 4"):
    proxy_a_distance(np.zeros((2, 3)), np.zeros((5, 3)))
