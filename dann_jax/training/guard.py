"""A label-free guard against a collapsing or diverging adversarial game.

DANN's min-max game can break: the loss becomes non-finite, or within a few
steps the label predictor's hidden units die and its training label loss goes
back to chance (`dann_jax.training.health`). Both show in what a run may watch
without target labels: the loss, and the label loss on the *source* rows it
trains on. The guard watches each logged chunk; when the game breaks it sends
the run back to its last checkpoint from before the break and continues with
a weaker adaptation factor (λ_p times `shrink`, again at each new break;
after `max_recoveries` breaks, λ = 0: source-only training from there on).
Every recovery is an event in the run folder's `guard.json` and summary. A
break no weaker λ can mend (at λ = 0, or in a method without a domain loss)
ends the run with `Unrecoverable`.

The thresholds are `dann_jax.training.health`'s (a loss that once fell below half of
chance has learned; at or above 0.9 of chance it is back at chance), and a
break is `patience` consecutive chunks at chance: all fixed before any run
was guarded, none read from target labels.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import optax

from dann_jax.training.health import AT_CHANCE, LEARNED


@dataclasses.dataclass(frozen=True)
class GuardConfig:
  """How the guard judges and recovers.

  Attributes:
    patience: consecutive logged chunks with the label loss at chance that
      make a collapse.
    shrink: the factor λ_p is multiplied by at each recovery, in (0, 1).
    max_recoveries: recoveries with a weaker λ; the next break sets λ = 0.
  """

  patience: int = 2
  shrink: float = 0.5
  max_recoveries: int = 3

  def __post_init__(self):
    if not (isinstance(self.patience, int) and self.patience >= 1):
      raise ValueError(f"patience={self.patience!r} must be an integer >= 1")
    if not 0 < self.shrink < 1:
      raise ValueError(f"shrink={self.shrink!r} must be in (0, 1)")
    if not (isinstance(self.max_recoveries, int) and self.max_recoveries >= 0):
      raise ValueError(f"max_recoveries={self.max_recoveries!r} must be an integer >= 0")


class Tripped(Exception):
  """The guard saw the game break; raised from the run's per-chunk callback.

  Attributes:
    step: where the break shows: the end of the first chunk at chance, or
      the first non-finite step; a checkpoint from before it is healthy.
    reason: "collapse" or "diverged".
  """

  def __init__(self, step: int, reason: str):
    super().__init__(f"{reason} at step {step}")
    self.step, self.reason = step, reason


class Unrecoverable(FloatingPointError):
  """The game broke where a weaker λ cannot help: λ was already 0, or the
  method has no domain loss (its replay from a checkpoint breaks the same way).

  A `FloatingPointError`, like a divergence: the run failed; its arguments
  were valid.

  Attributes:
    step, reason: as `Tripped`'s.
  """

  def __init__(self, step: int, reason: str):
    super().__init__(
      f"the run's label loss went back to chance ({reason}) at step {step} where the guard cannot weaken lambda "
      "any further; training stopped. Lower the learning rate"
    )
    self.step, self.reason = step, reason

  def __reduce__(self):
    return type(self), (self.step, self.reason)


def collapse_start(steps: Sequence[int], label_losses: Sequence[float], chance: float, patience: int) -> int | None:
  """The step where the label loss went back to chance for `patience` chunks in a row, or None.

  Online, unlike `dann_jax.training.health.collapse_step` (which needs the whole run):
  the loss must first have learned (fallen below `LEARNED` x `chance`); then
  the first stretch of `patience` consecutive rows at or above `AT_CHANCE` x
  `chance` (a NaN counts as at chance) is a collapse, and its first row's step
  is returned.

  Args:
    steps: the step of each logged row (the end of its chunk), increasing.
    label_losses: the training label loss of each row.
    chance: the loss of predicting the class frequencies.
    patience: rows at chance that make a collapse.
  """
  if len(steps) != len(label_losses):
    raise ValueError(f"got {len(steps)} steps and {len(label_losses)} label losses; give one loss per step")
  learned, streak = False, 0
  for i, loss in enumerate(label_losses):
    at_chance = not loss < AT_CHANCE * chance
    if learned and at_chance:
      streak += 1
      if streak == patience:
        return int(steps[i - patience + 1])
    else:
      streak = 0
    learned = learned or loss < LEARNED * chance
  return None


def lambda_scale(recoveries: int, config: GuardConfig) -> float:
  """The factor on λ_p after `recoveries` recoveries: shrink ** n, then 0."""
  if recoveries > config.max_recoveries:
    return 0.0
  return config.shrink**recoveries


def scaled(schedule: optax.Schedule, scale: float) -> optax.Schedule:
  """`schedule` times `scale` (the schedule itself when `scale` is 1)."""
  if scale == 1.0:
    return schedule
  if not (scale >= 0 and math.isfinite(scale)):
    raise ValueError(f"{scale=} must be a finite number >= 0")
  return lambda count: scale * schedule(count)
