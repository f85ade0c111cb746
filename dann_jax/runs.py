"""One training run of a method on a domain pair: data, model, loop, logs, checkpoints, summary.

A run folder holds `run.json` (what was asked), `metrics.jsonl` (one line per
chunk of steps, with evaluations where they happened), `checkpoint/` (orbax),
`summary.json` and `curves.png`. `--resume` continues from the checkpoint with
the same numbers an uninterrupted run would give.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dann_jax import checkpoint, selection
from dann_jax.data import Domain, load_domain, make_domain_pair
from dann_jax.data.batching import pixel_mean
from dann_jax.evaluation import accuracy
from dann_jax.objective import check_method
from dann_jax.pairs import PairSpec
from dann_jax.presets import QUICK_SOURCE_HOLDOUT, RunPlan, make_plan
from dann_jax.loop import fit, replicate_seeds
from dann_jax.train import TrainState, create_train_state


@dataclasses.dataclass
class PairData:
  """The splits a run needs.

  `source_val`, when present, is a labelled split carved out of the source
  *train* images (never the test set) and kept out of training, for label-free
  model selection.
  """
  source_train: Domain
  source_test: Domain
  target_train: Domain
  target_test: Domain
  source_val: Domain | None = None


# Training steps of the reverse model of reverse validation.
REVERSE_STEPS = 1000

# The held-out source split is the same for every run of a pair (whatever the
# run's seed), so that candidates are scored on the same images.
HOLDOUT_SEED = 1234


def split_holdout(domain: Domain, size: int,
                  seed: int = HOLDOUT_SEED) -> tuple[Domain, Domain]:
  """Splits `domain` into (rest, held out) with `size` images held out.

  Args:
    domain: a train split.
    size: how many images to hold out, fewer than half of them.
    seed: the numpy seed of the permutation.

  Returns:
    `(rest, held_out)`, each keeping the order of `domain`.
  """
  if not 0 < size <= len(domain) // 2:
    raise ValueError(
        f"source_holdout={size} must lie in [1, {len(domain) // 2}] for the "
        f"{len(domain)} {domain.name} train images (at most half held out)")
  held = np.zeros(len(domain), bool)
  held[np.random.default_rng(seed).permutation(len(domain))[:size]] = True
  part = lambda m, tag: dataclasses.replace(
      domain, images=domain.images[m], labels=domain.labels[m],
      provenance=f"{domain.provenance}; {tag}")
  return (part(~held, f"{size} images held out for validation"),
          part(held, f"{size} held-out validation images"))


@dataclasses.dataclass
class RunResult:
  """What a finished run leaves in memory (the harness reuses it)."""
  summary: dict[str, Any]
  state: TrainState
  mean: np.ndarray
  data: PairData
  identity: dict[str, Any] = dataclasses.field(default_factory=dict)


def load_pair_data(pair: PairSpec, *, data_dir=None, seed: int = 0,
                   source_holdout: int = 0, **options) -> PairData:
  """Loads (or builds) the train and test splits of both domains of `pair`.

  With `source_holdout` > 0 up to that many source train images become
  `source_val` and leave `source_train` (see `with_holdout`).
  """
  splits = {}
  for role, name in (("source", pair.source), ("target", pair.target)):
    for split in ("train", "test"):
      domain = load_domain(name, split, data_dir=data_dir, seed=seed,
                           **options)
      if len(domain) == 0:
        raise ValueError(f"the {role} domain {name!r} has no {split} samples; "
                         "rebuild it (dann-jax data fetch NAME)")
      splits[f"{role}_{split}"] = domain
  return with_holdout(PairData(**splits), source_holdout)


def holdout_size(requested: int, n: int) -> int:
  """Images actually held out: `requested`, at most a tenth of the `n`."""
  if requested <= 0:
    return 0
  return max(1, min(requested, n // 10))


def with_holdout(data: PairData, source_holdout: int) -> PairData:
  """`data` with the source validation split a run asks for.

  `holdout_size(source_holdout, n)` of the n source train images are held
  out, so a small source keeps nine tenths of its images for training.

  Raises:
    ValueError: if `data` already holds out a different number of images.
  """
  have = 0 if data.source_val is None else len(data.source_val)
  n = len(data.source_train) + have
  size = holdout_size(source_holdout, n)
  if have == size:
    return data
  if have:
    raise ValueError(
        f"the loaded data hold out {have} source images, the run asks for "
        f"{size}; load them with load_pair_data(..., "
        f"source_holdout={source_holdout})")
  train, val = split_holdout(data.source_train, size)
  return dataclasses.replace(data, source_train=train, source_val=val)


def machine_description() -> str:
  devices = jax.devices()
  return (f"{platform.machine()} {os.cpu_count()} cores, "
          f"{len(devices)} x {devices[0].device_kind} ({jax.default_backend()})"
          f", jax {jax.__version__}")


def _identity(pair: PairSpec, method: str, preset: str, plan: RunPlan,
              seeds: Sequence[int], overrides: dict | None) -> dict[str, Any]:
  return {"pair": pair.name, "method": method, "preset": preset,
          "steps": plan.config.total_steps,
          "batch_size": plan.config.batch_size, "seeds": list(seeds),
          "overrides": dict(overrides or {}),
          "source_holdout": plan.source_holdout}


def _initial_state(plan: RunPlan, data: PairData,
                   seeds: Sequence[int]) -> TrainState:
  """Step-0 state of the plan's network; a leading seeds axis if several."""
  model = plan.make_model(data.source_train.num_classes)
  sample = jnp.zeros((1, *data.source_train.images.shape[1:]))
  make_state = lambda key: create_train_state(model, plan.config, sample, key)
  if len(seeds) == 1:
    return make_state(jax.random.key(seeds[0]))
  return replicate_seeds(make_state, seeds)


def train_or_reuse(pair: PairSpec, method: str, out_dir,
                   **kwargs) -> RunResult:
  """`train_pair`, unless `out_dir` already holds the finished run (then
  `load_run`); a run stopped midway is resumed from its checkpoint."""
  out = Path(out_dir)
  if (out / "summary.json").exists():
    return load_run(out, data=kwargs.get("data"),
                    data_dir=kwargs.get("data_dir"))
  return train_pair(pair, method, out_dir=out,
                    resume=(out / "run.json").exists(), **kwargs)


def _remove_run_files(out: Path) -> None:
  """Deletes what a run that failed before its first checkpoint wrote."""
  for name in ("run.json", "metrics.jsonl"):
    (out / name).unlink(missing_ok=True)
  shutil.rmtree(out / "checkpoint", ignore_errors=True)
  if out.is_dir() and not any(out.iterdir()):
    out.rmdir()


def _check_out_dir(out: Path, identity: dict, resume: bool) -> None:
  """Refuses to overwrite another run, or to resume a different one."""
  if out.exists() and not out.is_dir():
    raise ValueError(f"{out} is a file; the run needs a folder there "
                     "(choose another `out_dir`)")
  run_file = out / "run.json"
  if run_file.exists():
    held = json.loads(run_file.read_text())
    if not resume:
      raise ValueError(
          f"{out} already holds a run ({held}); pass `resume=True` to continue "
          "it or choose another `out_dir`")
    if held != identity:
      raise ValueError(f"cannot resume: {out} holds {held}, not {identity}")
  elif resume:
    raise FileNotFoundError(f"nothing to resume in {out}: no run.json; "
                            "start the run without `resume=True`")
  elif out.exists() and any(out.iterdir()):
    raise ValueError(f"{out} is not empty and holds no run; choose another "
                     "`out_dir`")


def _per_seed(x) -> float | list[float]:
  x = np.asarray(x, np.float64)
  return float(x) if x.ndim == 0 else [float(v) for v in x]


def accuracy_stats(x) -> dict[str, Any]:
  """Mean, std and per-seed values of per-seed numbers."""
  x = np.atleast_1d(np.asarray(x, np.float64))
  return {"mean": float(x.mean()), "std": float(x.std()),
          "per_seed": [float(v) for v in x]}


def _read_metrics(path: Path, upto: int) -> list[dict]:
  if not path.exists():
    return []
  rows = [json.loads(line) for line in path.read_text().splitlines() if line]
  return [r for r in rows if r["step"] <= upto]


def train_pair(pair: PairSpec, method: str, *, out_dir: str | os.PathLike,
               preset: str = "quick", steps: int | None = None,
               batch_size: int | None = None, seeds: Sequence[int] = (0,), resume: bool = False,
               data: PairData | None = None, data_dir=None,
               progress: bool = True, runner: Callable | None = None,
               plots: bool = True, overrides: dict | None = None,
               source_holdout: int | None = None,
               keep_best: str | None = None,
               reverse_steps: int = REVERSE_STEPS) -> RunResult:
  """Trains `method` on `pair`, writing logs, checkpoints and a summary.

  Args:
    pair: the adaptation pair.
    method: "dann", "source_only" or "target_only".
    out_dir: the run folder (created; must not hold another run).
    preset: "quick" or "paper" (see `dann_jax.presets`).
    steps: overrides the preset's step count.
    batch_size: overrides the preset's batch size.
    seeds: one run per seed; several seeds train in one compiled program
      (`jax.vmap` over seed-dependent state) and are reported as mean +- std.
    resume: continue the run in `out_dir` from its checkpoint.
    data: the pair's splits, if already loaded.
    data_dir: the data cache folder.
    progress: show a tqdm progress bar.
    runner: a multi-device chunk runner from `dann_jax.parallel`, or None.
    plots: write `curves.png`.
    overrides: `TrainConfig` fields set on top of the preset's.
    source_holdout: overrides the preset's held-out source validation size.
    keep_best: a `dann_jax.selection` criterion: every evaluation scores the
      state with it (no target label is read) and the best-scoring state is
      kept in `out_dir/best` beside the final one; the summary reports both.
    reverse_steps: steps of the reverse model when `keep_best` is
      "reverse-validation".

  Returns:
    The summary, the final state, the normalisation mean and the data.
  """
  check_method(method)
  seeds = list(seeds)
  if not seeds:
    raise ValueError("`seeds` is empty; give at least one seed")
  if keep_best is not None:
    selection.check_criterion(keep_best)
    if len(seeds) != 1:
      raise ValueError(f"keep_best selects within one run: train the "
                       f"{len(seeds)} seeds as separate runs")
  plan = make_plan(pair, method, preset, steps=steps, batch_size=batch_size,
                   seed=seeds[0], overrides=overrides,
                   source_holdout=source_holdout)
  if keep_best is not None and not plan.source_holdout:
    raise ValueError(
        "keep_best needs labelled source images held out of training: set "
        "source_holdout > 0 (the quick preset holds out "
        f"{QUICK_SOURCE_HOLDOUT})")
  out = Path(out_dir)
  identity = _identity(pair, method, preset, plan, seeds, overrides)
  if keep_best is not None:
    identity["keep_best"] = keep_best
  _check_out_dir(out, identity, resume)
  data = with_holdout(data or load_pair_data(pair, data_dir=data_dir),
                      plan.source_holdout)
  domain_pair = make_domain_pair(data.source_train, data.target_train)
  mean = np.asarray(domain_pair.mean)
  num_classes = data.source_train.num_classes
  state = _initial_state(plan, data, seeds)
  out.mkdir(parents=True, exist_ok=True)
  (out / "run.json").write_text(json.dumps(identity))
  # A run stopped before its first checkpoint resumes from step 0.
  if resume and checkpoint.latest_step(out / "checkpoint") is not None:
    state = checkpoint.restore_checkpoint(out / "checkpoint", state)
  start = int(np.asarray(state.step).reshape(-1)[0])
  total = plan.config.total_steps

  metrics_path = out / "metrics.jsonl"
  history = _read_metrics(metrics_path, upto=start)
  metrics_path.write_text("".join(json.dumps(r) + "\n" for r in history))
  n_eval = plan.eval_size
  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True,
               desc=f"{method} {pair.name}")
  last_eval: dict[str, Any] = {}
  scorer = None
  if keep_best is not None:
    view = selection.selection_set(data, mean)
    reverse_model = plan.make_model(num_classes)
    scorer = lambda s: selection.score_state(
        s, view, keep_best, reverse_config=plan.config,
        reverse_model=reverse_model, reverse_steps=reverse_steps)
    best = min((r for r in history if "selection" in r),
               key=lambda r: r["selection"], default=None)
    last_eval["best"] = (None if best is None
                         else (best["selection"], best["step"]))
  t0 = time.perf_counter()

  def on_chunk(state: TrainState, metrics: dict[str, np.ndarray]) -> None:
    step = int(np.asarray(state.step).reshape(-1)[0])
    row = {"step": step}
    for k, v in metrics.items():  # (steps,) or (steps, seeds)
      row[k] = _per_seed(np.mean(v, axis=0))
    if step % plan.eval_every == 0 or step == total:
      row["target_accuracy"] = _per_seed(accuracy(
          state, data.target_test.images[:n_eval],
          data.target_test.labels[:n_eval], mean))
      row["source_accuracy"] = _per_seed(accuracy(
          state, data.source_test.images[:n_eval],
          data.source_test.labels[:n_eval], mean))
      last_eval["target"] = np.mean(row["target_accuracy"])
      if scorer is not None:
        row["selection"] = scorer(state)
        if (last_eval["best"] is None
            or row["selection"] < last_eval["best"][0]):
          checkpoint.save_checkpoint(out / "best", state)
          last_eval["best"] = (row["selection"], step)
      checkpoint.save_checkpoint(out / "checkpoint", state, max_to_keep=None)
    history.append(row)
    with metrics_path.open("a") as f:
      f.write(json.dumps(row) + "\n")
    if bar is not None:
      bar.update(len(metrics["loss"]))
      postfix = {"Ly": np.mean(row["label_loss"]),
                 "Ld": np.mean(row["domain_loss"]),
                 "dacc": np.mean(row["domain_accuracy"]),
                 "lam": np.mean(row["lambda"])}
      if "target" in last_eval:
        postfix["tgt"] = last_eval["target"]
      bar.set_postfix({k: f"{v:.3f}" for k, v in postfix.items()},
                      refresh=False)

  try:
    state = fit(state, domain_pair, num_steps=total,
                batch_size=plan.config.batch_size, num_classes=num_classes,
                chunk=100 if plan.eval_every % 100 == 0 else plan.eval_every,
                callback=on_chunk,
                runner=runner)
  except BaseException:
    if not resume and checkpoint.latest_step(out / "checkpoint") is None:
      _remove_run_files(out)  # nothing to resume: leave the folder reusable
    raise
  finally:
    if bar is not None:
      bar.close()
  train_seconds = time.perf_counter() - t0

  target_acc = accuracy(state, data.target_test.images,
                        data.target_test.labels, mean)
  source_acc = accuracy(state, data.source_test.images,
                        data.source_test.labels, mean)
  summary = {
      **identity,
      "target_accuracy": accuracy_stats(target_acc),
      "source_accuracy": accuracy_stats(source_acc),
      "source_val_size": 0 if data.source_val is None else len(
          data.source_val),
      "source_val_accuracy": None if data.source_val is None else
      accuracy_stats(accuracy(state, data.source_val.images,
                              data.source_val.labels, mean)),
      "target_test_size": len(data.target_test),
      "paper_v1": (pair.paper or {}).get(method),
      "paper_icml": (pair.paper_icml or {}).get(method),
      "train_seconds": round(train_seconds, 1),
      "steps_run": total - start,
      "machine": machine_description(),
      "note": plan.note,
      "config": dataclasses.asdict(plan.config),
      "network": plan.network,
      "provenance": {"source": data.source_train.provenance,
                     "target": data.target_train.provenance},
  }
  if keep_best is not None:
    score, best_step = last_eval["best"]
    best_state = checkpoint.restore_checkpoint(out / "best", state)
    summary["best"] = {
        "criterion": keep_best, "step": best_step, "score": score,
        "final_score": history[-1]["selection"],
        "target_accuracy": accuracy_stats(accuracy(
            best_state, data.target_test.images, data.target_test.labels,
            mean)),
        "source_accuracy": accuracy_stats(accuracy(
            best_state, data.source_test.images, data.source_test.labels,
            mean))}
  (out / "summary.json").write_text(json.dumps(summary, indent=2))
  if plots:
    from dann_jax.plots import training_curves
    training_curves(history, out / "curves.png",
                    title=f"{method} on {pair.name}")
  return RunResult(summary, state, mean, data, identity)


def plan_of(identity: dict[str, Any]) -> RunPlan:
  """The plan of the run described by `identity` (a run folder's run.json)."""
  from dann_jax.pairs import PAIRS

  return make_plan(PAIRS[identity["pair"]], identity["method"],
                   identity["preset"], steps=identity["steps"],
                   batch_size=identity["batch_size"],
                   seed=identity["seeds"][0],
                   overrides=identity.get("overrides"),
                   source_holdout=identity.get("source_holdout", 0))


def load_run(run_dir: str | os.PathLike, *, data: PairData | None = None,
             data_dir=None) -> RunResult:
  """Rebuilds a finished (or checkpointed) run from its folder.

  Args:
    run_dir: a folder written by `train_pair`.
    data: the pair's splits, if already loaded.
    data_dir: the data cache folder.

  Returns:
    The run's summary (empty if it did not finish), restored state, mean and
    data.

  Raises:
    FileNotFoundError: if `run_dir` holds no run.
  """
  from dann_jax.pairs import PAIRS

  run_dir = Path(run_dir)
  run_file = run_dir / "run.json"
  if not run_file.exists():
    raise FileNotFoundError(f"{run_dir} holds no run (no run.json); pass a "
                            "folder written by `dann-jax train`")
  identity = json.loads(run_file.read_text())
  pair = PAIRS[identity["pair"]]
  seeds = identity["seeds"]
  plan = plan_of(identity)
  data = with_holdout(data or load_pair_data(pair, data_dir=data_dir),
                      plan.source_holdout)
  mean = pixel_mean(data.source_train.images, data.target_train.images)
  state = checkpoint.restore_checkpoint(
      run_dir / "checkpoint", _initial_state(plan, data, seeds))
  summary_file = run_dir / "summary.json"
  summary = (json.loads(summary_file.read_text()) if summary_file.exists()
             else {})
  return RunResult(summary, state, mean, data, identity)
