"""Label-free model selection: rank trained models without any target label.

Unsupervised adaptation has no labelled target data to validate on, so
hyper-parameters, checkpoints and seeds must be chosen from what training is
allowed to see: labelled source images held out of training (`source_val`, a
split of source *train*, never a test set) and unlabelled target images.

Every validator here is a pure function of a model's outputs (logits and
features on those images, and the held-out source labels), returned as a
*risk*: lower is better (validators that reward a quantity return its
negative). `VALIDATORS` names them:

- `source-risk`: the error on the held-out source images. Blind to the
  target: it favours models that fit the source, adapted or not.
- `dev`: Deep Embedded Validation. A logistic domain classifier on the
  features estimates w(x) = p_t(x) / p_s(x); the source validation errors
  are importance-weighted by it, with a control variate. Unbounded when the
  domains are nearly separable (a few huge weights).
- `dev-normalized`: the same weights, self-normalised (sum w L / sum w): a
  weighted mean of 0-1 losses, always in [0, 1].
- `entropy`: the mean entropy of the target predictions (confident is low).
  A collapsed model that predicts one class with certainty scores best: use
  with care.
- `info-max`: minus the information maximization score, H(mean prediction)
  - mean H(prediction): confident *and* diverse target predictions.
- `bnm`: minus the batch nuclear norm of the target probability matrix,
  divided by the number of rows (confident and diverse, like `info-max`).
- `snd`: minus the soft neighbourhood density: the mean entropy of each
  target prediction's softmax-weighted similarity to the others (dense,
  consistent neighbourhoods score high).
- `class-ami`: minus the adjusted mutual information between k-means
  clusters of the features (source validation and target) and the classes
  (true source labels, predicted target labels): do the predicted classes
  follow the feature clusters?
- `reverse-validation`: the candidate pseudo-labels the target train images;
  a reverse model is trained by the same algorithm with those pseudo-labelled
  target images as its source and the source train images as its unlabelled
  target; its error on the held-out source images is the score. It trains a
  model per score.

How well each tracks target accuracy on this library's own pairs is measured
by experiments/selection/validator_bench.py
(experiments/results/selection/validators.md).

References: reverse validation, Ganin et al., JMLR 17 (2016), Sec. 5.1.2
(after Zhong et al., ECML PKDD 2010); DEV, You, Wang, Long & Wang, "Towards
Accurate Model Selection in Deep Unsupervised Domain Adaptation", ICML 2019,
Eq. (8)-(10); information maximization, Shi & Sha, ICML 2012; BNM, Cui et al.,
CVPR 2020; SND, Saito et al., ICCV 2021; ClassAMI and the weighted Spearman
benchmark, Musgrave, Belongie & Lim, "Three New Validators and a Large-Scale
Benchmark Ranking for Unsupervised Domain Adaptation", 2022.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import numpy as np

# Every validator, in the order reports list them; all but reverse validation
# are computed from one pass of the model over the label-free view.
CRITERIA = (
  "source-risk",
  "dev",
  "dev-normalized",
  "entropy",
  "info-max",
  "bnm",
  "snd",
  "class-ami",
  "reverse-validation",
)
# The validator `dann-jax adapt` and `select` use unless told otherwise, chosen
# by the validator benchmark (experiments/results/selection/validators.md).
DEFAULT_CRITERION = "info-max"


def check_criterion(criterion: str) -> None:
  if criterion not in CRITERIA:
    raise ValueError(f"unknown {criterion=}; choose one of {CRITERIA}")


# ---------------------------------------------------------------------------
# Generic criteria over predictions and features.


def zero_one_losses(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Per-sample 0-1 loss of `logits` (N, classes) against `labels` (N,)."""
  logits, labels = np.asarray(logits), np.asarray(labels)
  if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
    raise ValueError(
      f"logits of shape {logits.shape} do not match labels of shape {labels.shape}; need (N, classes) and (N,)"
    )
  return (np.argmax(logits, axis=-1) != labels).astype(np.float64)


def source_risk(val_logits: np.ndarray, val_labels: np.ndarray) -> float:
  """The error rate on held-out labelled source images."""
  return float(np.mean(zero_one_losses(val_logits, val_labels)))


# Log density ratios are clipped to +-MAX_LOG_RATIO: when the domains are
# (nearly) separable the logistic regression's log-odds grow without bound.
MAX_LOG_RATIO = 20.0


def density_ratio(
  source_x: np.ndarray, target_x: np.ndarray, query_x: np.ndarray, *, c: float = 0.1, seed: int = 0
) -> np.ndarray:
  """Estimates w(x) = p_target(x) / p_source(x) at `query_x`.

  A logistic regression tells `source_x` (label 0) from `target_x` (label 1)
  on standardised features; by Bayes' rule
  w(x) = (n_s / n_t) * P(target | x) / P(source | x). The log-odds are
  clipped to +-`MAX_LOG_RATIO` (separable domains give unbounded ones).

  Args:
    source_x: (n_s, D) source features (training images, not `query_x`).
    target_x: (n_t, D) unlabelled target features.
    query_x: (m, D) features at which to evaluate the ratio.
    c: inverse regularisation strength of the logistic regression.
    seed: the solver's seed.

  Returns:
    (m,) positive weights.
  """
  from sklearn.linear_model import LogisticRegression
  from sklearn.preprocessing import StandardScaler

  source_x, target_x = np.asarray(source_x), np.asarray(target_x)
  if min(len(source_x), len(target_x)) < 2:
    raise ValueError(
      f"density_ratio needs at least 2 source and 2 target samples; got {len(source_x)} and {len(target_x)}"
    )
  x = np.concatenate([source_x, target_x])
  y = np.concatenate([np.zeros(len(source_x)), np.ones(len(target_x))])
  scaler = StandardScaler().fit(x)
  clf = LogisticRegression(C=c, max_iter=1000, random_state=seed)
  clf.fit(scaler.transform(x), y)
  log_odds = clf.decision_function(scaler.transform(np.asarray(query_x)))
  log_odds = np.clip(log_odds, -MAX_LOG_RATIO, MAX_LOG_RATIO)
  return np.exp(log_odds) * (len(source_x) / len(target_x))


def dev_risk(losses: np.ndarray, weights: np.ndarray) -> float:
  """Deep Embedded Validation: an importance-weighted risk with a control variate.

  With weighted losses l_i = w_i L_i, the estimate is
  mean(l) + η mean(w) - η, η = -Cov(l, w) / Var(w): since E[w] = 1 under the
  source distribution, η (mean(w) - 1) has expectation 0 and cancels the part
  of the weighted mean's variance that is explained by the weights.

  Args:
    losses: (n,) per-sample losses on held-out source samples.
    weights: (n,) density ratios p_t / p_s at those samples.

  Returns:
    The estimated target risk.
  """
  losses = np.asarray(losses, np.float64)
  weights = np.asarray(weights, np.float64)
  if losses.shape != weights.shape or losses.ndim != 1 or len(losses) < 2:
    raise ValueError(
      f"losses {losses.shape} and weights {weights.shape} must be two 1-D arrays of the same length >= 2"
    )
  weighted = weights * losses
  var_w = np.var(weights, ddof=1)
  if var_w == 0:
    return float(weighted.mean())
  eta = -np.cov(weighted, weights, ddof=1)[0, 1] / var_w
  return float(weighted.mean() + eta * weights.mean() - eta)


def reverse_validation_risk(
  predict_target: np.ndarray,
  fit_reverse: Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]],
  source_val_x,
  source_val_y: np.ndarray,
) -> float:
  """The reverse-validation risk of one candidate.

  Args:
    predict_target: (n_t, classes) the candidate's logits (or scores) on the
      target train samples.
    fit_reverse: `pseudo_labels -> predict`: trains the reverse model with the
      target train samples labelled `pseudo_labels` as its source and the
      source train samples as its unlabelled target, and returns its
      `x -> (n, classes)` predictor.
    source_val_x: held-out labelled source samples (not used by
      `fit_reverse`).
    source_val_y: their labels.

  Returns:
    The reverse model's error rate on the held-out source samples.
  """
  pseudo = np.argmax(np.asarray(predict_target), axis=-1)
  reverse = fit_reverse(pseudo)
  return source_risk(reverse(source_val_x), source_val_y)


def normalized_dev_risk(losses: np.ndarray, weights: np.ndarray) -> float:
  """Self-normalised importance-weighted risk: sum(w L) / sum(w).

  A weighted mean of the losses, so it stays within their range however
  heavy-tailed the density ratios are (DEV's control variate can leave it far
  outside [0, 1] when the domains are nearly separable).

  Args:
    losses: (n,) per-sample losses on held-out source samples.
    weights: (n,) non-negative density ratios p_t / p_s, not all zero.
  """
  losses = np.asarray(losses, np.float64)
  weights = np.asarray(weights, np.float64)
  if losses.shape != weights.shape or losses.ndim != 1 or len(losses) < 1:
    raise ValueError(f"losses {losses.shape} and weights {weights.shape} must be two 1-D arrays of the same length")
  if np.any(weights < 0) or not weights.sum() > 0:
    raise ValueError("weights must be non-negative and not all zero")
  return float(np.sum(weights * losses) / np.sum(weights))


def softmax(logits: np.ndarray) -> np.ndarray:
  """Row-wise softmax of (N, classes) logits, in float64."""
  z = np.asarray(logits, np.float64)
  z = z - z.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
  return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=axis)


def _check_logits(logits) -> np.ndarray:
  logits = np.asarray(logits)
  if logits.ndim != 2 or logits.shape[0] < 2 or logits.shape[1] < 2:
    raise ValueError(f"logits of shape {logits.shape}: need (N, classes) with N >= 2 and classes >= 2")
  return logits


def prediction_entropy(logits: np.ndarray) -> float:
  """Mean entropy (nats) of the softmax predictions: 0 for one-hot, ln(classes) for uniform."""
  return float(np.mean(_entropy(softmax(_check_logits(logits)))))


def information_maximization(logits: np.ndarray) -> float:
  """H(mean prediction) - mean H(prediction), in nats; higher is better.

  ln(classes) for confident predictions spread evenly over the classes; 0 for
  predictions that are all the same distribution (e.g. a collapsed model).
  """
  p = softmax(_check_logits(logits))
  return float(_entropy(p.mean(axis=0)) - np.mean(_entropy(p)))


def batch_nuclear_norm(logits: np.ndarray) -> float:
  """The nuclear norm (sum of singular values) of the (N, classes) softmax
  matrix, divided by N; higher is better.

  For confident predictions it is sum_k sqrt(n_k) / N over the predicted
  class counts n_k: largest when the classes are used evenly.
  """
  p = softmax(_check_logits(logits))
  return float(np.linalg.svd(p, compute_uv=False).sum() / len(p))


def soft_neighbourhood_density(logits: np.ndarray, temperature: float = 0.05) -> float:
  """Mean entropy of each sample's soft neighbourhood; higher is better.

  The softmax predictions are L2-normalised, their cosine similarities to the
  other samples (self excluded) divided by `temperature` are turned into a
  distribution by a softmax per row, and the entropies of those rows are
  averaged: high when each sample has many close neighbours.
  """
  if not temperature > 0:
    raise ValueError(f"{temperature=} must be > 0")
  p = softmax(_check_logits(logits))
  f = p / np.linalg.norm(p, axis=1, keepdims=True)
  sim = f @ f.T / temperature
  np.fill_diagonal(sim, -np.inf)
  return float(np.mean(_entropy(softmax(sim))))


def class_ami(features: np.ndarray, classes: np.ndarray, num_classes: int, *, seed: int = 0) -> float:
  """Adjusted mutual information between k-means clusters of `features` and `classes`; higher is better.

  Args:
    features: (N, D) features (rows are L2-normalised before clustering).
    classes: (N,) class of each row (known labels or predictions).
    num_classes: the number of clusters.
    seed: k-means' seed.
  """
  from sklearn.cluster import KMeans
  from sklearn.metrics import adjusted_mutual_info_score

  features, classes = np.asarray(features, np.float64), np.asarray(classes)
  if features.ndim != 2 or len(features) != len(classes) or len(features) <= num_classes:
    raise ValueError(
      f"features {features.shape} and classes {classes.shape} must have the same rows, more than {num_classes=}"
    )
  f = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
  clusters = KMeans(num_classes, n_init=3, random_state=seed).fit_predict(f)
  return float(adjusted_mutual_info_score(classes, clusters))


@dataclasses.dataclass(frozen=True)
class Outputs:
  """A model's outputs on the label-free view: everything a validator reads.

  Attributes:
    source_val_logits, source_val_features: on the held-out source images.
    source_val_labels: their labels.
    source_train_features: on (a subsample of) the source train images.
    target_logits, target_features: on the unlabelled target images.
  """

  source_val_logits: np.ndarray
  source_val_features: np.ndarray
  source_val_labels: np.ndarray
  source_train_features: np.ndarray
  target_logits: np.ndarray
  target_features: np.ndarray


class _Scoring:
  """One model's outputs and seed, with the density ratios both DEV variants share."""

  def __init__(self, out: Outputs, seed: int):
    self.out, self.seed = out, seed

  @functools.cached_property
  def dev_weights(self) -> np.ndarray:
    out = self.out
    return density_ratio(out.source_train_features, out.target_features, out.source_val_features, seed=self.seed)

  @property
  def val_losses(self) -> np.ndarray:
    return zero_one_losses(self.out.source_val_logits, self.out.source_val_labels)

  def class_ami_risk(self) -> float:
    out = self.out
    num_classes = out.source_val_logits.shape[-1]
    features = np.concatenate([out.source_val_features, out.target_features])
    classes = np.concatenate([out.source_val_labels, np.argmax(out.target_logits, axis=-1)])
    return -class_ami(features, classes, num_classes, seed=self.seed)


# name -> risk (lower is better) of one model's scoring context; reverse
# validation, which trains a model, is not among them (`score_state`).
OUTPUT_VALIDATORS: dict[str, Callable[[_Scoring], float]] = {
  "source-risk": lambda s: source_risk(s.out.source_val_logits, s.out.source_val_labels),
  "dev": lambda s: dev_risk(s.val_losses, s.dev_weights),
  "dev-normalized": lambda s: normalized_dev_risk(s.val_losses, s.dev_weights),
  "entropy": lambda s: prediction_entropy(s.out.target_logits),
  "info-max": lambda s: -information_maximization(s.out.target_logits),
  "bnm": lambda s: -batch_nuclear_norm(s.out.target_logits),
  "snd": lambda s: -soft_neighbourhood_density(s.out.target_logits),
  "class-ami": lambda s: s.class_ami_risk(),
}


def score_outputs(out: Outputs, criteria=None, *, seed: int = 0) -> dict[str, float]:
  """Risks of one model's `Outputs` under each of `criteria` (default: all but reverse validation).

  Args:
    out: the model's outputs (`model_outputs`).
    criteria: names from `OUTPUT_VALIDATORS`.
    seed: the seed of the density-ratio classifier and of k-means.
  """
  criteria = tuple(OUTPUT_VALIDATORS) if criteria is None else tuple(criteria)
  for c in criteria:
    check_criterion(c)
    if c not in OUTPUT_VALIDATORS:
      raise ValueError(f"{c!r} trains a reverse model; score it with `score_state`")
  scoring = _Scoring(out, seed)
  return {c: float(OUTPUT_VALIDATORS[c](scoring)) for c in criteria}


# ---------------------------------------------------------------------------
# Ranking validators against target accuracy (the benchmark's measures).


def weighted_spearman(scores: np.ndarray, accuracies: np.ndarray, power: float = 2.0) -> float:
  """Spearman correlation between -risk and accuracy, weighted toward the most accurate models.

  Both are turned into ranks (ties averaged); the correlation is the
  weighted Pearson correlation of the ranks, each model weighted by
  (its accuracy rank / N) ** `power`, so the order among the best models
  counts most (the best has weight 1, the worst 1/N ** power). `power=0` is
  the plain Spearman correlation. This follows the weighting of Musgrave et
  al. (2022).

  Args:
    scores: (N,) risks (lower is better).
    accuracies: (N,) target accuracies.
    power: the weights' exponent.

  Returns:
    A correlation in [-1, 1]; NaN when either side is constant.
  """
  from scipy.stats import rankdata

  scores, accuracies = np.asarray(scores, np.float64), np.asarray(accuracies, np.float64)
  if scores.shape != accuracies.shape or scores.ndim != 1 or len(scores) < 2:
    raise ValueError(f"scores {scores.shape} and accuracies {accuracies.shape} must be 1-D, equal length >= 2")
  rs, ra = rankdata(-scores), rankdata(accuracies)
  w = (ra / len(ra)) ** power
  w = w / w.sum()
  ds, da = rs - np.sum(w * rs), ra - np.sum(w * ra)
  var_s, var_a = np.sum(w * ds * ds), np.sum(w * da * da)
  if var_s == 0 or var_a == 0:
    return float("nan")
  return float(np.sum(w * ds * da) / np.sqrt(var_s * var_a))


def leave_one_out_choice(correlations: dict[str, dict[str, float]]) -> dict[str, str]:
  """Per task, the validator with the best mean correlation over the *other* tasks.

  The choice for a task never reads that task's correlations (computed from
  its target labels), so it is the choice a user with a new, unlabelled task
  would make from the benchmark.

  Args:
    correlations: task -> validator -> correlation (higher is better); a
      NaN or missing entry counts as -1.

  Returns:
    task -> the chosen validator (ties: the first in `CRITERIA` order).
  """
  if len(correlations) < 2:
    raise ValueError(f"leave-one-out needs at least two tasks; got {sorted(correlations)}")
  names = [c for c in CRITERIA if any(c in v for v in correlations.values())]
  value = lambda task, c: correlations[task].get(c, float("nan"))
  clean = lambda x: -1.0 if x is None or np.isnan(x) else x
  out = {}
  for task in correlations:
    others = [t for t in correlations if t != task]
    out[task] = max(names, key=lambda c: (np.mean([clean(value(t, c)) for t in others]), -names.index(c)))
  return out


# ---------------------------------------------------------------------------
# The criteria applied to a trained DANN state.


@dataclasses.dataclass(frozen=True)
class SelectionSet:
  """What a criterion may see of a pair: no target label anywhere.

  Attributes:
    source_train: (n, H, W, C) uint8 source train images used in training
      (a subsample is enough).
    source_val_images, source_val_labels: the held-out labelled source split.
    target_images: (m, H, W, C) uint8 unlabelled target train images.
    mean: the run's per-channel pixel mean.
  """

  source_train: np.ndarray
  source_val_images: np.ndarray
  source_val_labels: np.ndarray
  target_images: np.ndarray
  mean: np.ndarray


def selection_set(
  data, mean, *, max_train: int = 5000, max_target: int = 10_000, max_val: int | None = None, seed: int = 0
) -> SelectionSet:
  """The label-free view of a `dann_jax.pair_data.PairData` (target labels dropped).

  Args:
    data: the pair's splits, with a held-out source split.
    mean: the run's per-channel pixel mean.
    max_train, max_target, max_val: at most this many source train, target
      train and held-out source images (a seeded subsample; None: all).
    seed: the subsample's seed.

  Raises:
    ValueError: if `data` has no held-out source split.
  """
  if data.source_val is None:
    raise ValueError(
      "label-free selection needs labelled source images held out of "
      "training; train with source_holdout > 0 (the quick preset holds "
      "out 5,000)"
    )
  rng = np.random.default_rng(seed)
  pick = lambda n, k: np.sort(rng.permutation(n)[: (n if k is None else k)])
  si = pick(len(data.source_train), max_train)
  ti = pick(len(data.target_train), max_target)
  vi = pick(len(data.source_val), max_val)
  return SelectionSet(
    source_train=data.source_train.images[si],
    source_val_images=data.source_val.images[vi],
    source_val_labels=data.source_val.labels[vi],
    target_images=data.target_train.images[ti],
    mean=np.asarray(mean),
  )


# The `Outputs` fields each validator reads (the rest may be left None).
_DEV_NEEDS = ("source_val_logits", "source_val_features", "source_train_features", "target_features")
NEEDS = {
  "source-risk": ("source_val_logits",),
  "dev": _DEV_NEEDS,
  "dev-normalized": _DEV_NEEDS,
  "entropy": ("target_logits",),
  "info-max": ("target_logits",),
  "bnm": ("target_logits",),
  "snd": ("target_logits",),
  "class-ami": ("source_val_logits", "source_val_features", "target_logits", "target_features"),
}


def model_outputs(state, view: SelectionSet, criteria=None) -> Outputs:
  """The `Outputs` of a single-seed train state on `view`: the fields that
  `criteria` read (default: every field)."""
  from dann_jax.evaluation import features

  criteria = tuple(OUTPUT_VALIDATORS) if criteria is None else tuple(criteria)
  needed = {field for c in criteria for field in NEEDS[c]}
  images = {"source_val": view.source_val_images, "source_train": view.source_train, "target": view.target_images}
  values = {}
  for field in Outputs.__dataclass_fields__:
    if field == "source_val_labels":
      values[field] = np.asarray(view.source_val_labels)
    elif field in needed:
      where, layer = field.rsplit("_", 1)
      values[field] = features(state, images[where], view.mean, layer)
    else:
      values[field] = None
  return Outputs(**values)


def score_state(
  state,
  view: SelectionSet,
  criterion: str,
  *,
  reverse_config=None,
  reverse_model=None,
  reverse_steps: int = 1000,
  seed: int = 0,
) -> float:
  """The label-free risk estimate of a single-seed train state (lower is better).

  Args:
    state: a `dann_jax.train.TrainState` without a seeds axis.
    view: the label-free data (`selection_set`).
    criterion: one of `CRITERIA`.
    reverse_config: the `TrainConfig` of the reverse model (reverse
      validation only); its `total_steps` is replaced by `reverse_steps`.
    reverse_model: the untrained Flax module of the reverse model (the
      candidate's architecture).
    reverse_steps: training steps of the reverse model.
    seed: seed of the reverse model, the density-ratio classifier and k-means.
  """
  from dann_jax.evaluation import features

  check_criterion(criterion)
  if criterion != "reverse-validation":
    return score_outputs(model_outputs(state, view, [criterion]), [criterion], seed=seed)[criterion]
  if reverse_config is None or reverse_model is None:
    raise ValueError(
      "reverse validation needs reverse_config and reverse_model (the candidate's TrainConfig and module)"
    )
  target_logits = features(state, view.target_images, view.mean, "logits")
  fit = _dann_reverse_fitter(view, reverse_config, reverse_model, reverse_steps, seed, target_logits.shape[-1])
  return reverse_validation_risk(target_logits, fit, view.source_val_images, view.source_val_labels)


def _dann_reverse_fitter(view: SelectionSet, config, model, steps: int, seed: int, num_classes: int):
  """`pseudo_labels -> predict` training a DANN from target to source."""
  import jax
  import jax.numpy as jnp

  from dann_jax.data import make_domain_pair
  from dann_jax.evaluation import features
  from dann_jax.loop import fit
  from dann_jax.train import create_train_state

  def fit_reverse(pseudo: np.ndarray):
    reverse_source = (view.target_images, pseudo.astype(np.int32))
    # The source images' labels are never read (no label mask): zeros.
    reverse_target = (view.source_train, np.zeros(len(view.source_train), np.int32))
    pair = make_domain_pair(reverse_source, reverse_target)
    cfg = config.replace(total_steps=steps, seed=seed)
    state = create_train_state(model, cfg, jnp.zeros((1, *view.target_images.shape[1:])), jax.random.key(seed))
    state = fit(state, pair, num_steps=steps, batch_size=cfg.batch_size, num_classes=num_classes)
    mean = np.asarray(pair.mean)
    return lambda x: features(state, x, mean, "logits")

  return fit_reverse
