"""Label-free selection criteria: hand-worked cases, a known density ratio, and reverse-validation round trips."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import make_moons
from sklearn.neighbors import KNeighborsClassifier

from dann_jax.core.config import TrainConfig
from dann_jax.core.models import DANN
from dann_jax.core.train import create_train_state
from dann_jax.data import make_domain_pair
from dann_jax.training.evaluation import accuracy
from dann_jax.training.loop import fit
from dann_jax.validation import selection


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


@pytest.mark.slow
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
  assert rv["trained"] < 0.1 < 0.3 < rv["untrained"], rv


def test_unknown_criterion_is_named():
  with pytest.raises(ValueError, match="unknown criterion"):
    selection.check_criterion("target-accuracy")


# ---------------------------------------------------------------------------
# Validators over arrays: closed forms and numpy references.

BIG = 50.0  # a logit margin that makes softmax one-hot to float64 precision


def _one_hot_logits(classes, num_classes):
  return BIG * np.eye(num_classes)[np.asarray(classes)]


def test_prediction_entropy_closed_forms():
  assert selection.prediction_entropy(np.zeros((4, 10))) == pytest.approx(np.log(10))
  assert selection.prediction_entropy(_one_hot_logits([0, 3, 3], 5)) == pytest.approx(0.0, abs=1e-12)
  # Two classes at p = (0.75, 0.25): logits (ln 3, 0).
  h = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
  assert selection.prediction_entropy(np.array([[np.log(3), 0.0]] * 3)) == pytest.approx(h)


def test_information_maximization_closed_forms():
  # Confident and balanced: H(mean) = ln C, mean H = 0.
  balanced = _one_hot_logits(np.repeat(np.arange(4), 5), 4)
  assert selection.information_maximization(balanced) == pytest.approx(np.log(4))
  # Collapsed (every row the same prediction): 0, however confident.
  assert selection.information_maximization(_one_hot_logits([2] * 7, 4)) == pytest.approx(0.0, abs=1e-12)
  # Uniform predictions: H(mean) = mean H = ln C.
  assert selection.information_maximization(np.zeros((6, 4))) == pytest.approx(0.0, abs=1e-12)


def test_batch_nuclear_norm_closed_forms():
  # One-hot rows with class counts n_k: P^T P = diag(n_k), singular values sqrt(n_k).
  counts = np.array([5, 3, 1, 0])
  logits = _one_hot_logits(np.repeat(np.arange(4), counts), 4)
  assert selection.batch_nuclear_norm(logits) == pytest.approx(np.sqrt(counts).sum() / counts.sum())
  # Collapsed: one singular value sqrt(N).
  assert selection.batch_nuclear_norm(_one_hot_logits([1] * 9, 4)) == pytest.approx(3 / 9)


def test_class_share_drift_closed_forms():
  source = np.repeat(np.arange(4), [4, 4, 4, 4])  # shares 1/4 each
  # Predicted shares (1/2, 1/4, 1/4, 0): TV = 0.5 * (1/4 + 0 + 0 + 1/4) = 1/4.
  assert selection.class_share_drift(_one_hot_logits([0, 0, 1, 2], 4), source) == pytest.approx(0.25)
  assert selection.class_share_drift(_one_hot_logits([3, 2, 1, 0] * 2, 4), source) == pytest.approx(0.0)
  # Collapsed onto a class the source lacks: disjoint supports, TV = 1.
  assert selection.class_share_drift(_one_hot_logits([3] * 5, 4), np.array([0, 1, 2])) == pytest.approx(1.0)
  # Soft logits count by their argmax only.
  soft = np.array([[2.0, 1.9, 0, 0], [0, 1.0, 0.9, 0]])
  assert selection.class_share_drift(soft, np.array([0, 1])) == pytest.approx(0.0)
  nan = _one_hot_logits([0, 1], 4)
  nan[0, 0] = np.nan
  assert np.isnan(selection.class_share_drift(nan, source))
  with pytest.raises(ValueError, match="source_labels"):
    selection.class_share_drift(_one_hot_logits([0, 1], 4), np.array([0, 4]))


def _snd_reference(logits, temperature):
  """Soft neighbourhood density, written out sample by sample."""
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  f = p / np.sqrt((p**2).sum(1, keepdims=True))
  out = []
  for i in range(len(f)):
    sims = np.array([f[i] @ f[j] / temperature for j in range(len(f)) if j != i])
    q = np.exp(sims - sims.max())
    q /= q.sum()
    out.append(-(q * np.log(q)).sum())
  return np.mean(out)


def test_soft_neighbourhood_density_matches_reference_and_closed_form():
  logits = np.random.default_rng(0).normal(0, 2, (30, 5))
  assert selection.soft_neighbourhood_density(logits, 0.05) == pytest.approx(_snd_reference(logits, 0.05))
  assert selection.soft_neighbourhood_density(logits, 0.5) == pytest.approx(_snd_reference(logits, 0.5))
  # N identical predictions: every row's neighbourhood is uniform over N - 1.
  assert selection.soft_neighbourhood_density(np.tile([1.0, 2.0, 0.0], (8, 1))) == pytest.approx(np.log(7))


def test_class_ami_follows_the_clusters():
  rng = np.random.default_rng(0)
  centres = np.eye(4) * 10
  classes = np.repeat(np.arange(4), 50)
  feats = centres[classes] + rng.normal(0, 0.3, (200, 4))
  assert selection.class_ami(feats, classes, 4) == pytest.approx(1.0)
  assert abs(selection.class_ami(feats, rng.permutation(classes), 4)) < 0.05


def test_normalized_dev_risk_hand_case_and_bounds():
  losses = np.array([1.0, 0.0, 1.0, 0.0])
  weights = np.array([3.0, 1.0, 1.0, 1.0])
  assert selection.normalized_dev_risk(losses, weights) == pytest.approx(4 / 6)
  # Heavy-tailed weights leave it a weighted mean of the losses.
  heavy = np.array([1e12, 1e-12, 1.0, 1e6])
  assert 0.0 <= selection.normalized_dev_risk(losses, heavy) <= 1.0
  with pytest.raises(ValueError, match="non-negative"):
    selection.normalized_dev_risk(losses, np.zeros(4))


def _weighted_pearson(x, y, w):
  w = w / w.sum()
  mx, my = (w * x).sum(), (w * y).sum()
  return (w * (x - mx) * (y - my)).sum() / np.sqrt((w * (x - mx) ** 2).sum() * (w * (y - my) ** 2).sum())


def test_weighted_spearman_closed_forms_and_reference():
  acc = np.array([0.1, 0.5, 0.3, 0.9, 0.7])
  assert selection.weighted_spearman(-acc, acc) == pytest.approx(1.0)  # risk falls as accuracy rises
  assert selection.weighted_spearman(acc, acc) == pytest.approx(-1.0)
  # power 0 is scipy's Spearman.
  from scipy.stats import spearmanr

  risk = np.array([0.4, 0.2, 0.1, 0.3, 0.5])
  assert selection.weighted_spearman(risk, acc, power=0) == pytest.approx(spearmanr(-risk, acc).statistic)
  # Ranks of -risk: [2, 4, 5, 3, 1]; of accuracy: [1, 3, 2, 5, 4]; weights (rank / 5)^2.
  ref = _weighted_pearson(
    np.array([2.0, 4, 5, 3, 1]), np.array([1.0, 3, 2, 5, 4]), (np.array([1.0, 3, 2, 5, 4]) / 5) ** 2
  )
  assert selection.weighted_spearman(risk, acc) == pytest.approx(ref)
  # The weighting counts the order among the best: swapping the two best
  # hurts more than swapping the two worst.
  order = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
  good_top = np.array([0.3, 0.1, 0.5, 0.7, 0.9])  # the worst two swapped
  good_bottom = np.array([0.1, 0.3, 0.5, 0.9, 0.7])  # the best two swapped
  assert selection.weighted_spearman(-good_top, order) > selection.weighted_spearman(-good_bottom, order)


def test_score_outputs_signs_reward_what_each_validator_rewards():
  rng = np.random.default_rng(1)
  labels = np.repeat(np.arange(3), 20)
  centres = np.eye(3) * 8
  outputs = lambda target_logits: selection.Outputs(
    source_val_logits=_one_hot_logits(labels, 3),
    source_val_features=centres[labels] + rng.normal(0, 0.2, (60, 3)),
    source_val_labels=labels,
    source_train_features=centres[labels] + rng.normal(0, 0.2, (60, 3)),
    target_logits=target_logits,
    target_features=centres[labels] + rng.normal(0, 0.2, (60, 3)),
  )
  good = selection.score_outputs(outputs(_one_hot_logits(labels, 3)))
  collapsed = selection.score_outputs(outputs(_one_hot_logits(np.zeros(60, int), 3)))
  for name in ("info-max", "bnm", "class-ami"):
    assert good[name] < collapsed[name], name
  assert set(good) == set(selection.CRITERIA) - {"reverse-validation"}
  # Non-finite outputs (a broken model) score NaN under every validator: `choose` ranks them last.
  broken = _one_hot_logits(labels, 3)
  broken[5, 1] = np.nan
  assert all(np.isnan(list(selection.score_outputs(outputs(broken)).values())))


def test_output_validators_give_nan_not_a_best_score_for_nan_predictions():
  logits = _one_hot_logits([0, 1, 2, 0], 3)
  logits[2] = np.nan
  for score in (
    selection.prediction_entropy,
    selection.information_maximization,
    selection.batch_nuclear_norm,
    selection.soft_neighbourhood_density,
  ):
    assert np.isnan(score(logits)), score.__name__


def test_leave_one_out_choice_never_reads_the_task_itself():
  corr = {
    "a": {"entropy": 0.9, "bnm": 0.1},
    "b": {"entropy": 0.2, "bnm": 0.6},
    "c": {"entropy": 0.3, "bnm": 0.5},
  }
  # For a: mean over b, c -> entropy 0.25, bnm 0.55. For b: entropy 0.6,
  # bnm 0.3. For c: entropy 0.55, bnm 0.35.
  assert selection.leave_one_out_choice(corr) == {"a": "bnm", "b": "entropy", "c": "entropy"}
  # Changing a task's own numbers leaves its choice alone.
  corr["a"] = {"entropy": -1.0, "bnm": 1.0}
  assert selection.leave_one_out_choice(corr)["a"] == "bnm"
  # NaN counts as the worst correlation.
  assert selection.leave_one_out_choice({"x": {"snd": 0.0}, "y": {"snd": float("nan"), "bnm": -0.5}}) == {
    "x": "bnm",
    "y": "snd",
  }


# ---------------------------------------------------------------------------
# The validators applied to a state, against references built from its outputs.


class _Linear(nn.Module):
  """A linear feature extractor over the flattened image: its predictions vary from image to image."""

  outputs: int = 16

  @nn.compact
  def __call__(self, x, train: bool = False):
    return nn.Dense(self.outputs)(x.reshape(x.shape[0], -1))


def _linear_dann():
  from dann_jax.core.models import MLP

  return DANN(
    features=_Linear(), label_predictor=MLP(hidden=(), outputs=10), domain_classifier=MLP(hidden=(), outputs=1)
  )


def _view_and_state():
  rng = np.random.default_rng(0)
  # Images that differ from each other: a random colour and a random vertical ramp each.
  ramp = np.linspace(0, 1, 32)[None, :, None, None]

  def images(n, low, high):
    colour = rng.uniform(low, high, (n, 1, 1, 3))
    slope = rng.uniform(-1, 1, (n, 1, 1, 3)) * (high - low)
    return np.clip(colour + slope * ramp, 0, 255).astype(np.uint8).repeat(32, axis=2)

  dark = lambda n: images(n, 0, 80)
  bright = lambda n: images(n, 120, 255)
  mean = np.full(3, 100.0, np.float32)
  config = TrainConfig(total_steps=10, batch_size=8)
  state = create_train_state(_linear_dann(), config, jnp.zeros((1, 32, 32, 3)), jax.random.key(0))
  val_images = np.concatenate([dark(30), bright(10)])  # a few target-like source images
  view = selection.SelectionSet(
    source_train=dark(60),
    source_val_images=val_images,
    source_val_labels=rng.integers(0, 10, 40),
    target_images=bright(60),
    mean=mean,
  )
  return view, state, config


def test_dev_on_a_state_weights_by_target_over_source_density():
  from dann_jax.training.evaluation import features

  view, state, _ = _view_and_state()
  emb = lambda images, layer: features(state, images, view.mean, layer)
  val = emb(view.source_val_images, "features")
  weights = selection.density_ratio(emb(view.source_train, "features"), emb(view.target_images, "features"), val)
  # Target-like (bright) held-out images get the larger weights: p_t / p_s, not its inverse.
  assert weights[30:].mean() > 10 * weights[:30].mean()
  losses = selection.zero_one_losses(emb(view.source_val_images, "logits"), view.source_val_labels)
  for name, risk in (("dev", selection.dev_risk), ("dev-normalized", selection.normalized_dev_risk)):
    assert selection.score_state(state, view, name) == pytest.approx(risk(losses, weights), rel=1e-6)


def test_reverse_validation_on_a_state_scores_the_reverse_model():
  from dann_jax.training.evaluation import features

  view, state, config = _view_and_state()
  # Label the held-out images with the candidate's own predictions: its source risk is 0.
  val_pred = np.argmax(features(state, view.source_val_images, view.mean, "logits"), -1)
  view = dataclasses.replace(view, source_val_labels=val_pred)
  assert selection.score_state(state, view, "source-risk") == 0.0
  # The reverse model, trained here by hand: pseudo-labelled target -> unlabelled source.
  pseudo = np.argmax(features(state, view.target_images, view.mean, "logits"), -1).astype(np.int32)
  pair = make_domain_pair((view.target_images, pseudo), (view.source_train, np.zeros(60, np.int32)))
  reverse = create_train_state(_linear_dann(), config.replace(seed=3), jnp.zeros((1, 32, 32, 3)), jax.random.key(3))
  reverse = fit(reverse, pair, num_steps=12, batch_size=8, num_classes=10)
  expected = np.mean(np.argmax(features(reverse, view.source_val_images, pair.mean, "logits"), -1) != val_pred)
  score = selection.score_state(
    state, view, "reverse-validation", reverse_config=config, reverse_model=_linear_dann(), reverse_steps=12, seed=3
  )
  assert score == pytest.approx(expected) and expected > 0
