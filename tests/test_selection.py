"""Label-free selection criteria: hand-worked cases, a known density ratio, and reverse-validation round trips."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import make_moons
from sklearn.neighbors import KNeighborsClassifier

from dann_jax import selection
from dann_jax.config import TrainConfig
from dann_jax.data import make_domain_pair
from dann_jax.evaluation import accuracy
from dann_jax.models import DANN
from dann_jax.loop import fit
from dann_jax.train import create_train_state


def test_source_risk_hand_case():
  logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
  labels = np.array([0, 0, 0, 1])  # predictions 0, 1, 0, 1: one error
  assert selection.source_risk(logits, labels) == 0.25


def test_dev_risk_hand_case():
  # Weighted losses [3, 0, 1, 0] (mean 1); weights mean 1.5, var 1 (ddof 1);
  # Cov(weighted, w) = 4/3, so eta = -4/3 and the estimate is
  # 1 + (-4/3)(1.5) + 4/3 = 1/3.
  losses = np.array([1.0, 0.0, 1.0, 0.0])
  weights = np.array([3.0, 1.0, 1.0, 1.0])
  assert selection.dev_risk(losses, weights) == pytest.approx(1 / 3)


def test_dev_risk_with_constant_weights_is_the_weighted_mean():
  losses = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
  assert selection.dev_risk(losses, np.full(5, 2.0)) == pytest.approx(1.2)


def test_dev_risk_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match="same length"):
    selection.dev_risk(np.zeros(3), np.ones(4))


def test_density_ratio_matches_two_gaussians():
  # Source N(0, 1), target N(1, 1): p_t / p_s = exp(x - 1/2), a log-linear
  # ratio that logistic regression can represent exactly. Unequal sample
  # sizes check the prior correction n_s / n_t.
  rng = np.random.default_rng(0)
  src = rng.normal(0.0, 1.0, (40_000, 1))
  tgt = rng.normal(1.0, 1.0, (20_000, 1))
  query = np.array([[-1.0], [0.0], [0.5], [1.0], [2.0]])
  w = selection.density_ratio(src, tgt, query, c=100.0)
  np.testing.assert_allclose(w, np.exp(query[:, 0] - 0.5), rtol=0.08)


def _rotated_moons(n, angle, seed):
  x, y = make_moons(n, noise=0.1, random_state=seed)
  c, s = np.cos(angle), np.sin(angle)
  return x @ np.array([[c, -s], [s, c]]), y


def test_reverse_validation_ranks_a_consistent_candidate_first():
  src_x, src_y = _rotated_moons(600, 0.0, 0)
  val_x, val_y = _rotated_moons(300, 0.0, 1)
  tgt_x, tgt_y = _rotated_moons(600, np.pi / 8, 2)  # a rotated target

  def fit_reverse(pseudo):
    knn = KNeighborsClassifier(5).fit(tgt_x, pseudo)
    return lambda x: knn.predict_proba(x)

  good = KNeighborsClassifier(5).fit(src_x, src_y)
  shuffled = np.random.default_rng(3).permutation(src_y)
  bad = KNeighborsClassifier(5).fit(src_x, shuffled)
  scores = {
    name: selection.reverse_validation_risk(clf.predict_proba(tgt_x), fit_reverse, val_x, val_y)
    for name, clf in (("good", good), ("bad", bad))
  }
  # The target accuracies (reported, not used by the criterion) agree.
  assert good.score(tgt_x, tgt_y) > bad.score(tgt_x, tgt_y) + 0.2
  assert scores["good"] < 0.15 < 0.35 < scores["bad"]


class _Flat(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.relu(nn.Dense(16)(x.reshape(x.shape[0], -1)))


def _tiny_dann():
  return DANN(features=_Flat(), label_predictor=nn.Dense(2), domain_classifier=nn.Dense(1))


def _quadrant_images(n, seed, shift):
  """Class = which half of the image is bright; the target adds a colour cast."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 2, n)
  x = rng.integers(0, 60, (n, 8, 8, 3))
  x[y == 0, :4] += 150
  x[y == 1, 4:] += 150
  x[..., 0] += shift
  return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int32)


def test_reverse_validation_of_dann_states():
  src_x, src_y = _quadrant_images(512, 0, 0)
  val_x, val_y = _quadrant_images(256, 1, 0)
  tgt_x, _ = _quadrant_images(512, 2, 60)
  config = TrainConfig(method="dann", total_steps=150, batch_size=32, optimizer="adam", learning_rate=1e-2)
  model = _tiny_dann()
  pair = make_domain_pair((src_x, src_y), (tgt_x, np.zeros(512, np.int32)))
  make_state = lambda: create_train_state(model, config, jnp.zeros((1, 8, 8, 3)), jax.random.key(0))
  untrained = make_state()
  # fit donates its input state's buffers: train a second copy.
  trained = fit(make_state(), pair, num_steps=150, batch_size=32, num_classes=2)
  view = selection.SelectionSet(
    source_train=src_x,
    source_val_images=val_x,
    source_val_labels=val_y,
    target_images=tgt_x,
    mean=np.asarray(pair.mean),
  )
  # Source risk is exactly the held-out error.
  risk = selection.score_state(trained, view, "source-risk")
  assert risk == pytest.approx(1 - accuracy(trained, val_x, val_y, pair.mean))
  rv = {
    name: selection.score_state(
      state, view, "reverse-validation", reverse_config=config, reverse_model=model, reverse_steps=150
    )
    for name, state in (("trained", trained), ("untrained", untrained))
  }
  assert rv["trained"] < 0.1 < 0.3 < rv["untrained"]


def test_unknown_criterion_is_named():
  with pytest.raises(ValueError, match="unknown criterion"):
    selection.check_criterion("target-accuracy")
