"""Data-parallel training on several devices: sharded `jit` and `pmap`.

Both paths run the single-device step `dann_jax.core.train.train_step` on one
global batch of `batch_size` rows (half source, half target) split evenly over
the devices, each device holding an equal share of the source half and of the
target half. Losses are means over the global batch, so N devices take the
step one device would take, up to the order of floating-point sums.

- Sharding (current JAX practice): `make_mesh` builds a `Mesh` with a "data"
  axis; `make_sharded_runner(mesh)` jits the chunk of steps (with the loop's
  `runner_jit`, and like `fit` on one device as one scan, or on CPU as a host
  loop of jitted steps) with the state replicated and each sampled batch
  constrained to be split along "data". XLA inserts the gradient all-reduce.
- pmap (legacy, still common): `make_pmap_train_step` wraps
  `train_step(..., axis_name=...)`, which `psum`s gradients and `pmean`s model
  statistics; `make_pmap_runner(devices)` scans whole chunks inside the pmap
  (`jax.pmap` itself: it takes no compiler options).

Both runners have the signature `fit(..., runner=...)` expects, take and
return an ordinary single-device state (or one with a leading seeds axis from
`replicate_seeds`), so checkpoints and evaluation do not change.

Several processes (`dann_jax.backend.distributed.initialize`, one per host): the
sharded runner runs over a mesh of every process's devices
(`process_devices`). Each process holds the same state and `DomainPair`
(same code, data and seed), `place`s them on the global mesh without any
cross-process transfer, and samples the same global batch from the same
sampler state; each device keeps only its rows, so a process computes only
its share of every batch, and the gradient all-reduce crosses processes (over
gloo on CPU). The returned state is replicated: every process ends each
chunk with the same state. The pmap runner stays within one process.

With dropout (the SVHN net) the masks differ from a single device's (the
pmap step folds the device index into the dropout key; the sharded path
reorders rows): same distribution, different draws. Nets without dropout
(the MNIST net) reproduce one device to floating-point tolerance.

Choosing and checking the devices, the mesh and placement are `dann_jax.backend.devices`' (their names are
importable from here too).

References: Sec. 5 of Ganin & Lempitsky, arXiv 1409.7495 (each batch is half
source, half target; the loss is the mean over the batch).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dann_jax.backend.devices import DATA_AXIS, check_devices, check_split, make_mesh, place, process_devices
from dann_jax.core.train import TrainState, train_step
from dann_jax.data.batching import DomainPair
from dann_jax.names import PARALLEL_KINDS
from dann_jax.training.loop import host_loop, prefers_host_loop, runner_jit, step_on_pair, train_on_pair

PMAP_AXIS = "devices"

# The device helpers users reach through this module too.
__all__ = [
  "DATA_AXIS",
  "PMAP_AXIS",
  "Runner",
  "check_devices",
  "check_split",
  "interleave_batch",
  "make_mesh",
  "make_pmap_runner",
  "make_pmap_train_step",
  "make_runner",
  "make_sharded_runner",
  "place",
  "process_devices",
  "replicate",
  "split_batch",
  "unreplicate",
]

Runner = Callable[[TrainState, DomainPair, int, int], tuple[TrainState, Any]]


def split_batch(batch: dict[str, Any], num_devices: int) -> dict[str, Any]:
  """Splits a global batch into per-device shards, half source, half target.

  Shard d is [source rows of block d, target rows of block d], where the
  source half (first B/2 rows) and target half (last B/2 rows) are each cut
  into `num_devices` consecutive blocks.

  Args:
    batch: arrays with a leading axis of B rows, first half source.
    num_devices: N; both halves must split evenly.

  Returns:
    The same arrays reshaped to (N, B/N, ...).

  Raises:
    ValueError: if B/2 is not divisible by N.
  """

  def split(x):
    check_split(x.shape[0], num_devices)
    halves = x.reshape((2, num_devices, -1) + x.shape[1:])
    return jnp.swapaxes(halves, 0, 1).reshape((num_devices, -1) + x.shape[1:])

  return jax.tree.map(split, batch)


def interleave_batch(batch: dict[str, Any], num_devices: int) -> dict[str, Any]:
  """Reorders rows to [S0 T0 S1 T1 ...] so N equal row blocks split both halves.

  Args:
    batch: arrays with a leading axis of B rows, first half source.
    num_devices: N.

  Returns:
    The rows of `split_batch(batch, N)` laid end to end, shape (B, ...).
  """
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), split_batch(batch, num_devices))


def _per_seed(chunk: Callable, state: TrainState):
  """Runs `chunk(state)`, vmapped when `state` carries a leading seeds axis."""
  return jax.vmap(chunk)(state) if state.step.ndim else chunk(state)


def make_sharded_runner(mesh: Mesh, stepwise: bool | None = None) -> Runner:
  """A `fit` runner that splits each batch over the mesh's "data" axis.

  The state and the domain pair are replicated on every device; each sampled
  batch is reordered by `interleave_batch` and constrained to be sharded along
  "data", so device d holds the d-th share of the source and of the target
  rows. A chunk is one `lax.scan` (one compilation per chunk length and batch
  size), or on CPU a host loop of jitted steps, for the reason
  `dann_jax.training.loop.train_on_pair_stepwise` gives; the numbers are the same.

  The mesh may span several processes (`make_mesh(devices=process_devices())`
  after `dann_jax.backend.distributed.initialize`): every process then calls the
  runner with the same state and pair, and gets back the same state.

  Args:
    mesh: from `make_mesh`.
    stepwise: a host loop of jitted steps (True) or one scan per chunk
      (False); None picks the loop on CPU, the scan elsewhere.

  Returns:
    `runner(state, pair, num_steps, batch_size) -> (state, metrics)`; the
    returned state is replicated over the mesh (a normal `jax.Array` pytree).
  """
  num_devices = mesh.shape[DATA_AXIS]
  replicated = NamedSharding(mesh, P())
  by_rows = NamedSharding(mesh, P(DATA_AXIS))
  cached_pair = [None, None]  # (pair, its replicated copy): placed once

  def prepare(batch):
    return jax.lax.with_sharding_constraint(interleave_batch(batch, num_devices), by_rows)

  @runner_jit(static_argnums=(2, 3), donate_argnums=0, out_shardings=replicated)
  def run(state, pair, num_steps, batch_size):
    return _per_seed(lambda s: train_on_pair(s, pair, num_steps, batch_size, prepare, blocks=num_devices), state)

  @runner_jit(static_argnums=2, donate_argnums=0, out_shardings=replicated)
  def one_step(state, pair, batch_size):
    return _per_seed(lambda s: step_on_pair(s, pair, batch_size, prepare, blocks=num_devices), state)

  if stepwise is None:
    stepwise = prefers_host_loop()

  def run_stepwise(state, pair, num_steps, batch_size):
    # One step in flight at a time (`wait`): with many steps queued, XLA:CPU's
    # all-reduce between the local devices of one process stalled (here: a
    # chunk of 100 steps on 2 CPU devices stopped at a step's gradient
    # all-reduce, one device never arriving, until XLA aborted the process
    # 40 s later). Waiting costs little next to a CPU step.
    return host_loop(one_step, state, num_steps, pair, batch_size, stack_axis=state.step.ndim, wait=True)

  def runner(state, pair, num_steps, batch_size):
    check_split(batch_size, num_devices)
    if cached_pair[0] is not pair:
      cached_pair[:] = [pair, place(pair, replicated)]
    return (run_stepwise if stepwise else run)(place(state, replicated), cached_pair[1], num_steps, batch_size)

  return runner


def replicate(tree: Any, devices: Sequence[Any], axis_name: str = PMAP_AXIS) -> Any:
  """Copies every array of `tree` to each device, along a new leading axis.

  Args:
    tree: a pytree of arrays (e.g. a `TrainState` or a `DomainPair`).
    devices: the devices, in the order `jax.pmap(devices=...)` uses.
    axis_name: the name of the new axis' mesh.

  Returns:
    The tree with arrays of shape (len(devices), ...), one copy per device.
  """
  devices = list(devices)
  sharding = NamedSharding(Mesh(np.asarray(devices), (axis_name,)), P(axis_name))

  def copies(x):
    # One transfer per device, never an N-fold stack on a single device.
    x = jnp.asarray(x)[None]
    return jax.make_array_from_single_device_arrays(
      (len(devices),) + x.shape[1:], sharding, [jax.device_put(x, device) for device in devices]
    )

  return jax.tree.map(copies, tree)


def unreplicate(tree: Any) -> Any:
  """The first device's copy of a `replicate`d (or pmap output) tree."""

  def first(x):
    if not isinstance(x, jax.Array) or len(x.sharding.device_set) == 1:
      return x[0]
    # The first shard's data avoids a gather across devices.
    shard = x.addressable_shards[0].data
    return shard if x.sharding.is_fully_replicated else shard[0]

  return jax.tree.map(first, tree)


def make_pmap_train_step(axis_name: str = PMAP_AXIS, devices: Sequence[Any] | None = None) -> Callable:
  """`train_step` inside `jax.pmap`: gradients summed, statistics averaged.

  Use with `replicate(state, devices)` and `split_batch(batch, len(devices))`:

    step = make_pmap_train_step(devices=devices)
    state = replicate(state, devices)
    state, metrics = step(state, split_batch(batch, len(devices)))

  Args:
    axis_name: the pmapped axis, passed to `train_step` for its collectives.
    devices: the devices to map over; all local devices if None.

  Returns:
    `step(replicated_state, sharded_batch) -> (replicated_state, metrics)`;
    every device's metrics are those of the global batch.
  """
  return jax.pmap(
    functools.partial(train_step, axis_name=axis_name), axis_name=axis_name, devices=devices, donate_argnums=0
  )


def check_single_process(kind: str) -> None:
  """Raises ValueError for the pmap path when JAX runs several processes.

  `jax.pmap` here maps over one process's devices; across processes, the
  sharded runner over a global mesh is the supported path.
  """
  if jax.process_count() > 1:
    raise ValueError(
      f"`parallel={kind}` trains within one process, and this is process "
      f"{jax.process_index()} of {jax.process_count()}; use "
      "`parallel=sharding` to train across processes"
    )


def make_pmap_runner(devices: Sequence[Any], axis_name: str = PMAP_AXIS) -> Runner:
  """A `fit` runner that scans chunks of steps inside `jax.pmap`.

  Each device samples the same global batch (same key, same step), keeps its
  shard by `lax.axis_index` (see `split_batch`), and takes
  `train_step(..., axis_name=axis_name)`. The state is replicated on the way
  in and the first copy returned, so `fit` and checkpoints see one state.

  Args:
    devices: the devices to map over (e.g. `jax.local_devices()[:n]`).
    axis_name: the pmapped axis' name.

  Returns:
    `runner(state, pair, num_steps, batch_size) -> (state, metrics)`.

  Raises:
    ValueError: when this process is one of several (use the sharded runner).
  """
  check_single_process("pmap")
  devices = list(devices)
  num_devices = len(devices)
  cached_pair = [None, None]  # (pair, its replicated copy): placed once

  def own_shard(batch):
    index = jax.lax.axis_index(axis_name)
    return jax.tree.map(
      lambda x: jax.lax.dynamic_index_in_dim(x, index, keepdims=False), split_batch(batch, num_devices)
    )

  @functools.partial(
    jax.pmap, axis_name=axis_name, devices=devices, static_broadcasted_argnums=(2, 3), donate_argnums=0
  )
  def run(state, pair, num_steps, batch_size):
    return _per_seed(
      lambda s: train_on_pair(s, pair, num_steps, batch_size, own_shard, axis_name, blocks=num_devices), state
    )

  def runner(state, pair, num_steps, batch_size):
    check_split(batch_size, num_devices)
    if cached_pair[0] is not pair:
      cached_pair[:] = [pair, replicate(pair, devices, axis_name)]
    state, metrics = run(replicate(state, devices, axis_name), cached_pair[1], num_steps, batch_size)
    return unreplicate(state), unreplicate(metrics)

  return runner


def make_runner(kind: str, num_devices: int | None = None, batch_size: int | None = None) -> Runner:
  """The `fit` runner for `--parallel kind --devices num_devices`.

  With several processes (`dann_jax.backend.distributed.initialize`), `num_devices`
  counts each process's devices and the sharded runner spans them all
  (`process_devices`); the batch is split over the global device count.

  Args:
    kind: "sharding" (mesh + `jax.jit`) or "pmap".
    num_devices: how many local devices (per process); all if None.
    batch_size: checked against the device count now if given, so a bad
      combination fails before data is loaded.

  Returns:
    `runner(state, pair, num_steps, batch_size) -> (state, metrics)`.

  Raises:
    ValueError: an unknown kind, too many devices, a batch that does not
      split evenly (the message names the nearest sizes that do), or pmap
      with several processes.
  """
  if kind not in PARALLEL_KINDS:
    raise ValueError(f"unknown parallel kind {kind!r}; choose one of {PARALLEL_KINDS}")
  if kind == "pmap":
    check_single_process(kind)
  devices = process_devices(num_devices)
  if batch_size is not None:
    check_split(batch_size, len(devices))
  if kind == "sharding":
    return make_sharded_runner(make_mesh(devices=devices))
  return make_pmap_runner(devices)
