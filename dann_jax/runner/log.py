"""What a run writes while it trains: metrics rows, evaluations, checkpoints, the label-free best, the progress bar.

`RunLog` is the loop's per-chunk callback (`dann_jax.training.loop.fit(callback=...)`); with a TensorBoard folder it also
writes every step's metrics there (`dann_jax.training.tensorboard`), and `metrics.jsonl` stays the record.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dann_jax.core.train import TrainState
from dann_jax.data import Domain
from dann_jax.io import write_text_atomic
from dann_jax.runner.folder import read_metrics
from dann_jax.runner.presets import RunConfig
from dann_jax.training import checkpoint, guard
from dann_jax.training.evaluation import accuracy


def labelled(domain: Domain) -> Domain | None:
  """The images of `domain` whose label is known (all of a built-in
  domain's), or None when none is."""
  known = np.asarray(domain.labels) >= 0
  if known.all():
    return domain
  if not known.any():
    return None
  return dataclasses.replace(domain, images=domain.images[known], labels=domain.labels[known])


def evaluation_sample(domain: Domain | None, size: int) -> Domain | None:
  """`size` images of `domain` drawn once with a fixed seed (all when it has no more), in their order:
  spread over the whole set, where a folder's files come sorted by class."""
  if domain is None or len(domain.labels) <= size:
    return domain
  index = np.sort(np.random.default_rng(0).choice(len(domain.labels), size, replace=False))
  return dataclasses.replace(domain, images=domain.images[index], labels=domain.labels[index])


def per_seed(x) -> float | list[float]:
  x = np.asarray(x, np.float64)
  return float(x) if x.ndim == 0 else [float(v) for v in x]


def accuracy_stats(x) -> dict[str, Any]:
  """Mean, std and per-seed values of per-seed numbers."""
  x = np.atleast_1d(np.asarray(x, np.float64))
  return {"mean": float(x.mean()), "std": float(x.std()), "per_seed": [float(v) for v in x]}


@dataclasses.dataclass(frozen=True)
class EvalSets:
  """The labelled test images a run is scored on (None: none is labelled)."""

  target: Domain | None
  source: Domain | None


def accuracy_stats_on(state: TrainState, test: Domain | None, mean) -> dict[str, Any] | None:
  if test is None:
    return None
  return accuracy_stats(accuracy(state, test.images, test.labels, mean))


def test_accuracies(state: TrainState, evals: EvalSets, mean) -> dict[str, Any]:
  """Accuracies of `state` on the whole labelled test sets."""
  return {
    "target_accuracy": accuracy_stats_on(state, evals.target, mean),
    "source_accuracy": accuracy_stats_on(state, evals.source, mean),
  }


class RunLog:
  """The loop's per-chunk callback: metrics.jsonl rows, evaluations on
  `eval_size` test images every `eval_every` steps, the label-free selection
  score and best state (`keep_best`), checkpoints, and the progress bar."""

  def __init__(
    self,
    config: RunConfig,
    out: Path,
    start: int,
    evals: EvalSets,
    mean: np.ndarray,
    as_linen: Callable[[Any], TrainState],
    scorer: Callable[[TrainState], float] | None,
    *,
    write: bool,
    progress: bool,
    guard: tuple[float, int] | None = None,
    tensorboard=None,
  ):
    self.config, self.out, self.evals, self.mean = config, out, evals, mean
    size = config.eval_size
    self.sample = EvalSets(evaluation_sample(evals.target, size), evaluation_sample(evals.source, size))
    self.guard = guard  # (chance loss, patience) of the label loss the guard watches
    self.tensorboard = tensorboard  # a dann_jax.training.tensorboard.RunWriter, or None
    self.as_linen, self.scorer, self.write = as_linen, scorer, write
    self.metrics_path = out / "metrics.jsonl"
    self.history = read_metrics(self.metrics_path, upto=start)
    if write:
      write_text_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in self.history))
    scored = [r for r in self.history if "selection" in r]
    best = min(scored, key=lambda r: r["selection"], default=None)
    self.best = None if best is None else (best["selection"], best["step"])
    self.last_target = None
    self.bar = None
    if progress:
      from tqdm.auto import tqdm

      total, name = config.train.total_steps, f"{config.method} {config.pair.name}"
      self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, desc=name)

  def __call__(self, state, metrics: dict[str, np.ndarray]) -> None:
    state = self.as_linen(state)
    step = int(np.asarray(state.step).reshape(-1)[0])
    row = {"step": step}
    for k, v in metrics.items():  # (steps,) or (steps, seeds)
      row[k] = per_seed(np.mean(v, axis=0))
    if self.guard is not None:
      rows = self.history + [row]
      chance, patience = self.guard
      broke = guard.collapse_start([r["step"] for r in rows], [r["label_loss"] for r in rows], chance, patience)
      if broke is not None:
        raise guard.Tripped(broke, "collapse")
    if self.tensorboard is not None:
      self.tensorboard.steps(step - len(metrics["loss"]), metrics)
    if step % self.config.eval_every == 0 or step == self.config.train.total_steps:
      self._evaluate(state, step, row)
      if self.tensorboard is not None:
        evaluated = ("target_accuracy", "source_accuracy", "selection")
        self.tensorboard.evaluation(step, {k: row[k] for k in evaluated if k in row})
    self.history.append(row)
    if self.write:
      with self.metrics_path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    if self.bar is not None:
      self.bar.update(len(metrics["loss"]))
      shown = {"Ly": "label_loss", "Ld": "domain_loss", "dacc": "domain_accuracy", "lam": "lambda"}
      postfix = {short: np.mean(row[key]) for short, key in shown.items() if key in row}
      if self.last_target is not None:
        postfix["tgt"] = self.last_target
      self.bar.set_postfix({k: f"{v:.3f}" for k, v in postfix.items()}, refresh=False)

  def _evaluate(self, state: TrainState, step: int, row: dict[str, Any]) -> None:
    for key, test in (("target_accuracy", self.sample.target), ("source_accuracy", self.sample.source)):
      if test is not None:
        row[key] = per_seed(accuracy(state, test.images, test.labels, self.mean))
    if "target_accuracy" in row:
      self.last_target = np.mean(row["target_accuracy"])
    if self.scorer is not None:
      row["selection"] = self.scorer(state)
      if self.best is None or row["selection"] < self.best[0]:
        checkpoint.save_checkpoint(self.out / "best", state)
        self.best = (row["selection"], step)
    checkpoint.save_checkpoint(self.out / "checkpoint", state, max_to_keep=None)

  def rewind(self, step: int) -> None:
    """Forgets the rows after `step` (the guard sent the run back there), and a
    label-free best scored after it: the best is again the best row kept."""
    self.history = [r for r in self.history if r["step"] <= step]
    if self.write:
      write_text_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in self.history))
    if self.best is not None and self.best[1] > step:
      kept = min((r for r in self.history if "selection" in r), key=lambda r: r["selection"], default=None)
      self.best = None if kept is None else (kept["selection"], kept["step"])
      if self.write and kept is None:
        shutil.rmtree(self.out / "best", ignore_errors=True)
      elif self.write:
        checkpoint.copy_step(self.out / "checkpoint", kept["step"], self.out / "best")
    if self.bar is not None:
      self.bar.n = step
      self.bar.refresh()

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
