"""The training loop: chunks of steps on the device, seeds side by side, finite checks, one runner per backend.

`fit(state, pair, ...)` runs `dann_jax.core.train.train_step` from the state's step
up to a step count, chunk by chunk, with batches sampled on the device
(`dann_jax.data.batching.sample_batch`) and a host callback after each chunk
(evaluation, logging, checkpoints). A *runner*
`(state, pair, num_steps, batch_size) -> (state, metrics)` runs one chunk:
`default_runner` picks a host loop of jitted steps on CPU (XLA:CPU runs
convolutions inside a `while` loop several times slower) and one `lax.scan`
elsewhere; `dann_jax.training.parallel` builds multi-device runners on the same scan.
`nnx_runner` runs the same chunks on a `dann_jax.core.nnx.TrainState` (the NNX
front door), with the same batches, split into graph and arrays so that the
same jit applies.
This module makes the one choice of jit: `dann_jax.backend.xla_cpu.cpu_jit`, which is
`jax.jit` with XLA:CPU's convolutions on its Eigen kernels.

References: the training protocol of Sec. 5 of Ganin & Lempitsky,
arXiv 1409.7495.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dann_jax.backend.xla_cpu import cpu_jit
from dann_jax.core import methods, objective
from dann_jax.core import nnx as dann_nnx
from dann_jax.core.train import DATA_STREAM, TrainState, train_step
from dann_jax.data.batching import half_batch, sample_batch


def train_steps(state: TrainState, batches: dict[str, jax.Array]):
  """Runs one step per leading index of `batches` in a single `lax.scan`.

  Args:
    state: the train state.
    batches: a batch dict whose arrays carry a leading steps axis (K, B, ...).

  Returns:
    `(state, metrics)` with each metric stacked to shape (K,).
  """
  return jax.lax.scan(train_step, state, batches)


def step_batch(pair, run_key: jax.Array, step: jax.Array, batch_size: int, method=None) -> dict[str, jax.Array]:
  """The batch of `step` of the run of `run_key`, sampled on the device: the
  rows `method` needs (`dann_jax.core.methods.batch_rows`; all when None)."""
  rows = "both" if method is None else methods.batch_rows(method, pair.target_label_known is not None)
  return sample_batch(pair, jax.random.fold_in(run_key, DATA_STREAM), step, batch_size, rows)


def step_on_pair(
  state: TrainState,
  pair,
  batch_size: int,
  prepare: Callable | None = None,
  axis_name: str | None = None,
  blocks: int = 1,
):
  """One step on a batch sampled on the device from `pair` (see `train_on_pair`).

  A DANN step runs the label predictor on the labelled rows alone
  (`methods.labelled_prefix`): the first half of the sampled batch, or with
  `blocks` > 1 the source share of each block `prepare` leaves."""
  batch = step_batch(pair, state.key, state.step, batch_size, state.method)
  if prepare is not None:
    batch = prepare(batch)
  return train_step(
    state, batch, axis_name=axis_name, labelled_rows=_labelled_rows(state, pair, batch, batch_size, blocks)
  )


def _labelled_rows(state, pair, batch, batch_size: int, blocks: int) -> tuple[int, int] | None:
  """Where the labelled rows of the step's batch are (`models.row_blocks`): the
  sampled batch's labelled prefix, cut into `blocks` [source share, target
  share] blocks, of which the step's batch holds all (sharding) or one (pmap)."""
  prefix = methods.labelled_prefix(state.method, batch_size, pair.target_label_known is not None)
  if prefix is None:
    return None
  rows = jax.tree.leaves(batch)[0].shape[0]
  return rows * blocks // batch_size, prefix // blocks


def train_on_pair(
  state: TrainState,
  pair,
  num_steps: int,
  batch_size: int,
  prepare: Callable | None = None,
  axis_name: str | None = None,
  blocks: int = 1,
):
  """Runs `num_steps` steps in one `lax.scan`, sampling batches on the device.

  Args:
    state: the train state.
    pair: a `dann_jax.data.DomainPair` of device-resident source and target.
    num_steps: the number of steps (static).
    batch_size: samples per step (static), half source and half target.
    prepare: applied to each sampled batch (a multi-device runner's split).
    axis_name: passed to `train_step` inside `jax.pmap`.
    blocks: how many [source share, target share] row blocks `prepare` cuts
      the batch into (the devices' shares; 1 without `prepare`).

  Returns:
    `(state, metrics)` with each metric stacked to shape (num_steps,).
  """
  return jax.lax.scan(
    lambda s, _: step_on_pair(s, pair, batch_size, prepare, axis_name, blocks), state, None, length=num_steps
  )


def prefers_host_loop() -> bool:
  """Whether chunks run as a host loop of jitted steps (CPU) rather than one `lax.scan` (accelerators).

  XLA:CPU runs convolutions inside a `while` loop (what `lax.scan` lowers to)
  several times slower than the same convolutions at top level (measured
  here: a 5x5 convolution's gradient took 375 ms per iteration in a scan,
  45 ms unrolled), so on CPU one dispatch per step beats one per chunk. Every
  runner (single device, seeds, NNX, the sharded mesh) asks this.
  """
  return jax.default_backend() == "cpu"


def host_loop(step: Callable, state, num_steps: int, *args, stack_axis: int = 0, wait: bool = False):
  """`num_steps` calls of a jitted `step(state, *args) -> (state, metrics)` from the host.

  Args:
    step: the jitted step.
    state: the state it takes and returns.
    num_steps: how many steps.
    *args: the step's other arguments (the same each step).
    stack_axis: where the steps axis goes in the stacked metrics (after a
      seeds axis, if any).
    wait: block until each step is done before dispatching the next.

  Returns:
    `(state, metrics)` with each metric stacked along `stack_axis`.
  """
  metrics = []
  for _ in range(num_steps):
    state, m = step(state, *args)
    metrics.append(m)
    if wait:
      jax.block_until_ready(state)
  return state, jax.tree.map(lambda *xs: jnp.stack(xs, axis=stack_axis), *metrics)


def train_on_pair_stepwise(state: TrainState, pair, num_steps: int, batch_size: int):
  """`train_on_pair` as a host loop of jitted steps (`host_loop`): same numbers, CPU-fast.

  The batches are still sampled on the device; only the step loop is on the host.
  """
  step = jit_step_on_pair if state.step.ndim == 0 else jit_step_on_pair_seeds
  # the steps axis goes after a seeds axis
  return host_loop(step, state, num_steps, pair, batch_size, stack_axis=state.step.ndim)


def first_non_finite(metrics: dict[str, Any], first_step: int) -> int | None:
  """The first step whose loss is not finite in stacked `metrics`, or None."""
  losses = np.asarray(metrics["loss"]).reshape(len(metrics["loss"]), -1)
  bad = np.flatnonzero(~np.isfinite(losses).all(axis=1))
  return None if bad.size == 0 else first_step + int(bad[0])


class Diverged(FloatingPointError):
  """The loss became non-finite at `step`; training stopped before it.

  Raised by `fit` before the chunk holding `step` reaches the callback, so no
  non-finite state is logged or checkpointed. Training is deterministic: a
  run resumed from an earlier checkpoint diverges at the same step again.
  """

  def __init__(self, step: int):
    self.step = step
    super().__init__(
      f"the loss became non-finite at step {step}; training stopped. Lower "
      "the learning rate (or lam_max), or check the inputs for NaN/inf."
    )

  def __reduce__(self):
    return type(self), (self.step,)


def check_finite(metrics: dict[str, Any], first_step: int) -> None:
  """Raises `Diverged` naming the first step with a non-finite loss."""
  step = first_non_finite(metrics, first_step)
  if step is not None:
    raise Diverged(step)


def params_finite(state) -> bool:
  """Whether every floating parameter of a Linen or NNX train state is finite.

  A chunk's losses are computed before each update, so its last update shows
  only here: a state that fails this would have a non-finite loss next.
  """
  params = nnx.state(state.model, nnx.Param) if isinstance(state, dann_nnx.TrainState) else state.params
  leaves = [x for x in jax.tree.leaves(params) if jnp.issubdtype(jnp.result_type(x), jnp.floating)]
  return bool(_all_finite(leaves))


@jax.jit
def _all_finite(leaves) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def chunk_sizes(start: int, stop: int, every: int) -> Iterator[int]:
  """Splits steps [start, stop) into chunks that end on multiples of `every`."""
  step = start
  while step < stop:
    size = min(every - step % every, stop - step)
    yield size
    step += size


def runner_jit(fun: Callable | None = None, **jit_kwargs):
  """The one choice of jit for every step and runner (single- and
  multi-device): `dann_jax.backend.xla_cpu.cpu_jit`, which is `jax.jit` except that on
  CPU it runs the convolutions on XLA's Eigen kernels.

  `fun` is traced under `objective.labels_checked_upstream()`: the callers check
  labels where the data enter (`fit`, `check_labels`), and without the
  in-graph check jit dispatches each call from C++."""
  if fun is None:
    return lambda fun: runner_jit(fun, **jit_kwargs)
  return cpu_jit(objective.LABELS_CHECKED_UPSTREAM.around(fun), **jit_kwargs)


jit_train_step = runner_jit(train_step, static_argnames=("axis_name", "labelled_rows"), donate_argnums=0)
jit_train_steps = runner_jit(train_steps, donate_argnums=0)
jit_train_on_pair = runner_jit(train_on_pair, static_argnums=(2, 3), donate_argnums=0)
jit_step_on_pair = runner_jit(step_on_pair, static_argnums=2, donate_argnums=0)


def nnx_step_on_pair(graphdef, arrays, pair, batch_size: int):
  """`step_on_pair` for a `dann_jax.core.nnx.TrainState` split by `nnx.split`.

  Returns:
    `(arrays, metrics)`: the new state's arrays (`nnx.merge(graphdef,
    arrays)` is the new state) and the step's metrics.
  """
  state = nnx.merge(graphdef, arrays)
  batch = step_batch(pair, state.key.get_value(), state.step, batch_size, state.method)
  _, metrics = dann_nnx.train_step(state, batch, labelled_rows=_labelled_rows(state, pair, batch, batch_size, 1))
  return nnx.state(state), metrics


def nnx_train_on_pair(graphdef, arrays, pair, num_steps: int, batch_size: int):
  """`train_on_pair` (one `lax.scan`) for a split `dann_jax.core.nnx.TrainState`."""
  return jax.lax.scan(lambda a, _: nnx_step_on_pair(graphdef, a, pair, batch_size), arrays, None, length=num_steps)


jit_nnx_step_on_pair = runner_jit(nnx_step_on_pair, static_argnums=(0, 3), donate_argnums=1)
jit_nnx_train_on_pair = runner_jit(nnx_train_on_pair, static_argnums=(0, 3, 4), donate_argnums=1)


def nnx_runner() -> Callable:
  """The chunk runner of a `dann_jax.core.nnx.TrainState`, updating it in place.

  As `default_runner`: a host loop of jitted steps on CPU and one scan
  elsewhere, with the batches of `step_on_pair`, so that from the same
  weights an NNX run takes the steps of a Linen one. The state is split into
  its graph (static) and its arrays for `runner_jit`, which on CPU adds
  `dann_jax.backend.xla_cpu`'s compile options that `nnx.jit` would not.
  """
  stepwise = prefers_host_loop()

  def run(state, pair, num_steps: int, batch_size: int):
    graphdef, arrays = nnx.split(state)
    if stepwise:
      step = lambda arrays, pair, batch_size: jit_nnx_step_on_pair(graphdef, arrays, pair, batch_size)
      arrays, metrics = host_loop(step, arrays, num_steps, pair, batch_size)
    else:
      arrays, metrics = jit_nnx_train_on_pair(graphdef, arrays, pair, num_steps, batch_size)
    nnx.update(state, arrays)
    return state, metrics

  return run


def check_labels(labels, num_classes: int, what: str, unknown_ok: bool = False) -> None:
  """Raises ValueError if any label lies outside [0, num_classes).

  With `unknown_ok`, negative labels mean "unknown" (an unlabelled target) and
  only the others are checked.
  """
  labels = np.asarray(labels)
  if unknown_ok:
    labels = labels[labels >= 0]
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(
      f"{what} labels must lie in [0, {num_classes}); found values in "
      f"[{labels.min()}, {labels.max()}]. Relabel the data or build the "
      f"model with num_classes={int(labels.max()) + 1}."
    )


def fit(
  state: TrainState,
  pair,
  *,
  num_steps: int,
  batch_size: int,
  num_classes: int,
  chunk: int = 100,
  callback: Callable[[TrainState, dict[str, np.ndarray]], None] | None = None,
  runner: Callable | None = None,
) -> TrainState:
  """Trains from `state.step` up to `num_steps`, one jitted scan per chunk.

  Args:
    state: the starting state (step 0, or restored from a checkpoint); with a
      leading seeds axis if it was built by `replicate_seeds`; or a
      `dann_jax.core.nnx.TrainState` (one seed), trained in place.
    pair: a `dann_jax.data.DomainPair` on the device.
    num_steps: the step to stop at.
    batch_size: samples per step, half source and half target.
    num_classes: the label predictor's number of classes (labels are checked).
    chunk: steps per compiled scan; chunks end on multiples of it, so a resumed
      run takes the same chunks.
    callback: called on the host after each chunk with the new state and the
      chunk's stacked metrics (evaluation, logging, checkpoints).
    runner: `(state, pair, num_steps, batch_size) -> (state, metrics)` running
      one chunk; by default the jitted `train_on_pair` (or its vmapped form for
      a seeds axis), or `nnx_runner()` for an NNX state. `dann_jax.training.parallel`
      provides multi-device runners.

  Returns:
    The state at `num_steps`.

  Raises:
    ValueError: for an odd batch size or labels outside [0, num_classes).
    Diverged: a `FloatingPointError` naming the first step whose loss is
      not finite (`.step`), or, when a chunk's last update leaves a
      parameter non-finite, the step after it; no such state reaches
      `callback` or is returned.
  """
  half_batch(batch_size)
  if int(num_steps) != num_steps or num_steps < 0:
    raise ValueError(f"{num_steps=} must be a non-negative integer: the step to stop at")
  if int(chunk) != chunk or chunk < 1:
    raise ValueError(f"{chunk=} must be a positive integer: steps per compiled chunk")
  check_labels(pair.source_labels, num_classes, "source")
  all_target = state.method.labelled == "target"
  if all_target or pair.target_label_known is not None:
    labels = np.asarray(pair.target_labels)
    check_labels(labels if all_target else labels[np.asarray(pair.target_label_known)], num_classes, "target")
  check_labels(pair.target_labels, num_classes, "target", unknown_ok=True)
  steps_axis = state.step.ndim  # 1 with a leading seeds axis
  if runner is not None:
    run = runner
  elif isinstance(state, dann_nnx.TrainState):
    run = nnx_runner()
  else:
    run = default_runner(seeds_axis=steps_axis == 1)
  start = int(np.asarray(state.step).reshape(-1)[0])
  for size in chunk_sizes(start, num_steps, chunk):
    first = int(np.asarray(state.step).reshape(-1)[0])
    state, metrics = run(state, pair, size, batch_size)
    metrics = jax.device_get(metrics)
    if steps_axis:
      metrics = {k: np.moveaxis(v, 0, -1) for k, v in metrics.items()}
    check_finite(metrics, first)
    if not params_finite(state):  # the chunk's last update: the loss at the next step would not be finite
      raise Diverged(first + size)
    if callback is not None:
      callback(state, metrics)
  return state


def default_runner(seeds_axis: bool = False) -> Callable:
  """The single-device chunk runner: one scan per chunk on accelerators (all
  seeds in one vmapped program), and on CPU a host loop of jitted steps (see
  `train_on_pair_stepwise`), one seed after the other (`train_on_pair_seed_by_seed`)."""
  if prefers_host_loop():
    return train_on_pair_seed_by_seed if seeds_axis else train_on_pair_stepwise
  return jit_train_on_pair_seeds if seeds_axis else jit_train_on_pair


def replicate_seeds(make_state: Callable[[jax.Array], TrainState], seeds) -> TrainState:
  """Stacks the states of several seeds along a leading axis for `jax.vmap`.

  Args:
    make_state: `key -> TrainState`, e.g. a partial of `create_train_state`.
    seeds: the integer seeds; each run gets `jax.random.key(seed)`.

  Returns:
    One state whose arrays have a leading axis of len(seeds).
  """
  seeds = list(seeds)
  if not seeds:
    raise ValueError("`seeds` is empty; give at least one seed")
  keys = jnp.stack([jax.random.key(int(s)) for s in seeds])
  return jax.vmap(make_state)(keys)


def seed_states(state: TrainState) -> list[TrainState]:
  """The single-seed states of a state with (or without) a seeds axis."""
  if state.step.ndim == 0:
    return [state]
  return [jax.tree.map(lambda x, i=i: x[i], state) for i in range(state.step.shape[0])]


def train_on_pair_seed_by_seed(state: TrainState, pair, num_steps: int, batch_size: int):
  """`train_on_pair_seeds` on the host: each seed's chunk in turn through the single-seed jitted step.

  On XLA:CPU a step vmapped over K seeds runs slower than K single-seed steps
  (its batched convolutions miss the kernels a single one uses; measured by
  experiments/bench/bench_seeds.py), so on CPU the seeds share one compiled
  step instead of one program. Each seed takes exactly the steps it takes
  alone.
  """
  runs = [train_on_pair_stepwise(s, pair, num_steps, batch_size) for s in seed_states(state)]
  stack = lambda *xs: jnp.stack(xs)
  return jax.tree.map(stack, *[r[0] for r in runs]), jax.tree.map(stack, *[r[1] for r in runs])


def train_on_pair_seeds(state: TrainState, pair, num_steps: int, batch_size: int):
  """`train_on_pair` for states with a leading seeds axis, in one program."""
  return jax.vmap(lambda s: train_on_pair(s, pair, num_steps, batch_size))(state)


def step_on_pair_seeds(state: TrainState, pair, batch_size: int):
  """`step_on_pair` for states with a leading seeds axis."""
  return jax.vmap(lambda s: step_on_pair(s, pair, batch_size))(state)


jit_train_on_pair_seeds = runner_jit(train_on_pair_seeds, static_argnums=(2, 3), donate_argnums=0)
jit_step_on_pair_seeds = runner_jit(step_on_pair_seeds, static_argnums=2, donate_argnums=0)
