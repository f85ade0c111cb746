"""One training run of a method on a domain pair: data, model, loop, logs, checkpoints, summary.

A run folder holds `run.json` (what was asked), `metrics.jsonl` (one line per
chunk of steps, with evaluations where they happened), `checkpoint/` (orbax),
`summary.json` and `curves.png`; a run whose loss became non-finite stops and
leaves `diverged.json` (the step) beside its checkpoints. `--resume` continues
from the checkpoint with the same numbers an uninterrupted run would give. A run trains through the
Linen front door (`dann_jax.core.train`) or the NNX one (`dann_jax.core.nnx`), with the
same numbers; run.json records which, and the checkpoints are Linen's either
way, so evaluation and selection read both alike.

`train_run` is three steps: `dann_jax.runner.prepare.prepare` (checks, data,
the starting or restored state), `_fit` (the loop, with the guard's
recoveries) and `dann_jax.runner.summary.summarise`; `load_run` (from
`dann_jax.runner.prepare`) reads a run folder back. The folder's files are
`dann_jax.runner.folder`'s; what is written while training, `dann_jax.runner.log`'s.

A pair may name a user's own data (`folder:PATH`, `npz:PATH`; see
`dann_jax.data.custom`): its split options are kept in `run.json`, so a run
folder reloads its data wherever it is read from; a target without labelled
test images has no target accuracy (reported as None).

With several processes (`dann_jax.backend.distributed`), every process calls
`train_run` with the same config and a runner over all of them: all load
the data (checked equal), train, evaluate and save checkpoints together, and
process 0 alone writes run.json, metrics.jsonl, summary.json and curves.png.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from dann_jax.core import methods
from dann_jax.core.train import TrainState
from dann_jax.data.pair_data import PairData
from dann_jax.data.pairs import PairSpec
from dann_jax.io import write_text_atomic
from dann_jax.runner.folder import DIVERGED, GUARD, check_finished_run, read_json_file, remove_run_files
from dann_jax.runner.log import RunLog
from dann_jax.runner.prepare import Prepared, RunResult, guarded_state, initial_state, load_run, prepare
from dann_jax.runner.presets import RunConfig, make_config
from dann_jax.runner.summary import summarise
from dann_jax.training import checkpoint, guard
from dann_jax.training.loop import Diverged, fit

# What users import from here: the entry points, and a run folder read back.
__all__ = ["REVERSE_STEPS", "RunResult", "load_run", "train_or_reuse", "train_pair", "train_run"]

# Training steps of the reverse model of reverse validation.
REVERSE_STEPS = 1000


def train_or_reuse(pair: PairSpec, method: str, out_dir, **kwargs) -> RunResult:
  """`train_pair`, unless `out_dir` already holds the finished run (then
  `load_run`); a run stopped midway is resumed from its checkpoint.

  Raises:
    ValueError: `out_dir` holds another run, finished or not (another pair,
      method, budget, overrides or guard), and as `train_pair`.
  """
  return train_pair(pair, method, out_dir=out_dir, reuse=True, **kwargs)


def train_pair(
  pair: PairSpec,
  method: str,
  *,
  out_dir: str | os.PathLike,
  preset: str = "quick",
  steps: int | None = None,
  batch_size: int | None = None,
  seeds: Sequence[int] = (0,),
  overrides: dict | None = None,
  source_holdout: int | None = None,
  keep_best: str | None = None,
  splits: Mapping[str, Any] | None = None,
  api: str = "linen",
  guard: Any = None,
  reuse: bool = False,
  **run_options,
) -> RunResult:
  """Trains `method` on `pair`: `train_run(make_config(...), ...)`.

  Args:
    pair, method, preset, steps, batch_size, seeds, overrides,
      source_holdout, keep_best, splits, api, guard: the run's configuration, as
      `dann_jax.runner.presets.make_config` takes them.
    out_dir: the run folder.
    reuse: load the run from `out_dir` if it finished there (after checking
      that it is this run), resume it if it started there (`train_or_reuse`).
    **run_options: the other arguments of `train_run` (resume, data,
      data_dir, progress, runner, plots, reverse_steps, tensorboard).

  Returns and raises: as `make_config` and `train_run`.
  """
  config = make_config(
    pair,
    method,
    preset,
    steps=steps,
    batch_size=batch_size,
    seeds=seeds,
    overrides=overrides,
    source_holdout=source_holdout,
    keep_best=keep_best,
    api=api,
    splits=splits,
    guard=guard,
  )
  out = Path(out_dir)
  if reuse:
    if (out / "summary.json").exists():
      check_finished_run(out, config.identity())
      return load_run(out, data=run_options.get("data"), data_dir=run_options.get("data_dir"))
    run_options["resume"] = (out / "run.json").exists()
  return train_run(config, out_dir=out, **run_options)


def train_run(
  config: RunConfig,
  *,
  out_dir: str | os.PathLike,
  resume: bool = False,
  data: PairData | None = None,
  data_dir=None,
  progress: bool = True,
  runner: Callable | None = None,
  plots: bool = True,
  reverse_steps: int = REVERSE_STEPS,
  tensorboard: str | os.PathLike | None = None,
) -> RunResult:
  """Trains the run `config` describes, writing logs, checkpoints and a summary.

  Several seeds are held as one state with a seeds axis (trained by
  `dann_jax.training.loop.default_runner`: one after the other on CPU, one vmapped
  program elsewhere) and are reported as mean +- std. With
  `config.keep_best`, every evaluation scores the state with that criterion
  (no target label is read) and the best-scoring state is kept in
  `out_dir/best` beside the final one; the summary reports both. With
  `config.api == "nnx"` the steps are taken by `dann_jax.core.nnx` (one seed, one
  device): both doors start from the same weights and batches and give the
  same numbers (dropout masks included: `dann_jax.core.nnx` bridges the same
  Linen network); a run resumes through the door it started
  with, and checkpoints and the returned state are Linen's either way.

  Args:
    config: the run (`dann_jax.runner.presets.make_config`).
    out_dir: the run folder (created; must not hold another run). Its
      run.json names the run and records `config.resolved()`.
    resume: continue the run in `out_dir` from its checkpoint.
    data: the pair's splits, if already loaded.
    data_dir: the data cache folder.
    progress: show a tqdm progress bar.
    runner: a multi-device chunk runner from `dann_jax.training.parallel`, or None.
    plots: write `curves.png`.
    reverse_steps: steps of the reverse model when `config.keep_best` is
      "reverse-validation".
    tensorboard: a folder for TensorBoard event files of every step's
      metrics, the evaluations and the curves (`dann_jax.training.tensorboard`; needs
      tensorboardX), or None.

  Returns:
    The summary, the final state, the normalisation mean, the data and the
    run's identity. The summary's target accuracies are None when no target
    test image has a label (an unlabelled folder); its `collapsed_at_step`
    names, per seed, the step from which the training label loss stayed at
    chance (`dann_jax.training.health`), or None.

  Raises:
    ValueError: `out_dir` holds another run (or, with `resume`, a different
      one: `ApiMismatch` if only the front door differs); api "nnx" with a
      `runner` or several processes; "target_only" on unlabelled target
      images; bad data.
    FileNotFoundError: `resume` without a run in `out_dir`, or missing data
      files.
  """
  out = Path(out_dir)
  if tensorboard is not None:
    from dann_jax.training.tensorboard import check_log_dir, summary_writer

    summary_writer()  # before anything is written: the writer is an optional package
    check_log_dir(tensorboard)
  prep = prepare(config, out, resume=resume, data=data, data_dir=data_dir, runner=runner, reverse_steps=reverse_steps)
  watch = None if config.guard is None else (prep.chance, config.guard.patience)
  board = None
  if tensorboard is not None and prep.primary:
    from dann_jax.training.tensorboard import RunWriter

    board = RunWriter(tensorboard, config.seeds)
  log = RunLog(
    config,
    out,
    prep.start,
    prep.evals,
    prep.mean,
    prep.as_linen,
    prep.scorer,
    write=prep.primary,
    progress=progress and prep.primary,
    guard=watch,
    tensorboard=board,
  )
  t0 = time.perf_counter()
  try:
    state = _fit(config, prep, out, log, runner)
    seconds = round(time.perf_counter() - t0, 1)
    if prep.start == config.train.total_steps and (out / "summary.json").exists():
      # A finished run resumed: nothing trained; its summary is computed again, keeping the training time.
      seconds = read_json_file(out / "summary.json", "the run's summary", "delete it").get("train_seconds", seconds)
    summary = summarise(config, prep, out, log, state, train_seconds=seconds)
    if prep.primary:
      write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    if plots and prep.primary:
      from dann_jax.plots import training_curves

      training_curves(
        log.history,
        out / "curves.png",
        title=f"{config.method} on {config.pair.name}",
        trained_domain=methods.get(config.method).adversarial,
        label_chance=prep.chance,
      )
      if board is not None:
        board.figure("curves", out / "curves.png", config.train.total_steps)
  except BaseException as e:
    if prep.primary and not resume and checkpoint.latest_step(out / "checkpoint") is None:
      remove_run_files(out)  # nothing to resume: leave the folder reusable
    elif prep.primary and isinstance(e, Diverged):
      write_text_atomic(out / DIVERGED, json.dumps({"step": e.step}))
    raise
  finally:
    log.close()
    if board is not None:
      board.close()
  return RunResult(summary, state, prep.mean, prep.data, prep.identity)


def _fit(config: RunConfig, prep: Prepared, out: Path, log: RunLog, runner) -> TrainState:
  """Trains `prep.state` to the configured step count; a guarded run recovers from a collapse or divergence
  with a weaker λ (`dann_jax.training.guard`). Returns the final (Linen) state."""
  state = prep.state
  while True:
    try:
      state = fit(
        state,
        prep.domain_pair,
        num_steps=config.train.total_steps,
        batch_size=config.train.batch_size,
        num_classes=prep.data.source_train.num_classes,
        chunk=100 if config.eval_every % 100 == 0 else config.eval_every,
        callback=log,
        runner=runner,
      )
      return prep.as_linen(state)
    except (Diverged, guard.Tripped) as e:
      if (
        config.guard is None
        or guard.lambda_scale(len(prep.guard_events), config.guard) == 0
        or not methods.get(config.method).adversarial
      ):  # unguarded, already at lambda = 0, or no lambda to weaken: a replay breaks the same way
        if isinstance(e, guard.Tripped):
          raise guard.Unrecoverable(e.step, e.reason) from None
        raise
      reason = "diverged" if isinstance(e, Diverged) else e.reason
      state = _recover(config, prep.data, out, log, prep.guard_events, e.step, reason, write=prep.primary)


def _recover(
  config: RunConfig, data: PairData, out: Path, log: RunLog, events: list, step: int, reason: str, *, write: bool
) -> TrainState:
  """Sends a broken run back to its newest checkpoint before `step`, with a weaker λ (`dann_jax.training.guard`)."""
  healthy = [s for s in checkpoint.all_steps(out / "checkpoint") if s < step]
  template = initial_state(config, data)
  restored_step = healthy[-1] if healthy else 0
  state = checkpoint.restore_checkpoint(out / "checkpoint", template, restored_step) if healthy else template
  checkpoint.delete_after(out / "checkpoint", restored_step)
  log.rewind(restored_step)
  events.append(
    {
      "step": int(step),
      "reason": reason,
      "restored_step": restored_step,
      "lam_scale": guard.lambda_scale(len(events) + 1, config.guard),
    }
  )
  if write:
    write_text_atomic(out / GUARD, json.dumps({"events": events}, indent=2))
    (out / DIVERGED).unlink(missing_ok=True)
  event = events[-1]
  print(
    f"dann-jax: guard: {reason} at step {step}; resumed from step {restored_step} with lambda x {event['lam_scale']:g}",
    file=sys.stderr,
    flush=True,
  )
  return guarded_state(state, config, events)
