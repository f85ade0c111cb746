"""One training run of a method on a domain pair: data, model, loop, logs, checkpoints, summary.

A run folder holds `run.json` (what was asked), `metrics.jsonl` (one line per
chunk of steps, with evaluations where they happened), `checkpoint/` (orbax),
`summary.json` and `curves.png`; a run whose loss became non-finite stops and
leaves `diverged.json` (the step) beside its checkpoints. `--resume` continues
from the checkpoint with the same numbers an uninterrupted run would give. A run trains through the
Linen front door (`dann_jax.train`) or the NNX one (`dann_jax.nnx`), with the
same numbers for a network without dropout; run.json records which, and the
checkpoints are Linen's either way, so evaluation and selection read both
alike.

A pair may name a user's own data (`folder:PATH`, `npz:PATH`; see
`dann_jax.data.custom`): its split options are kept in `run.json`, so a run
folder reloads its data wherever it is read from; a target without labelled
test images has no target accuracy (reported as None).

With several processes (`dann_jax.distributed`), every process calls
`train_run` with the same config and a runner over all of them: all load
the data (checked equal), train, evaluate and save checkpoints together, and
process 0 alone writes run.json, metrics.jsonl, summary.json and curves.png.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dann_jax import checkpoint, distributed, guard, methods, selection
from dann_jax.data import Domain, make_domain_pair
from dann_jax.data.batching import pixel_mean
from dann_jax.io import write_text_atomic
from dann_jax.evaluation import accuracy
from dann_jax.health import chance_loss, collapse_steps
from dann_jax.loop import Diverged, fit, replicate_seeds
from dann_jax import nnx as dann_nnx
from dann_jax.pair_data import PairData, data_fingerprint, load_pair_data, with_holdout
from dann_jax.pairs import PairSpec
from dann_jax.presets import RunConfig, config_of, make_config
from dann_jax.train import TrainState, create_train_state, make_schedules


# Training steps of the reverse model of reverse validation.
REVERSE_STEPS = 1000


@dataclasses.dataclass
class RunResult:
  """What a finished run leaves in memory (the harness reuses it)."""

  summary: dict[str, Any]
  state: TrainState
  mean: np.ndarray
  data: PairData
  identity: dict[str, Any] = dataclasses.field(default_factory=dict)


def machine_description() -> str:
  devices = jax.devices()
  processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
  return (
    f"{platform.machine()} {os.cpu_count()} cores, "
    f"{len(devices)} x {devices[0].device_kind} ({jax.default_backend()})"
    f"{processes}, jax {jax.__version__}"
  )


def _labelled(domain: Domain) -> Domain | None:
  """The images of `domain` whose label is known (all of a built-in
  domain's), or None when none is."""
  known = np.asarray(domain.labels) >= 0
  if known.all():
    return domain
  if not known.any():
    return None
  return dataclasses.replace(domain, images=domain.images[known], labels=domain.labels[known])


def _initial_state(config: RunConfig, data: PairData) -> TrainState:
  """Step-0 state of the configured network; a leading seeds axis if several."""
  model = config.make_model(data.source_train.num_classes)
  sample = jnp.zeros((1, *data.source_train.images.shape[1:]))
  make_state = lambda key: create_train_state(model, config.train, sample, key)
  if len(config.seeds) == 1:
    return make_state(jax.random.key(config.seeds[0]))
  return replicate_seeds(make_state, config.seeds)


def _nnx_state(config: RunConfig, data: PairData, linen_state: TrainState) -> dann_nnx.TrainState:
  """A single-seed Linen state in the NNX door (its network bridged): same
  weights, optimizer state, step and run key, so both doors take the same steps."""
  model = config.make_nnx_model(data.source_train.num_classes, data.source_train.images.shape[1:])
  state = dann_nnx.create_train_state(model, config.train)
  return dann_nnx.from_linen_state(state, linen_state)


def train_or_reuse(pair: PairSpec, method: str, out_dir, **kwargs) -> RunResult:
  """`train_pair`, unless `out_dir` already holds the finished run (then
  `load_run`); a run stopped midway is resumed from its checkpoint."""
  out = Path(out_dir)
  if (out / "summary.json").exists():
    return load_run(out, data=kwargs.get("data"), data_dir=kwargs.get("data_dir"))
  return train_pair(pair, method, out_dir=out, resume=(out / "run.json").exists(), **kwargs)


# written into a run folder whose loss became non-finite: {"step": N}
DIVERGED = "diverged.json"
# written into a guarded run folder at each recovery: {"events": [...]}
GUARD = "guard.json"


def _remove_run_files(out: Path) -> None:
  """Deletes what a run that failed before its first checkpoint wrote."""
  for name in ("run.json", "metrics.jsonl"):
    (out / name).unlink(missing_ok=True)
  shutil.rmtree(out / "checkpoint", ignore_errors=True)
  if out.is_dir() and not any(out.iterdir()):
    out.rmdir()


class ApiMismatch(ValueError):
  """A run folder to resume was trained through the other front door.

  Attributes:
    held_api: the front door the folder's run was trained with.
  """

  def __init__(self, message: str, held_api: str):
    super().__init__(message)
    self.held_api = held_api


def read_json_file(path: Path, what: str, fix: str) -> Any:
  """The JSON in `path`, or one ValueError naming the file, what is wrong and `fix`.

  Args:
    path: the file.
    what: what the file is, for the message ("the run's identity").
    fix: what to do about a damaged file.
  """
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except UnicodeDecodeError:
    problem = "not text (binary bytes)"
  except json.JSONDecodeError as e:
    problem = f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno}; truncated?)"
  raise ValueError(f"{path} ({what}) is damaged: {problem}; {fix}")


RUN_JSON_FIX = (
  "it names the run, so nothing can resume or score the folder without it: restore the file, or delete the folder "
  "and train the run again"
)


def read_run_json(run_dir: Path) -> dict:
  """A run folder's run.json, or one clear error if it is damaged."""
  held = read_json_file(Path(run_dir) / "run.json", "the run's identity", RUN_JSON_FIX)
  if not isinstance(held, dict) or "pair" not in held or "method" not in held:
    raise ValueError(f"{Path(run_dir) / 'run.json'} (the run's identity) is damaged: it names no pair; {RUN_JSON_FIX}")
  return held


def _check_out_dir(out: Path, identity: dict, resume: bool) -> None:
  """Refuses to overwrite another run, or to resume a different one."""
  if out.exists() and not out.is_dir():
    raise ValueError(f"{out} is a file; the run needs a folder there (choose another `out_dir`)")
  run_file = out / "run.json"
  if run_file.exists():
    held = read_run_json(out)
    held.pop("config", None)  # the resolved values follow from the rest
    held.setdefault("api", "linen")  # a run.json without `api` is Linen's
    if not resume:
      raise ValueError(
        f"{out} already holds a run ({held}); pass `resume=True` to continue it or choose another `out_dir`"
      )
    if held["api"] != identity["api"]:
      raise ApiMismatch(
        f"cannot resume: {out} was trained with api={held['api']!r}, not "
        f"api={identity['api']!r}; resume it with api={held['api']!r}",
        held["api"],
      )
    if held != identity:
      differ = sorted(k for k in set(held) | set(identity) if held.get(k) != identity.get(k))
      parts = ", ".join(f"`{k}={held.get(k)!r}` where this asks for {identity.get(k)!r}" for k in differ)
      extend = (
        "; a run cannot be extended (its schedules, lambda_p and mu_p, are fixed by its step count): train the "
        "longer run in another `out_dir`"
        if differ == ["steps"]
        else ""
      )
      raise ValueError(f"cannot resume: {out} holds another run, with {parts}{extend}")
  elif resume:
    raise FileNotFoundError(f"nothing to resume in {out}: no run.json; start the run without `resume=True`")
  elif out.exists() and any(out.iterdir()):
    raise ValueError(f"{out} is not empty and holds no run; choose another `out_dir`")


def _per_seed(x) -> float | list[float]:
  x = np.asarray(x, np.float64)
  return float(x) if x.ndim == 0 else [float(v) for v in x]


def accuracy_stats(x) -> dict[str, Any]:
  """Mean, std and per-seed values of per-seed numbers."""
  x = np.atleast_1d(np.asarray(x, np.float64))
  return {"mean": float(x.mean()), "std": float(x.std()), "per_seed": [float(v) for v in x]}


def read_metrics(path: Path, upto: int | None = None) -> list[dict]:
  """The rows of a run's `metrics.jsonl` (up to step `upto`, if given); [] if it has none."""
  if not path.exists():
    return []
  try:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line]
  except UnicodeDecodeError:
    raise ValueError(
      f"{path} (the run's metrics) is damaged: not text; delete it to resume without past metrics"
    ) from None
  rows = []
  for i, line in enumerate(lines):
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      if i == len(lines) - 1:
        # What a writer killed mid-line leaves: that row's chunk is
        # retrained from the checkpoint before it anyway.
        print(f"dann-jax: {path}: dropped its torn last line (a write was cut off)", file=sys.stderr)
        break
      raise ValueError(
        f"{path} (the run's metrics) is damaged at line {i + 1} of {len(lines)}; delete that line (or the file, "
        "losing the logged curves) to resume"
      ) from None
  return rows if upto is None else [r for r in rows if r["step"] <= upto]


def collapsed_at_steps(history: Sequence[Mapping], method: str, data: PairData, num_seeds: int) -> list[int | None]:
  """Per seed, the step a run with these metrics rows collapsed at (`dann_jax.health`), or None; chance is
  measured on the labels the method trains on."""
  trained = data.target_train if methods.get(method).labelled == "target" else data.source_train
  return collapse_steps(history, chance_loss(trained.labels), num_seeds)


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
  **run_options,
) -> RunResult:
  """Trains `method` on `pair`: `train_run(make_config(...), ...)`.

  Args:
    pair, method, preset, steps, batch_size, seeds, overrides,
      source_holdout, keep_best, splits, api, guard: the run's configuration, as
      `dann_jax.presets.make_config` takes them.
    out_dir: the run folder.
    **run_options: the other arguments of `train_run` (resume, data,
      data_dir, progress, runner, plots, reverse_steps).

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
  return train_run(config, out_dir=out_dir, **run_options)


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
) -> RunResult:
  """Trains the run `config` describes, writing logs, checkpoints and a summary.

  Several seeds train in one compiled program (`jax.vmap` over
  seed-dependent state) and are reported as mean +- std. With
  `config.keep_best`, every evaluation scores the state with that criterion
  (no target label is read) and the best-scoring state is kept in
  `out_dir/best` beside the final one; the summary reports both. With
  `config.api == "nnx"` the steps are taken by `dann_jax.nnx` (one seed, one
  device): both doors start from the same weights and batches and give the
  same numbers (dropout masks included: `dann_jax.nnx` bridges the same
  Linen network); a run resumes through the door it started
  with, and checkpoints and the returned state are Linen's either way.

  Args:
    config: the run (`dann_jax.presets.make_config`).
    out_dir: the run folder (created; must not hold another run). Its
      run.json names the run and records `config.resolved()`.
    resume: continue the run in `out_dir` from its checkpoint.
    data: the pair's splits, if already loaded.
    data_dir: the data cache folder.
    progress: show a tqdm progress bar.
    runner: a multi-device chunk runner from `dann_jax.parallel`, or None.
    plots: write `curves.png`.
    reverse_steps: steps of the reverse model when `config.keep_best` is
      "reverse-validation".

  Returns:
    The summary, the final state, the normalisation mean, the data and the
    run's identity. The summary's target accuracies are None when no target
    test image has a label (an unlabelled folder); its `collapsed_at_step`
    names, per seed, the step from which the training label loss stayed at
    chance (`dann_jax.health`), or None.

  Raises:
    ValueError: `out_dir` holds another run (or, with `resume`, a different
      one: `ApiMismatch` if only the front door differs); api "nnx" with a
      `runner` or several processes; "target_only" on unlabelled target
      images; bad data.
    FileNotFoundError: `resume` without a run in `out_dir`, or missing data
      files.
  """
  pair, method, keep_best, api = config.pair, config.method, config.keep_best, config.api
  if api == "nnx" and (runner is not None or jax.process_count() > 1):
    raise ValueError(
      f"api='nnx' trains on one device in one process; got runner={runner!r} and "
      f"{jax.process_count()} process(es). Leave `runner` None in one process, or use api='linen'"
    )
  out = Path(out_dir)
  identity = config.identity()
  _check_out_dir(out, identity, resume)
  data = with_holdout(data or load_pair_data(pair, data_dir=data_dir, splits=config.splits), config.source_holdout)
  unknown = int(np.sum(np.asarray(data.target_train.labels) < 0))
  role = methods.get(method).labelled  # whose labels the method trains on
  if role == "target" and unknown:
    raise ValueError(
      f"{method=} trains on the target's labels, "
      f"but {unknown} of the {len(data.target_train)} target "
      "train images have none; label them (class subfolders, "
      "or labels in the .npz) or train a method that learns from source labels "
      "('dann', 'source_only')"
    )
  trained = data.target_train if role == "target" else data.source_train
  try:
    # Before anything is written: chance_loss refuses labels of fewer than two classes.
    chance = chance_loss(trained.labels)
  except ValueError as e:
    raise ValueError(
      f"the {role} train images of {pair.name}: {e}; give the {role} one folder (or label) per class"
    ) from None
  evals = _EvalSets(target=_labelled(data.target_test), source=_labelled(data.source_test))
  domain_pair = make_domain_pair(data.source_train, data.target_train)
  mean = np.asarray(domain_pair.mean)
  # With several processes (dann_jax.distributed), all train on the same
  # data; and this waits until all have checked `out` before process 0, the
  # only one that writes logs and summaries, writes there.
  distributed.check_same("data", data_fingerprint(data, mean))
  primary = distributed.is_primary()
  progress = progress and primary
  num_classes = data.source_train.num_classes
  state = _initial_state(config, data)
  if primary:
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text(json.dumps({**identity, "config": config.resolved()}))
  # A run stopped before its first checkpoint resumes from step 0.
  if resume and checkpoint.latest_step(out / "checkpoint") is not None:
    state = checkpoint.restore_checkpoint(out / "checkpoint", state)
  guard_events = _guard_events(out) if config.guard is not None else []
  if guard_events:
    state = _guarded(state, config, guard_events)
  # Evaluation, selection and checkpoints read Linen states.
  as_linen = lambda s: s
  if api == "nnx":
    template = state
    state = _nnx_state(config, data, template)
    as_linen = lambda s: dann_nnx.to_linen_state(s, template)
  start = int(np.asarray(state.step).reshape(-1)[0])
  total = config.train.total_steps

  scorer = None
  if keep_best is not None:
    view = selection.selection_set(data, mean)
    reverse_model = config.make_model(num_classes)
    scorer = lambda s: selection.score_state(
      s, view, keep_best, reverse_config=config.train, reverse_model=reverse_model, reverse_steps=reverse_steps
    )
  watch = None if config.guard is None else (chance, config.guard.patience)
  log = _RunLog(config, out, start, evals, mean, as_linen, scorer, write=primary, progress=progress, guard=watch)
  t0 = time.perf_counter()
  try:
    while True:
      try:
        state = fit(
          state,
          domain_pair,
          num_steps=total,
          batch_size=config.train.batch_size,
          num_classes=num_classes,
          chunk=100 if config.eval_every % 100 == 0 else config.eval_every,
          callback=log,
          runner=runner,
        )
        break
      except (Diverged, guard.Tripped) as e:
        if config.guard is None or guard.lambda_scale(len(guard_events), config.guard) == 0:
          raise  # unguarded, or already at lambda = 0: a weaker lambda cannot help
        reason = "diverged" if isinstance(e, Diverged) else e.reason
        state = _recover(config, data, out, log, guard_events, e.step, reason, write=primary)
    state = as_linen(state)
  except BaseException as e:
    if primary and not resume and checkpoint.latest_step(out / "checkpoint") is None:
      _remove_run_files(out)  # nothing to resume: leave the folder reusable
    elif primary and isinstance(e, Diverged):
      write_text_atomic(out / DIVERGED, json.dumps({"step": e.step}))
    raise
  finally:
    log.close()
  train_seconds = round(time.perf_counter() - t0, 1)
  summary = {
    **identity,
    **_test_accuracies(state, evals, mean),
    "source_val_size": 0 if data.source_val is None else len(data.source_val),
    "source_val_accuracy": _accuracy_stats_on(state, data.source_val, mean),
    "target_test_size": 0 if evals.target is None else len(evals.target),
    "paper_v1": (pair.paper or {}).get(method),
    "paper_icml": (pair.paper_icml or {}).get(method),
    "train_seconds": train_seconds,
    "steps_run": total - start,
    "collapsed_at_step": collapsed_at_steps(log.history, method, data, len(config.seeds)),
    "machine": machine_description(),
    "note": config.note,
    "config": dataclasses.asdict(config.train),
    "network": config.network,
    "provenance": {key: getattr(data, split).provenance for key, split in _PROVENANCE_SPLITS.items()},
  }
  if config.guard is not None:
    summary["guard"] = {"config": dataclasses.asdict(config.guard), "events": guard_events}
  if keep_best is not None:
    score, best_step = log.best
    best_state = checkpoint.restore_checkpoint(out / "best", state)
    summary["best"] = {
      "criterion": keep_best,
      "step": best_step,
      "score": score,
      "final_score": log.history[-1]["selection"],
      **_test_accuracies(best_state, evals, mean),
    }
  if primary:
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
  if plots and primary:
    from dann_jax.plots import training_curves

    training_curves(log.history, out / "curves.png", title=f"{method} on {pair.name}")
  return RunResult(summary, state, mean, data, identity)


def _guard_events(out: Path) -> list[dict]:
  """The recoveries a guarded run folder records ([] if none)."""
  path = out / GUARD
  if not path.exists():
    return []
  fix = "delete the run folder and train it again"
  held = read_json_file(path, "the guard's recoveries", fix)
  if not isinstance(held, dict) or not isinstance(held.get("events"), list):
    raise ValueError(f"{path} (the guard's recoveries) is damaged: it holds no list of events; {fix}")
  return held["events"]


def _guarded(state: TrainState, config: RunConfig, events: Sequence[Mapping]) -> TrainState:
  """`state` with λ_p scaled as the guard left it after `events`."""
  base = make_schedules(config.train)[1]
  return state.replace(adaptation_factor=guard.scaled(base, guard.lambda_scale(len(events), config.guard)))


def _recover(
  config: RunConfig, data: PairData, out: Path, log: "_RunLog", events: list, step: int, reason: str, *, write: bool
) -> TrainState:
  """Sends a broken run back to its newest checkpoint before `step`, with a weaker λ (`dann_jax.guard`)."""
  healthy = [s for s in checkpoint.all_steps(out / "checkpoint") if s < step]
  template = _initial_state(config, data)
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
  return _guarded(state, config, events)


# summary.json's provenance keys and the splits they describe
_PROVENANCE_SPLITS = {
  "source": "source_train",
  "target": "target_train",
  "source_test": "source_test",
  "target_test": "target_test",
}


@dataclasses.dataclass(frozen=True)
class _EvalSets:
  """The labelled test images a run is scored on (None: none is labelled)."""

  target: Domain | None
  source: Domain | None


def _accuracy_stats_on(state: TrainState, test: Domain | None, mean) -> dict[str, Any] | None:
  if test is None:
    return None
  return accuracy_stats(accuracy(state, test.images, test.labels, mean))


def _test_accuracies(state: TrainState, evals: _EvalSets, mean) -> dict[str, Any]:
  """Accuracies of `state` on the whole labelled test sets."""
  return {
    "target_accuracy": _accuracy_stats_on(state, evals.target, mean),
    "source_accuracy": _accuracy_stats_on(state, evals.source, mean),
  }


class _RunLog:
  """The loop's per-chunk callback: metrics.jsonl rows, evaluations on
  `eval_size` test images every `eval_every` steps, the label-free selection
  score and best state (`keep_best`), checkpoints, and the progress bar."""

  def __init__(
    self,
    config: RunConfig,
    out: Path,
    start: int,
    evals: _EvalSets,
    mean: np.ndarray,
    as_linen: Callable[[Any], TrainState],
    scorer: Callable[[TrainState], float] | None,
    *,
    write: bool,
    progress: bool,
    guard: tuple[float, int] | None = None,
  ):
    self.config, self.out, self.evals, self.mean = config, out, evals, mean
    self.guard = guard  # (chance loss, patience) of the label loss the guard watches
    self.as_linen, self.scorer, self.write = as_linen, scorer, write
    self.metrics_path = out / "metrics.jsonl"
    self.history = read_metrics(self.metrics_path, upto=start)
    if write:
      self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in self.history))
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
      row[k] = _per_seed(np.mean(v, axis=0))
    if self.guard is not None:
      rows = self.history + [row]
      chance, patience = self.guard
      broke = guard.collapse_start([r["step"] for r in rows], [r["label_loss"] for r in rows], chance, patience)
      if broke is not None:
        raise guard.Tripped(broke, "collapse")
    if step % self.config.eval_every == 0 or step == self.config.train.total_steps:
      self._evaluate(state, step, row)
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
    n = self.config.eval_size
    for key, test in (("target_accuracy", self.evals.target), ("source_accuracy", self.evals.source)):
      if test is not None:
        row[key] = _per_seed(accuracy(state, test.images[:n], test.labels[:n], self.mean))
    if "target_accuracy" in row:
      self.last_target = np.mean(row["target_accuracy"])
    if self.scorer is not None:
      row["selection"] = self.scorer(state)
      if self.best is None or row["selection"] < self.best[0]:
        checkpoint.save_checkpoint(self.out / "best", state)
        self.best = (row["selection"], step)
    checkpoint.save_checkpoint(self.out / "checkpoint", state, max_to_keep=None)

  def rewind(self, step: int) -> None:
    """Forgets the rows after `step` (the guard sent the run back there)."""
    self.history = [r for r in self.history if r["step"] <= step]
    if self.write:
      write_text_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in self.history))
    if self.bar is not None:
      self.bar.n = step
      self.bar.refresh()

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


def load_run(run_dir: str | os.PathLike, *, data: PairData | None = None, data_dir=None) -> RunResult:
  """Rebuilds a finished (or checkpointed) run from its folder.

  Args:
    run_dir: a folder written by `train_run` (or `train_pair`).
    data: the pair's splits, if already loaded.
    data_dir: the data cache folder.

  Returns:
    The run's summary (empty if it did not finish), restored state, mean and
    data.

  Raises:
    FileNotFoundError: if `run_dir` holds no run.
  """
  run_dir = Path(run_dir)
  run_file = run_dir / "run.json"
  if not run_file.exists():
    raise FileNotFoundError(f"{run_dir} holds no run (no run.json); pass a folder written by `dann-jax train`")
  identity = read_run_json(run_dir)
  config = config_of(identity)
  data = with_holdout(
    data or load_pair_data(config.pair, data_dir=data_dir, splits=config.splits), config.source_holdout
  )
  mean = pixel_mean(data.source_train.images, data.target_train.images)
  state = checkpoint.restore_checkpoint(run_dir / "checkpoint", _initial_state(config, data))
  summary_file = run_dir / "summary.json"
  summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
  return RunResult(summary, state, mean, data, identity)
