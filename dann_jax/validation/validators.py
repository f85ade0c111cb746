"""Label-free validators: pure functions of a model's outputs that rank models without target labels.

Each one reads a model's logits and features on labelled source images held
out of training and on unlabelled target images (`Outputs`), with the
held-out source labels, and returns a *risk*: lower is better (validators
that reward a quantity return its negative). `dann_jax.names.CRITERIA` names
them; `dann_jax.validation.selection` runs a trained model over a pair to get its
`Outputs`:

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
from scipy import special

from dann_jax.names import CRITERIA


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
  # entr: -p log p, 0 at p = 0, NaN for NaN (a non-finite prediction gets a NaN risk, which ranks last)
  return np.sum(special.entr(p), axis=axis)


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
  if not np.isfinite(p).all():
    return float("nan")  # as the other validators: a non-finite prediction ranks last
  return float(np.linalg.svd(p, compute_uv=False).sum() / len(p))


def class_share_drift(target_logits: np.ndarray, source_labels: np.ndarray) -> float:
  """Total variation distance between the target's predicted class shares and the source's label shares.

  0.5 * sum_k |q_k - p_k|, with q_k the share of target rows whose argmax is
  class k and p_k the share of source labels equal to k: 0 when the shares
  agree, 1 when they share no class. Not a validator: under covariate shift
  (the same class shares on both domains, DANN's setting) a model that adapted
  well keeps it small, and the class-share check of `dann_jax.runner.choice.choose` bounds it.
  NaN when a target logit is not finite.

  Args:
    target_logits: (N, classes) logits on unlabelled target images.
    source_labels: (M,) labels of source images, in [0, classes).
  """
  logits = _check_logits(target_logits)
  labels = np.asarray(source_labels)
  k = logits.shape[-1]
  if labels.ndim != 1 or not len(labels) or labels.min() < 0 or labels.max() >= k:
    raise ValueError(f"source_labels need shape (M,), M >= 1, with values in [0, {k}); got shape {labels.shape}")
  if not np.isfinite(logits).all():
    return float("nan")
  q = np.bincount(np.argmax(logits, axis=-1), minlength=k) / len(logits)
  p = np.bincount(labels, minlength=k) / len(labels)
  return float(0.5 * np.abs(q - p).sum())


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
  given = [np.asarray(getattr(out, f.name)) for f in dataclasses.fields(out) if getattr(out, f.name) is not None]
  if any(np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all() for v in given):
    return {c: float("nan") for c in criteria}  # a model with non-finite outputs ranks last under every validator
  scoring = _Scoring(out, seed)
  return {c: float(OUTPUT_VALIDATORS[c](scoring)) for c in criteria}
