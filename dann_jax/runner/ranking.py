"""Ranking run folders, and the checkpoints along them, by a label-free criterion.

Each candidate (a run's seed at a checkpointed step) is scored by one
`dann_jax.validation.selection` criterion, which reads source labels and unlabelled
target images only. Target test accuracy is computed beside the score for
reporting; it never enters the ranking.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from dann_jax.core import networks
from dann_jax.runner.presets import config_of
from dann_jax.runner.runs import REVERSE_STEPS, load_run
from dann_jax.training import checkpoint
from dann_jax.training.evaluation import accuracy
from dann_jax.training.loop import seed_states
from dann_jax.validation import selection


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One scored candidate."""

  run: str
  seed: int
  step: int
  score: float
  target_accuracy: float | None  # reported only; None: no labelled target test image


def score_runs(
  run_dirs: Sequence[str | os.PathLike],
  criterion: str,
  *,
  along_run: bool = False,
  reverse_steps: int = REVERSE_STEPS,
  data_dir=None,
  progress=print,
) -> list[Candidate]:
  """Scores every run (every seed; with `along_run`, every checkpoint).

  Args:
    run_dirs: folders written by `dann_jax.runner.runs.train_run`, on one pair.
    criterion: one of `dann_jax.validation.selection.CRITERIA`.
    along_run: score each checkpointed step, not only the last.
    reverse_steps: steps of the reverse model (reverse validation).
    data_dir: the data cache folder.
    progress: called with one line per scored candidate (None: silent).

  Returns:
    The candidates, best (lowest score) first (a NaN score last).

  Raises:
    ValueError: unknown criterion, runs on different pairs, or a run
      trained without a held-out source split.
  """
  selection.check_criterion(criterion)
  if not run_dirs:
    raise ValueError("give at least one run folder")
  data, pair_name, out = None, None, []
  for run_dir in map(Path, run_dirs):
    result = load_run(run_dir, data=data, data_dir=data_dir)
    identity = result.identity
    if pair_name not in (None, identity["pair"]):
      raise ValueError(f"{run_dir} is on {identity['pair']}, the others on {pair_name}; rank runs of one pair")
    pair_name = identity["pair"]
    # load_run gives the data with this run's held-out split; later runs reuse
    # the loaded images.
    data = run_data = result.data
    if run_data.source_val is None:
      raise ValueError(
        f"{run_dir} was trained on all source images (no held-out "
        "validation split), so no label-free criterion can score it; "
        "retrain it with a source holdout (the quick preset has one)"
      )
    config = config_of(identity)
    view = selection.selection_set(run_data, result.mean)
    steps = checkpoint.all_steps(run_dir / "checkpoint") if along_run else [None]
    for step in steps:
      state = (
        result.state if step is None else checkpoint.restore_checkpoint(run_dir / "checkpoint", result.state, step)
      )
      for seed, single in zip(identity["seeds"], seed_states(state)):
        score = selection.score_state(
          single,
          view,
          criterion,
          reverse_config=config.train,
          reverse_model=networks.build(config.network, run_data.source_train.num_classes),
          reverse_steps=reverse_steps,
          seed=seed,  # each seed's reverse model (and density ratio, k-means) seeded by the run's seed
        )
        known = np.asarray(run_data.target_test.labels) >= 0
        acc = (
          float(accuracy(single, run_data.target_test.images[known], run_data.target_test.labels[known], result.mean))
          if known.any()
          else None
        )
        cand = Candidate(str(run_dir), seed, int(np.asarray(single.step)), float(score), acc)
        out.append(cand)
        if progress is not None:
          progress(f"{cand.run} seed {cand.seed} step {cand.step}: {criterion} {cand.score:.4f}")
  return sorted(out, key=lambda c: (np.isnan(c.score), c.score))
