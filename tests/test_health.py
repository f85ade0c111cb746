"""Collapse detection from the logged label loss: closed-form cases."""

import math

import numpy as np
import pytest

from dann_jax.health import collapse_step, collapse_steps

CHANCE = math.log(10)
STEPS = list(range(100, 1100, 100))


def test_a_loss_that_returns_to_chance_and_stays_names_the_first_step_there():
  losses = [2.2, 1.0, 0.2, 0.1, 0.08, 4.4, 2.30, 2.31, 2.30, 2.30]
  assert collapse_step(STEPS, losses, 10) == 600


def test_a_spike_that_recovers_is_not_a_collapse():
  losses = [2.2, 1.0, 0.2, 0.1, 4.4, 2.30, 2.30, 0.5, 0.2, 0.1]
  assert collapse_step(STEPS, losses, 10) is None


def test_a_run_that_never_learned_is_not_a_collapse():
  # 0.6 x chance at best: above the "learned" bar of 0.5 x chance
  losses = [CHANCE, 0.6 * CHANCE, 0.6 * CHANCE] + [CHANCE] * 7
  assert collapse_step(STEPS, losses, 10) is None


def test_the_thresholds_are_fractions_of_ln_classes():
  learned, at_chance = 0.5 * math.log(2), 0.9 * math.log(2)
  just_below = [1.0, learned - 1e-6, at_chance, at_chance]
  assert collapse_step([1, 2, 3, 4], just_below, 2) == 3
  assert collapse_step([1, 2, 3, 4], [1.0, learned + 1e-6, at_chance, at_chance], 2) is None
  assert collapse_step([1, 2, 3, 4], [1.0, 0.1, at_chance - 1e-6, at_chance], 2) == 4


def test_a_nan_loss_counts_as_at_chance():
  assert collapse_step([1, 2, 3], [1.0, 0.1, float("nan")], 10) == 3


def test_healthy_and_empty_runs():
  assert collapse_step(STEPS, np.linspace(2.3, 0.01, 10), 10) is None
  assert collapse_step([], [], 10) is None
  assert collapse_steps([], 10) == [None]


def test_per_seed_rows_are_read_per_seed():
  healthy = np.linspace(2.3, 0.05, 10)
  collapsed = [2.2, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 2.3, 2.3, 2.3]
  rows = [{"step": s, "label_loss": [float(a), float(b)]} for s, a, b in zip(STEPS, healthy, collapsed)]
  assert collapse_steps(rows, 10) == [None, 800]
  single = [{"step": s, "label_loss": float(b)} for s, b in zip(STEPS, collapsed)]
  assert collapse_steps(single, 10) == [800]


@pytest.mark.parametrize(
  "steps, losses, classes, message",
  [([1, 2], [0.1], 10, "one loss per step"), ([1], [0.1], 1, "num_classes=1 must be at least 2")],
)
def test_bad_arguments_are_one_clear_error(steps, losses, classes, message):
  with pytest.raises(ValueError, match=message):
    collapse_step(steps, losses, classes)
