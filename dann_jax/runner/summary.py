"""A finished run's summary.json: accuracies, collapses (`dann_jax.training.health`), the machine, and what the run was."""

from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax

from dann_jax.core import methods
from dann_jax.core.train import TrainState
from dann_jax.data.pair_data import PairData
from dann_jax.runner.log import RunLog, accuracy_stats_on, test_accuracies
from dann_jax.runner.presets import RunConfig
from dann_jax.training import checkpoint
from dann_jax.training.health import chance_loss, collapse_steps

# summary.json's provenance keys and the splits they describe
_PROVENANCE_SPLITS = {
  "source": "source_train",
  "target": "target_train",
  "source_test": "source_test",
  "target_test": "target_test",
}


def machine_description() -> str:
  devices = jax.devices()
  processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
  return (
    f"{platform.machine()} {os.cpu_count()} cores, "
    f"{len(devices)} x {devices[0].device_kind} ({jax.default_backend()})"
    f"{processes}, jax {jax.__version__}"
  )


def collapsed_at_steps(history: Sequence[Mapping], method: str, data: PairData, num_seeds: int) -> list[int | None]:
  """Per seed, the step a run with these metrics rows collapsed at (`dann_jax.training.health`), or None; chance is
  measured on the labels the method trains on."""
  trained = data.target_train if methods.get(method).labelled == "target" else data.source_train
  return collapse_steps(history, chance_loss(trained.labels), num_seeds)


def summarise(
  config: RunConfig, prep, out: Path, log: RunLog, state: TrainState, *, train_seconds: float
) -> dict[str, Any]:
  """summary.json: the final (and label-free best) state's accuracies, and how the run went.

  Args:
    config: the run.
    prep: the prepared run (`dann_jax.runner.prepare.Prepared`): identity, data, evaluation sets, mean, first step, guard events.
    out: the run folder (its `best/` checkpoint, with `config.keep_best`).
    log: the run's `RunLog` (its metrics rows and label-free best).
    state: the final state.
    train_seconds: the wall time of training.
  """
  pair, method, data, evals, mean = config.pair, config.method, prep.data, prep.evals, prep.mean
  summary = {
    **prep.identity,
    **test_accuracies(state, evals, mean),
    "source_val_size": 0 if data.source_val is None else len(data.source_val),
    "source_val_accuracy": accuracy_stats_on(state, data.source_val, mean),
    "target_test_size": 0 if evals.target is None else len(evals.target),
    "paper_v1": (pair.paper or {}).get(method),
    "paper_icml": (pair.paper_icml or {}).get(method),
    "train_seconds": train_seconds,
    "steps_run": config.train.total_steps - prep.start,
    "collapsed_at_step": collapsed_at_steps(log.history, method, data, len(config.seeds)),
    "machine": machine_description(),
    "note": config.note,
    "config": dataclasses.asdict(config.train),
    "network": config.network,
    "provenance": {key: getattr(data, split).provenance for key, split in _PROVENANCE_SPLITS.items()},
  }
  if config.guard is not None:
    summary["guard"] = {"config": dataclasses.asdict(config.guard), "events": prep.guard_events}
  if config.keep_best is not None:
    score, best_step = log.best
    best_state = checkpoint.restore_checkpoint(out / "best", state)
    summary["best"] = {
      "criterion": config.keep_best,
      "step": best_step,
      "score": score,
      "final_score": log.history[-1]["selection"],
      **test_accuracies(best_state, evals, mean),
    }
  return summary
