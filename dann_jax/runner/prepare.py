"""What a run starts from, and a run folder read back.

`prepare` checks a run against its folder and its data, loads the data and
builds the starting state (or restores it from the folder's checkpoint, with
the guard's weaker λ where it recovered before); `load_run` rebuilds a finished
or checkpointed run from its folder. Training them is `dann_jax.runner.runs`'s.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dann_jax.backend import distributed
from dann_jax.core import methods, networks
from dann_jax.core import nnx as dann_nnx
from dann_jax.core.train import TrainState, create_train_state, make_schedules
from dann_jax.data import make_domain_pair
from dann_jax.data.batching import pixel_mean
from dann_jax.data.pair_data import PairData, data_fingerprint, load_pair_data, with_holdout
from dann_jax.io import write_text_atomic
from dann_jax.runner.folder import check_out_dir, read_guard_events, read_json_file, read_run_json
from dann_jax.runner.log import EvalSets, labelled
from dann_jax.runner.presets import RunConfig, config_of
from dann_jax.training import checkpoint, guard
from dann_jax.training.health import chance_loss
from dann_jax.training.loop import replicate_seeds
from dann_jax.validation import selection


@dataclasses.dataclass
class RunResult:
  """What a finished run leaves in memory (the harness reuses it)."""

  summary: dict[str, Any]
  state: TrainState
  mean: np.ndarray
  data: PairData
  identity: dict[str, Any] = dataclasses.field(default_factory=dict)


def initial_state(config: RunConfig, data: PairData) -> TrainState:
  """Step-0 state of the configured network; a leading seeds axis if several."""
  model = networks.build(config.network, data.source_train.num_classes)
  sample = jnp.zeros((1, *data.source_train.images.shape[1:]))
  make_state = lambda key: create_train_state(model, config.train, sample, key)
  if len(config.seeds) == 1:
    return make_state(jax.random.key(config.seeds[0]))
  return replicate_seeds(make_state, config.seeds)


def _nnx_state(config: RunConfig, data: PairData, linen_state: TrainState) -> dann_nnx.TrainState:
  """A single-seed Linen state in the NNX door (its network bridged): same
  weights, optimizer state, step and run key, so both doors take the same steps."""
  model = networks.build_nnx(config.network, data.source_train.num_classes, data.source_train.images.shape[1:])
  state = dann_nnx.create_train_state(model, config.train)
  return dann_nnx.from_linen_state(state, linen_state)


@dataclasses.dataclass
class Prepared:
  """A run ready to train: its checked data, the starting state, and what the log and summary need."""

  identity: dict[str, Any]
  data: PairData
  evals: EvalSets
  domain_pair: Any
  mean: np.ndarray
  chance: float  # the label loss of constant predictions on the labels the method trains on
  state: Any  # a Linen TrainState, or an NNX one for api "nnx"
  as_linen: Callable[[Any], TrainState]
  start: int
  guard_events: list[dict]
  scorer: Callable[[TrainState], float] | None
  primary: bool


def prepare(config: RunConfig, out: Path, *, resume, data, data_dir, runner, reverse_steps) -> Prepared:
  """Checks the run against `out` and its data, loads the data, and builds (or restores) the state.

  Nothing is written before every check has passed but the run folder's run.json.
  """
  pair, method, api = config.pair, config.method, config.api
  if api == "nnx" and (runner is not None or jax.process_count() > 1):
    raise ValueError(
      f"api='nnx' trains on one device in one process; got runner={runner!r} and "
      f"{jax.process_count()} process(es). Leave `runner` None in one process, or use api='linen'"
    )
  identity = config.identity()
  check_out_dir(out, identity, resume)
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
  evals = EvalSets(target=labelled(data.target_test), source=labelled(data.source_test))
  domain_pair = make_domain_pair(data.source_train, data.target_train)
  mean = np.asarray(domain_pair.mean)
  # With several processes (dann_jax.backend.distributed), all train on the same
  # data; and this waits until all have checked `out` before process 0, the
  # only one that writes logs and summaries, writes there.
  distributed.check_same("data", data_fingerprint(data, mean))
  primary = distributed.is_primary()
  state = initial_state(config, data)
  if primary:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "run.json", json.dumps({**identity, "config": config.resolved()}))
  # A run stopped before its first checkpoint resumes from step 0.
  if resume and checkpoint.latest_step(out / "checkpoint") is not None:
    state = checkpoint.restore_checkpoint(out / "checkpoint", state)
    # Past a damaged newer step (restore_checkpoint skipped it): delete it, or its save would be refused.
    checkpoint.delete_after(out / "checkpoint", int(np.asarray(state.step).reshape(-1)[0]))
  guard_events = read_guard_events(out) if config.guard is not None else []
  if guard_events:
    state = guarded_state(state, config, guard_events)
  # Evaluation, selection and checkpoints read Linen states.
  as_linen = lambda s: s
  if api == "nnx":
    template = state
    state = _nnx_state(config, data, template)
    as_linen = lambda s: dann_nnx.to_linen_state(s, template)
  scorer = None
  if config.keep_best is not None:
    view = selection.selection_set(data, mean)
    reverse_model = networks.build(config.network, data.source_train.num_classes)
    scorer = lambda s: selection.score_state(
      s, view, config.keep_best, reverse_config=config.train, reverse_model=reverse_model, reverse_steps=reverse_steps
    )
  start = int(np.asarray(state.step).reshape(-1)[0])
  return Prepared(
    identity, data, evals, domain_pair, mean, chance, state, as_linen, start, guard_events, scorer, primary
  )


def guarded_state(state: TrainState, config: RunConfig, events: Sequence[Mapping]) -> TrainState:
  """`state` with λ_p scaled as the guard left it after `events`."""
  base = make_schedules(config.train)[1]
  return state.replace(adaptation_factor=guard.scaled(base, guard.lambda_scale(len(events), config.guard)))


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
  state = checkpoint.restore_checkpoint(run_dir / "checkpoint", initial_state(config, data))
  summary_file = run_dir / "summary.json"
  fix = "delete it and resume the run (`resume=True`) to write it again"
  summary = read_json_file(summary_file, "the run's summary", fix) if summary_file.exists() else {}
  return RunResult(summary, state, mean, data, identity)
