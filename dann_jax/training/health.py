"""Training health read from the logged training metrics: has a run collapsed?

An adversarial run can blow up: within a few steps the weights jump, the
hidden ReLUs of the label predictor die, and its predictions become constant.
The training label loss then goes back to chance (the entropy of the class
frequencies, ln(classes) for balanced classes) and stays there; the target
accuracy is chance too. Nothing is non-finite, so training runs on to the
end, and the run's features are no longer those of an adapted model.

The test reads only the label loss logged per chunk in `metrics.jsonl`, on the
rows the run trains its labels on: source rows, so no target label, for
source-only and DANN (the target rows for train-on-target, which trains on
target labels anyway).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

LEARNED = 0.5  # the loss once fell below this fraction of chance: it had learned
AT_CHANCE = 0.9  # a loss at or above this fraction of chance is back at chance


def chance_loss(labels: np.ndarray) -> float:
  """The cross-entropy of always predicting the class frequencies of `labels`.

  Args:
    labels: the (N,) integer labels trained on; negative entries (unknown
      labels) are ignored.

  Returns:
    The entropy of the label frequencies, in nats (ln(classes) when balanced).

  Raises:
    ValueError: no label is known, or all known labels are one class.
  """
  labels = np.asarray(labels)
  counts = np.bincount(labels[labels >= 0])
  p = counts[counts > 0] / max(counts.sum(), 1)
  if p.size < 2:
    raise ValueError(f"the labels hold {p.size} class(es); chance loss needs labels of at least two classes")
  return float(-np.sum(p * np.log(p)))


def collapse_step(steps: Sequence[int], label_losses: Sequence[float], chance: float) -> int | None:
  """The step from which a run's label loss stayed at chance, or None.

  A run has collapsed when its logged label loss, having once fallen below
  `LEARNED` x `chance`, is at or above `AT_CHANCE` x `chance` in every row
  from some row to the last. A loss that recovers before the last row is not a
  collapse; neither is a run that never learned.

  Args:
    steps: the step of each logged row, increasing.
    label_losses: the training label loss of each row (one seed); a NaN
      counts as at chance.
    chance: the loss of predicting the class frequencies (`chance_loss`).

  Returns:
    The step of the first row of the final at-chance stretch, or None.

  Raises:
    ValueError: mismatched lengths, or `chance` not positive.
  """
  if not chance > 0:
    raise ValueError(f"{chance=} must be > 0: the entropy of at least two classes' frequencies")
  losses = np.asarray(label_losses, dtype=np.float64)
  if losses.shape != (len(steps),):
    raise ValueError(f"got {len(steps)} steps and label losses of shape {losses.shape}; give one loss per step")
  at_chance = ~(losses < AT_CHANCE * chance)
  if losses.size == 0 or not at_chance[-1]:
    return None
  fine = np.flatnonzero(~at_chance)
  first = 0 if fine.size == 0 else fine[-1] + 1
  if not np.any(losses[:first] < LEARNED * chance):
    return None
  return int(steps[first])


def collapse_steps(history: Sequence[Mapping], chance: float, num_seeds: int) -> list[int | None]:
  """`collapse_step` of each seed of a run's logged metrics.

  Args:
    history: the rows of `metrics.jsonl`, each with `step` and `label_loss`
      (a number, or a list with one entry per seed).
    chance: the loss of predicting the class frequencies (`chance_loss`).
    num_seeds: the run's number of seeds.

  Returns:
    One entry per seed: the collapse step or None.

  Raises:
    ValueError: the rows hold another number of seeds.
  """
  if not history:
    return [None] * num_seeds
  steps = [row["step"] for row in history]
  losses = np.asarray([np.atleast_1d(row["label_loss"]) for row in history], dtype=np.float64)
  if losses.shape[1] != num_seeds:
    raise ValueError(f"the metrics hold {losses.shape[1]} seed(s) per row, not {num_seeds=}")
  return [collapse_step(steps, losses[:, s], chance) for s in range(num_seeds)]
