"""One training run of a method on a domain pair: data, model, loop, logs, checkpoints, summary.

A run folder holds `run.json` (what was asked), `metrics.jsonl` (one line per
chunk of steps, with evaluations where they happened), `checkpoint/` (orbax),
`summary.json` and `curves.png`. `--resume` continues from the checkpoint with
the same numbers an uninterrupted run would give. A run trains through the
Linen front door (`dann_jax.train`) or the NNX one (`dann_jax.nnx`), with the
same numbers for a network without dropout; run.json records which, and the
checkpoints are Linen's either way, so evaluation and selection read both
alike.

A pair may name a user's own data (`folder:PATH`, `npz:PATH`; see
`dann_jax.data.custom`): its split options are kept in `run.json`, so a run
folder reloads its data wherever it is read from; a target without labelled
test images has no target accuracy (reported as None).

With several processes (`dann_jax.distributed`), every process calls
`train_pair` with the same arguments and a runner over all of them: all load
the data (checked equal), train, evaluate and save checkpoints together, and
process 0 alone writes run.json, metrics.jsonl, summary.json and curves.png.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dann_jax import checkpoint, distributed, selection
from dann_jax.data import Domain, custom, load_domain, make_domain_pair
from dann_jax.data.batching import pixel_mean
from dann_jax.data.domains import IMPORTED
from dann_jax.evaluation import accuracy
from dann_jax.objective import check_method
from dann_jax.pairs import PAIRS, PairSpec, get_pair
from dann_jax.presets import QUICK_SOURCE_HOLDOUT, RunPlan, make_plan
from dann_jax.loop import fit, replicate_seeds
from dann_jax import nnx as dann_nnx
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


def split_holdout(domain: Domain, size: int, seed: int = HOLDOUT_SEED) -> tuple[Domain, Domain]:
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
      f"{len(domain)} {domain.name} train images (at most half held out)"
    )
  held = np.zeros(len(domain), bool)
  held[np.random.default_rng(seed).permutation(len(domain))[:size]] = True
  part = lambda m, tag: dataclasses.replace(
    domain, images=domain.images[m], labels=domain.labels[m], provenance=f"{domain.provenance}; {tag}"
  )
  return (part(~held, f"{size} images held out for validation"), part(held, f"{size} held-out validation images"))


@dataclasses.dataclass
class RunResult:
  """What a finished run leaves in memory (the harness reuses it)."""

  summary: dict[str, Any]
  state: TrainState
  mean: np.ndarray
  data: PairData
  identity: dict[str, Any] = dataclasses.field(default_factory=dict)


ROLES = ("source", "target")


@dataclasses.dataclass(frozen=True)
class SplitOptions:
  """How the test split of a user's domain (`folder:` / `npz:`) is chosen.

  See `dann_jax.data.custom.parse_spec`; a domain whose PATH holds its own
  test split (`test/`, `test.npz`) needs none of them.

  Attributes:
    test: the test split's folder or file.
    test_fraction: instead, the fraction in (0, 1) of each class held out of
      the train images as the test split.
    seed: the seed of that hold-out.
  """

  test: str | None = None
  test_fraction: float | None = None
  seed: int = 0


def is_custom(pair: PairSpec) -> bool:
  """Whether either side of `pair` is a user's `folder:` / `npz:` domain."""
  return custom.is_spec(pair.source) or custom.is_spec(pair.target)


def split_options(pair: PairSpec, splits: Mapping[str, Any] | None) -> dict[str, SplitOptions]:
  """`splits` (role -> `SplitOptions` or its dict, as run.json holds it) for
  both roles, test paths made absolute.

  Raises:
    ValueError: a role other than source / target, or options for a built-in
      domain (its test split is fixed).
  """
  splits = dict(splits or {})
  unknown = sorted(set(splits) - set(ROLES))
  if unknown:
    raise ValueError(f"`splits` names {unknown}; its keys are 'source' and 'target'")
  out = {}
  for role in ROLES:
    opts = splits.get(role) or SplitOptions()
    if not isinstance(opts, SplitOptions):
      opts = SplitOptions(**opts)
    name = getattr(pair, role)
    if opts != SplitOptions() and not custom.is_spec(name):
      raise ValueError(
        f"`splits` gives the {role} {name!r} the split options "
        f"{opts}, but a built-in domain has its own test "
        "split; split options apply to folder:PATH and "
        "npz:PATH domains only"
      )
    if opts.test is not None:
      opts = dataclasses.replace(opts, test=custom.absolute(opts.test))
    out[role] = opts
  return out


def _load_custom(spec: str, opts: SplitOptions) -> tuple[Domain, Domain]:
  """(train, test) of a user's domain; without a test split, its train
  images serve as test images."""
  train, test = custom.load_custom_splits(spec, test=opts.test, test_fraction=opts.test_fraction, seed=opts.seed)
  if test is None:
    test = dataclasses.replace(
      train, provenance=f"{train.provenance}; no test split, so its train images serve as test images"
    )
  return train, test


def _in_source_classes(source: Domain, target: Domain) -> Domain:
  """A user's `target` labelled by the source's class indices, when its
  classes are some of the source's (in any order); otherwise as it is."""
  src, tgt = custom.class_names(source), custom.class_names(target)
  if not isinstance(target, custom.CustomDomain) or tgt == src or not set(tgt) <= set(src):
    return target
  labels = np.asarray(target.labels, np.int32)
  if tgt:
    index = np.asarray([src.index(c) for c in tgt], np.int32)
    labels = np.where(labels >= 0, index[np.clip(labels, 0, None)], labels)
  return dataclasses.replace(target, labels=labels.astype(np.int32), num_classes=len(src), class_names=src)


def load_pair_data(
  pair: PairSpec,
  *,
  data_dir=None,
  seed: int = 0,
  source_holdout: int = 0,
  splits: Mapping[str, Any] | None = None,
  **options,
) -> PairData:
  """Loads (or builds) the train and test splits of both domains of `pair`.

  A `folder:PATH` / `npz:PATH` side is read by
  `dann_jax.data.custom.load_custom_splits` with its `splits` options; a
  user's target is labelled by the source's class names, and
  `custom.check_label_sets` refuses a target with other classes. A user's
  domain without a test split is evaluated on its train images (for the
  target, whose labels training never reads, the transductive protocol).

  With `source_holdout` > 0 up to that many source train images become
  `source_val` and leave `source_train` (see `with_holdout`).

  Args:
    pair: the adaptation pair.
    data_dir: the data cache folder.
    seed: the seed of the built-in domains' random parts (photo patches,
      rendering).
    source_holdout: source train images to hold out for selection.
    splits: per role ('source', 'target'), a `SplitOptions` (or its dict)
      for a user's domain.
    **options: options of `dann_jax.data.load_domain` for built-in domains.

  Raises:
    ValueError: split options for a built-in domain, different label sets,
      an unlabelled source, or bad data.
    FileNotFoundError: missing files (the message says how to supply them).
  """
  splits = split_options(pair, splits)
  loaded = {}
  # Domains read from imported files first, so that a missing file fails
  # before anything slow (rendered digits) is built.
  for role in sorted(ROLES, key=lambda r: getattr(pair, r) not in IMPORTED):
    name = getattr(pair, role)
    if custom.is_spec(name):
      loaded[role] = _load_custom(name, splits[role])
    else:
      loaded[role] = tuple(
        load_domain(name, split, data_dir=data_dir, seed=seed, **options) for split in ("train", "test")
      )
    for split, domain in zip(("train", "test"), loaded[role]):
      if len(domain) == 0:
        raise ValueError(f"the {role} domain {name!r} has no {split} samples; rebuild it (dann-jax data fetch NAME)")
  source_train, source_test = loaded["source"]
  target_train, target_test = (_in_source_classes(source_train, d) for d in loaded["target"])
  if is_custom(pair):
    custom.check_label_sets(source_train, target_train)
    custom.check_label_sets(source_train, target_test)
  data = PairData(source_train, source_test, target_train, target_test)
  return with_holdout(data, source_holdout)


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
      f"source_holdout={source_holdout})"
    )
  train, val = split_holdout(data.source_train, size)
  return dataclasses.replace(data, source_train=train, source_val=val)


def machine_description() -> str:
  devices = jax.devices()
  processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
  return (
    f"{platform.machine()} {os.cpu_count()} cores, "
    f"{len(devices)} x {devices[0].device_kind} ({jax.default_backend()})"
    f"{processes}, jax {jax.__version__}"
  )


def data_fingerprint(data: PairData, mean) -> dict[str, Any]:
  """Sizes, label checksums and the training pixel mean of `data`: equal in
  every process of a multi-process run, which all load the data."""
  splits = {
    "source_train": data.source_train,
    "source_test": data.source_test,
    "target_train": data.target_train,
    "target_test": data.target_test,
  }
  if data.source_val is not None:
    splits["source_val"] = data.source_val
  fingerprint = {name: [len(d), zlib.crc32(np.asarray(d.labels).tobytes())] for name, d in splits.items()}
  fingerprint["pixel_mean"] = [float(m) for m in np.asarray(mean)]
  return fingerprint


def _identity(
  pair: PairSpec,
  method: str,
  preset: str,
  plan: RunPlan,
  seeds: Sequence[int],
  overrides: dict | None,
  splits: dict[str, SplitOptions],
) -> dict[str, Any]:
  identity = {
    "pair": pair.name,
    "method": method,
    "preset": preset,
    "steps": plan.config.total_steps,
    "batch_size": plan.config.batch_size,
    "seeds": list(seeds),
    "overrides": dict(overrides or {}),
    "source_holdout": plan.source_holdout,
  }
  if is_custom(pair):  # what `pair_of` needs to read the same data again
    identity.update(
      source=pair.source,
      target=pair.target,
      network=pair.network,
      splits={role: dataclasses.asdict(o) for role, o in splits.items()},
    )
  return identity


def pair_of(identity: dict[str, Any]) -> PairSpec:
  """The pair of the run described by `identity` (a run folder's run.json)."""
  if "source" in identity:
    return get_pair(identity["source"], identity["target"], network=identity["network"])
  return PAIRS[identity["pair"]]


def _labelled(domain: Domain) -> Domain | None:
  """The images of `domain` whose label is known (all of a built-in
  domain's), or None when none is."""
  known = np.asarray(domain.labels) >= 0
  if known.all():
    return domain
  if not known.any():
    return None
  return dataclasses.replace(domain, images=domain.images[known], labels=domain.labels[known])


def _initial_state(plan: RunPlan, data: PairData, seeds: Sequence[int]) -> TrainState:
  """Step-0 state of the plan's network; a leading seeds axis if several."""
  model = plan.make_model(data.source_train.num_classes)
  sample = jnp.zeros((1, *data.source_train.images.shape[1:]))
  make_state = lambda key: create_train_state(model, plan.config, sample, key)
  if len(seeds) == 1:
    return make_state(jax.random.key(seeds[0]))
  return replicate_seeds(make_state, seeds)


# The front doors a run can train through: `dann_jax.train` (Linen) and
# `dann_jax.nnx`. Checkpoints are in the Linen layout either way.
APIS = ("linen", "nnx")


def _nnx_state(plan: RunPlan, data: PairData, linen_state: TrainState) -> dann_nnx.TrainState:
  """The NNX twin of a single-seed Linen state: same weights, optimizer
  state, step and run key, so both doors take the same steps."""
  model = plan.make_nnx_model(data.source_train.num_classes, data.source_train.images.shape[1:])
  state = dann_nnx.create_train_state(model, plan.config)
  return dann_nnx.from_linen_state(state, linen_state)


def train_or_reuse(pair: PairSpec, method: str, out_dir, **kwargs) -> RunResult:
  """`train_pair`, unless `out_dir` already holds the finished run (then
  `load_run`); a run stopped midway is resumed from its checkpoint."""
  out = Path(out_dir)
  if (out / "summary.json").exists():
    return load_run(out, data=kwargs.get("data"), data_dir=kwargs.get("data_dir"))
  return train_pair(pair, method, out_dir=out, resume=(out / "run.json").exists(), **kwargs)


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
    raise ValueError(f"{out} is a file; the run needs a folder there (choose another `out_dir`)")
  run_file = out / "run.json"
  if run_file.exists():
    held = json.loads(run_file.read_text())
    held.setdefault("api", "linen")  # a run.json without `api` is Linen's
    if not resume:
      raise ValueError(
        f"{out} already holds a run ({held}); pass `resume=True` to continue it or choose another `out_dir`"
      )
    if held["api"] != identity["api"]:
      raise ValueError(
        f"cannot resume: {out} was trained with api={held['api']!r}, not "
        f"api={identity['api']!r}; resume it with api={held['api']!r} "
        f"(dann-jax train ... --api {held['api']} --resume)"
      )
    if held != identity:
      raise ValueError(f"cannot resume: {out} holds {held}, not {identity}")
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


def _read_metrics(path: Path, upto: int) -> list[dict]:
  if not path.exists():
    return []
  rows = [json.loads(line) for line in path.read_text().splitlines() if line]
  return [r for r in rows if r["step"] <= upto]


def train_pair(
  pair: PairSpec,
  method: str,
  *,
  out_dir: str | os.PathLike,
  preset: str = "quick",
  steps: int | None = None,
  batch_size: int | None = None,
  seeds: Sequence[int] = (0,),
  resume: bool = False,
  data: PairData | None = None,
  data_dir=None,
  progress: bool = True,
  runner: Callable | None = None,
  plots: bool = True,
  overrides: dict | None = None,
  source_holdout: int | None = None,
  keep_best: str | None = None,
  reverse_steps: int = REVERSE_STEPS,
  splits: Mapping[str, Any] | None = None,
  api: str = "linen",
) -> RunResult:
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
    splits: per role, the `SplitOptions` of a user's domain (see
      `load_pair_data`); kept in run.json.
    api: the front door that takes the steps: "linen" (`dann_jax.train`)
      or "nnx" (`dann_jax.nnx`, one seed on one device, no `runner`). Both
      start from the same weights and batches and give the same numbers
      (for a network with dropout, the SVHN one, other dropout masks: see
      `dann_jax.nnx`); run.json records it, and a run resumes through the
      door it started with. Checkpoints and the returned state are Linen's
      either way.

  Returns:
    The summary, the final state, the normalisation mean and the data. The
    summary's target accuracies are None when no target test image has a
    label (an unlabelled folder).
  """
  check_method(method)
  seeds = list(seeds)
  if not seeds:
    raise ValueError("`seeds` is empty; give at least one seed")
  if api not in APIS:
    raise ValueError(f"unknown {api=}; choose one of {APIS}")
  if api == "nnx" and (len(seeds) != 1 or runner is not None or jax.process_count() > 1):
    raise ValueError(
      f"api='nnx' trains one seed on one device in one process; got "
      f"{len(seeds)} `seeds`, runner={runner!r} and "
      f"{jax.process_count()} process(es). Train each seed as its own run "
      "on one device, or use api='linen'"
    )
  if keep_best is not None:
    selection.check_criterion(keep_best)
    if len(seeds) != 1:
      raise ValueError(f"keep_best selects within one run: train the {len(seeds)} seeds as separate runs")
  plan = make_plan(
    pair,
    method,
    preset,
    steps=steps,
    batch_size=batch_size,
    seed=seeds[0],
    overrides=overrides,
    source_holdout=source_holdout,
  )
  if keep_best is not None and not plan.source_holdout:
    raise ValueError(
      "keep_best needs labelled source images held out of training: set "
      "source_holdout > 0 (the quick preset holds out "
      f"{QUICK_SOURCE_HOLDOUT})"
    )
  out = Path(out_dir)
  splits = split_options(pair, splits)
  identity = _identity(pair, method, preset, plan, seeds, overrides, splits)
  if keep_best is not None:
    identity["keep_best"] = keep_best
  identity["api"] = api
  _check_out_dir(out, identity, resume)
  data = with_holdout(data or load_pair_data(pair, data_dir=data_dir, splits=splits), plan.source_holdout)
  unknown = int(np.sum(np.asarray(data.target_train.labels) < 0))
  if method == "target_only" and unknown:
    raise ValueError(
      f"method='target_only' trains on the target's labels, "
      f"but {unknown} of the {len(data.target_train)} target "
      "train images have none; label them (class subfolders, "
      "or labels in the .npz) or train 'dann' or "
      "'source_only'"
    )
  target_eval, source_eval = _labelled(data.target_test), _labelled(data.source_test)
  domain_pair = make_domain_pair(data.source_train, data.target_train)
  mean = np.asarray(domain_pair.mean)
  # With several processes (dann_jax.distributed), all train on the same
  # data; and this waits until all have checked `out` before process 0, the
  # only one that writes logs and summaries, writes there.
  distributed.check_same("data", data_fingerprint(data, mean))
  primary = distributed.is_primary()
  progress = progress and primary
  num_classes = data.source_train.num_classes
  state = _initial_state(plan, data, seeds)
  if primary:
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text(json.dumps(identity))
  # A run stopped before its first checkpoint resumes from step 0.
  if resume and checkpoint.latest_step(out / "checkpoint") is not None:
    state = checkpoint.restore_checkpoint(out / "checkpoint", state)
  # Evaluation, selection and checkpoints read Linen states.
  as_linen = lambda s: s
  if api == "nnx":
    template = state
    state = _nnx_state(plan, data, template)
    as_linen = lambda s: dann_nnx.to_linen_state(s, template)
  start = int(np.asarray(state.step).reshape(-1)[0])
  total = plan.config.total_steps

  metrics_path = out / "metrics.jsonl"
  history = _read_metrics(metrics_path, upto=start)
  if primary:
    metrics_path.write_text("".join(json.dumps(r) + "\n" for r in history))
  n_eval = plan.eval_size
  bar = None
  if progress:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, desc=f"{method} {pair.name}")
  last_eval: dict[str, Any] = {}
  scorer = None
  if keep_best is not None:
    view = selection.selection_set(data, mean)
    reverse_model = plan.make_model(num_classes)
    scorer = lambda s: selection.score_state(
      s, view, keep_best, reverse_config=plan.config, reverse_model=reverse_model, reverse_steps=reverse_steps
    )
    best = min((r for r in history if "selection" in r), key=lambda r: r["selection"], default=None)
    last_eval["best"] = None if best is None else (best["selection"], best["step"])
  t0 = time.perf_counter()

  def on_chunk(state: TrainState, metrics: dict[str, np.ndarray]) -> None:
    state = as_linen(state)
    step = int(np.asarray(state.step).reshape(-1)[0])
    row = {"step": step}
    for k, v in metrics.items():  # (steps,) or (steps, seeds)
      row[k] = _per_seed(np.mean(v, axis=0))
    if step % plan.eval_every == 0 or step == total:
      for key, test in (("target_accuracy", target_eval), ("source_accuracy", source_eval)):
        if test is not None:
          row[key] = _per_seed(accuracy(state, test.images[:n_eval], test.labels[:n_eval], mean))
      if "target_accuracy" in row:
        last_eval["target"] = np.mean(row["target_accuracy"])
      if scorer is not None:
        row["selection"] = scorer(state)
        if last_eval["best"] is None or row["selection"] < last_eval["best"][0]:
          checkpoint.save_checkpoint(out / "best", state)
          last_eval["best"] = (row["selection"], step)
      checkpoint.save_checkpoint(out / "checkpoint", state, max_to_keep=None)
    history.append(row)
    if primary:
      with metrics_path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    if bar is not None:
      bar.update(len(metrics["loss"]))
      postfix = {
        "Ly": np.mean(row["label_loss"]),
        "Ld": np.mean(row["domain_loss"]),
        "dacc": np.mean(row["domain_accuracy"]),
        "lam": np.mean(row["lambda"]),
      }
      if "target" in last_eval:
        postfix["tgt"] = last_eval["target"]
      bar.set_postfix({k: f"{v:.3f}" for k, v in postfix.items()}, refresh=False)

  try:
    state = fit(
      state,
      domain_pair,
      num_steps=total,
      batch_size=plan.config.batch_size,
      num_classes=num_classes,
      chunk=100 if plan.eval_every % 100 == 0 else plan.eval_every,
      callback=on_chunk,
      runner=runner,
    )
    state = as_linen(state)
  except BaseException:
    if primary and not resume and checkpoint.latest_step(out / "checkpoint") is None:
      _remove_run_files(out)  # nothing to resume: leave the folder reusable
    raise
  finally:
    if bar is not None:
      bar.close()
  train_seconds = time.perf_counter() - t0

  def test_accuracy(test_state, test):
    if test is None:
      return None
    return accuracy_stats(accuracy(test_state, test.images, test.labels, mean))

  summary = {
    **identity,
    "target_accuracy": test_accuracy(state, target_eval),
    "source_accuracy": test_accuracy(state, source_eval),
    "source_val_size": 0 if data.source_val is None else len(data.source_val),
    "source_val_accuracy": None
    if data.source_val is None
    else accuracy_stats(accuracy(state, data.source_val.images, data.source_val.labels, mean)),
    "target_test_size": 0 if target_eval is None else len(target_eval),
    "paper_v1": (pair.paper or {}).get(method),
    "paper_icml": (pair.paper_icml or {}).get(method),
    "train_seconds": round(train_seconds, 1),
    "steps_run": total - start,
    "machine": machine_description(),
    "note": plan.note,
    "config": dataclasses.asdict(plan.config),
    "network": plan.network,
    "provenance": {
      "source": data.source_train.provenance,
      "target": data.target_train.provenance,
      "source_test": data.source_test.provenance,
      "target_test": data.target_test.provenance,
    },
  }
  if keep_best is not None:
    score, best_step = last_eval["best"]
    best_state = checkpoint.restore_checkpoint(out / "best", state)
    summary["best"] = {
      "criterion": keep_best,
      "step": best_step,
      "score": score,
      "final_score": history[-1]["selection"],
      "target_accuracy": test_accuracy(best_state, target_eval),
      "source_accuracy": test_accuracy(best_state, source_eval),
    }
  if primary:
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
  if plots and primary:
    from dann_jax.plots import training_curves

    training_curves(history, out / "curves.png", title=f"{method} on {pair.name}")
  return RunResult(summary, state, mean, data, identity)


def plan_of(identity: dict[str, Any]) -> RunPlan:
  """The plan of the run described by `identity` (a run folder's run.json)."""
  return make_plan(
    pair_of(identity),
    identity["method"],
    identity["preset"],
    steps=identity["steps"],
    batch_size=identity["batch_size"],
    seed=identity["seeds"][0],
    overrides=identity.get("overrides"),
    source_holdout=identity.get("source_holdout", 0),
  )


def load_run(run_dir: str | os.PathLike, *, data: PairData | None = None, data_dir=None) -> RunResult:
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
  run_dir = Path(run_dir)
  run_file = run_dir / "run.json"
  if not run_file.exists():
    raise FileNotFoundError(f"{run_dir} holds no run (no run.json); pass a folder written by `dann-jax train`")
  identity = json.loads(run_file.read_text())
  pair = pair_of(identity)
  seeds = identity["seeds"]
  plan = plan_of(identity)
  data = with_holdout(
    data or load_pair_data(pair, data_dir=data_dir, splits=identity.get("splits")), plan.source_holdout
  )
  mean = pixel_mean(data.source_train.images, data.target_train.images)
  state = checkpoint.restore_checkpoint(run_dir / "checkpoint", _initial_state(plan, data, seeds))
  summary_file = run_dir / "summary.json"
  summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
  return RunResult(summary, state, mean, data, identity)
