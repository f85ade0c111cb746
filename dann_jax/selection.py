"""Label-free model selection: rank trained models without any target label.

Unsupervised adaptation has no labelled target data to validate on, so
hyper-parameters, checkpoints and seeds must be chosen from what training is
allowed to see: labelled source images held out of training (`source_val`, a
split of source *train*, never a test set) and unlabelled target images. Each
criterion below is a risk estimate; lower is better.

- `source-risk`: the error on the held-out source images. Cheap, but blind to
  the target: it favours models that fit the source, adapted or not.
- `dev`: Deep Embedded Validation. A logistic domain classifier on the
  model's features estimates the density ratio w(x) = p_t(x) / p_s(x); the
  source validation errors are importance-weighted by it, with a control
  variate that cancels most of the weights' variance. An estimate of the
  target error.
- `reverse-validation`: the candidate pseudo-labels the target train images;
  a reverse model is trained by the same algorithm with those pseudo-labelled
  target images as its source and the source train images as its unlabelled
  target; its error on the held-out source images is the score. A candidate
  whose target labels are consistent with the source scores low.

The first part of this module is generic (numpy and scikit-learn, for any
classifier); `score_state` applies the criteria to a trained DANN state.

References: reverse validation, Ganin et al., JMLR 17 (2016), Sec. 5.1.2
(after Zhong et al., ECML PKDD 2010); DEV, You, Wang, Long & Wang, "Towards
Accurate Model Selection in Deep Unsupervised Domain Adaptation", ICML 2019,
Eq. (8)-(10).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

CRITERIA = ("reverse-validation", "source-risk", "dev")


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


def selection_set(data, mean, *, max_train: int = 5000, max_target: int = 10_000, seed: int = 0) -> SelectionSet:
  """The label-free view of a `dann_jax.pair_data.PairData` (target labels dropped).

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
  pick = lambda n, k: np.sort(rng.permutation(n)[:k])
  si = pick(len(data.source_train), max_train)
  ti = pick(len(data.target_train), max_target)
  return SelectionSet(
    source_train=data.source_train.images[si],
    source_val_images=data.source_val.images,
    source_val_labels=data.source_val.labels,
    target_images=data.target_train.images[ti],
    mean=np.asarray(mean),
  )


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
    seed: seed of the reverse model and the density-ratio classifier.
  """
  from dann_jax.evaluation import features

  check_criterion(criterion)
  val_logits = features(state, view.source_val_images, view.mean, "logits")
  if criterion == "source-risk":
    return source_risk(val_logits, view.source_val_labels)
  if criterion == "dev":
    src = features(state, view.source_train, view.mean, "features")
    tgt = features(state, view.target_images, view.mean, "features")
    val = features(state, view.source_val_images, view.mean, "features")
    weights = density_ratio(src, tgt, val, seed=seed)
    return dev_risk(zero_one_losses(val_logits, view.source_val_labels), weights)
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
