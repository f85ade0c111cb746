"""Collapse detection from the logged label loss: closed-form cases."""

import math

import numpy as np
import pytest

from dann_jax.training.health import chance_loss, collapse_step, collapse_steps

CHANCE = math.log(10)
STEPS = list(range(100, 1100, 100))


def test_a_loss_that_returns_to_chance_and_stays_names_the_first_step_there():
  losses = [2.2, 1.0, 0.2, 0.1, 0.08, 4.4, 2.30, 2.31, 2.30, 2.30]
  assert collapse_step(STEPS, losses, CHANCE) == 600


def test_a_spike_that_recovers_is_not_a_collapse():
  losses = [2.2, 1.0, 0.2, 0.1, 4.4, 2.30, 2.30, 0.5, 0.2, 0.1]
  assert collapse_step(STEPS, losses, CHANCE) is None


def test_a_run_that_never_learned_is_not_a_collapse():
  # 0.6 x chance at best: above the "learned" bar of 0.5 x chance
  losses = [CHANCE, 0.6 * CHANCE, 0.6 * CHANCE] + [CHANCE] * 7
  assert collapse_step(STEPS, losses, CHANCE) is None


def test_the_thresholds_are_fractions_of_ln_classes():
  chance = math.log(2)
  learned, at_chance = 0.5 * chance, 0.9 * chance
  just_below = [1.0, learned - 1e-6, at_chance, at_chance]
  assert collapse_step([1, 2, 3, 4], just_below, chance) == 3
  assert collapse_step([1, 2, 3, 4], [1.0, learned + 1e-6, at_chance, at_chance], chance) is None
  assert collapse_step([1, 2, 3, 4], [1.0, 0.1, at_chance - 1e-6, at_chance], chance) == 4


def test_a_nan_loss_counts_as_at_chance():
  assert collapse_step([1, 2, 3], [1.0, 0.1, float("nan")], CHANCE) == 3


def test_healthy_and_empty_runs():
  assert collapse_step(STEPS, np.linspace(2.3, 0.01, 10), CHANCE) is None
  assert collapse_step([], [], CHANCE) is None
  assert collapse_steps([], CHANCE, num_seeds=3) == [None, None, None]


def test_per_seed_rows_are_read_per_seed():
  healthy = np.linspace(2.3, 0.05, 10)
  collapsed = [2.2, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 2.3, 2.3, 2.3]
  rows = [{"step": s, "label_loss": [float(a), float(b)]} for s, a, b in zip(STEPS, healthy, collapsed)]
  assert collapse_steps(rows, CHANCE, 2) == [None, 800]
  single = [{"step": s, "label_loss": float(b)} for s, b in zip(STEPS, collapsed)]
  assert collapse_steps(single, CHANCE, 1) == [800]
  with pytest.raises(ValueError, match="the metrics hold 1 seed"):
    collapse_steps(single, CHANCE, 2)


def test_chance_is_the_entropy_of_the_class_frequencies():
  assert chance_loss(np.arange(1000) % 10) == pytest.approx(CHANCE)
  labels = np.array([0] * 90 + [1] * 10 + [-1] * 50)  # unknown labels (-1) are ignored
  assert chance_loss(labels) == pytest.approx(-(0.9 * math.log(0.9) + 0.1 * math.log(0.1)))
  # unbalanced classes: a prior-only predictor's loss (0.325) is far under 0.9 ln 2 and is still caught
  chance = chance_loss(labels)
  assert collapse_step([1, 2, 3], [0.6, 0.05, chance], chance) == 3
  with pytest.raises(ValueError, match="at least two classes"):
    chance_loss(np.array([3, 3, -1]))


@pytest.mark.parametrize(
  "steps, losses, chance, message",
  [([1, 2], [0.1], CHANCE, "one loss per step"), ([1], [0.1], 0.0, "chance=0.0 must be > 0")],
)
def test_bad_arguments_are_one_clear_error(steps, losses, chance, message):
  with pytest.raises(ValueError, match=message):
    collapse_step(steps, losses, chance)
