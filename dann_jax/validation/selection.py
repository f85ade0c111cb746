"""Label-free model selection: rank trained models without any target label.

Unsupervised adaptation has no labelled target data to validate on, so
hyper-parameters, checkpoints and seeds must be chosen from what training is
allowed to see: labelled source images held out of training (`source_val`, a
split of source *train*, never a test set) and unlabelled target images.

The validators (`dann_jax.validation.validators`) are pure functions of a model's outputs
on those images; this module builds the label-free view of a pair
(`selection_set`), runs a trained state over it (`model_outputs`,
`score_state`, which also trains reverse validation's model), and measures
validators against target accuracy where a benchmark has target labels
(`weighted_spearman`, `leave_one_out_choice`).

How well each tracks target accuracy on this library's own pairs is measured
by experiments/selection/validator_bench.py
(experiments/results/selection/validators.md).

References: reverse validation, Ganin et al., JMLR 17 (2016), Sec. 5.1.2;
the weighted Spearman benchmark, Musgrave, Belongie & Lim, "Three New
Validators and a Large-Scale Benchmark Ranking for Unsupervised Domain
Adaptation", 2022.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dann_jax.names import CRITERIA, DEFAULT_CRITERION
from dann_jax.validation.validators import (
  OUTPUT_VALIDATORS,
  Outputs,
  batch_nuclear_norm,
  check_criterion,
  class_ami,
  class_share_drift,
  density_ratio,
  dev_risk,
  information_maximization,
  normalized_dev_risk,
  prediction_entropy,
  reverse_validation_risk,
  score_outputs,
  soft_neighbourhood_density,
  softmax,
  source_risk,
  zero_one_losses,
)

# What users import from here: the validators, and this module's own names.
__all__ = [
  "CLASS_SHARES",
  "CRITERIA",
  "DEFAULT_CRITERION",
  "NEEDS",
  "OUTPUT_VALIDATORS",
  "Outputs",
  "SelectionSet",
  "batch_nuclear_norm",
  "check_criterion",
  "class_ami",
  "class_share_drift",
  "density_ratio",
  "dev_risk",
  "information_maximization",
  "leave_one_out_choice",
  "model_outputs",
  "normalized_dev_risk",
  "prediction_entropy",
  "reverse_validation_risk",
  "score_outputs",
  "score_state",
  "selection_set",
  "soft_neighbourhood_density",
  "softmax",
  "source_risk",
  "weighted_spearman",
  "zero_one_losses",
]

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
  """The label-free view of a `dann_jax.data.pair_data.PairData` (target labels dropped).

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


# `class_share_drift`: not a validator (adapt's class-share check and report read it), but `model_outputs` serves it.
CLASS_SHARES = "class-share-drift"
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
  CLASS_SHARES: ("target_logits",),
}


def model_outputs(state, view: SelectionSet, criteria=None) -> Outputs:
  """The `Outputs` of a single-seed train state on `view`: the fields that
  `criteria` read (default: every field)."""
  from dann_jax.training.evaluation import features

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
    state: a `dann_jax.core.train.TrainState` without a seeds axis.
    view: the label-free data (`selection_set`).
    criterion: one of `CRITERIA`.
    reverse_config: the `TrainConfig` of the reverse model (reverse
      validation only); its `total_steps` is replaced by `reverse_steps`.
    reverse_model: the untrained Flax module of the reverse model (the
      candidate's architecture).
    reverse_steps: training steps of the reverse model.
    seed: seed of the reverse model, the density-ratio classifier and k-means.
  """
  from dann_jax.training.evaluation import features

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

  from dann_jax.core.train import create_train_state
  from dann_jax.data import make_domain_pair
  from dann_jax.training.evaluation import features
  from dann_jax.training.loop import fit

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
