"""Training health read from the logged training metrics alone: has a run collapsed?

An adversarial run can collapse: the feature extractor and the domain
classifier push each other's weights up until the extractor's ReLUs die, its
features become constant, and the label predictor can do no better than the
class prior. The source label loss then jumps back to chance, ln(classes),
and stays there; the domain classifier sits at ln 2. Such a model's target
accuracy is chance, and its features are trivially "aligned" (a proxy
A-distance near 0), so the collapse has to be named beside any number drawn
from it.

The test reads only the label loss on the labelled training rows (source rows;
target rows for train-on-target), as logged per chunk in `metrics.jsonl`, so
it uses no target label and may be used to choose (e.g. to skip a collapsed
seed's features in a figure).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

LEARNED = 0.5  # the loss once fell below this fraction of chance: it had learned
AT_CHANCE = 0.9  # a loss at or above this fraction of chance is back at chance


def collapse_step(steps: Sequence[int], label_losses: Sequence[float], num_classes: int) -> int | None:
  """The step from which a run's label loss stayed at chance, or None.

  A run has collapsed when its logged label loss, having once fallen below
  `LEARNED` x ln(num_classes), is at or above `AT_CHANCE` x ln(num_classes) in
  every row from some row to the last. A loss that recovers before the last
  row is not a collapse; neither is a run that never learned.

  Args:
    steps: the step of each logged row, increasing.
    label_losses: the training label loss of each row (one seed).
    num_classes: the number of classes (chance loss is ln(num_classes)).

  Returns:
    The step of the first row of the final at-chance stretch, or None.

  Raises:
    ValueError: mismatched lengths, or fewer than two classes.
  """
  if num_classes < 2:
    raise ValueError(f"{num_classes=} must be at least 2: chance loss is ln(num_classes)")
  losses = np.asarray(label_losses, dtype=np.float64)
  if losses.shape != (len(steps),):
    raise ValueError(f"got {len(steps)} steps and label losses of shape {losses.shape}; give one loss per step")
  chance = math.log(num_classes)
  at_chance = ~(losses < AT_CHANCE * chance)  # a NaN loss counts as at chance
  if losses.size == 0 or not at_chance[-1]:
    return None
  fine = np.flatnonzero(~at_chance)
  first = 0 if fine.size == 0 else fine[-1] + 1
  if not np.any(losses[:first] < LEARNED * chance):
    return None
  return int(steps[first])


def collapse_steps(history: Sequence[Mapping], num_classes: int) -> list[int | None]:
  """`collapse_step` of each seed of a run's logged metrics.

  Args:
    history: the rows of `metrics.jsonl`, each with `step` and `label_loss`
      (a number, or a list with one entry per seed).
    num_classes: the number of classes.

  Returns:
    One entry per seed (one for a single-seed run): the collapse step or None.
  """
  if not history:
    return [None]
  steps = [row["step"] for row in history]
  losses = np.asarray([np.atleast_1d(row["label_loss"]) for row in history], dtype=np.float64)
  return [collapse_step(steps, losses[:, s], num_classes) for s in range(losses.shape[1])]
