"""Which devices a run uses, and putting arrays on them: device counts checked against the batch, meshes, placement.

A global batch of `batch_size` rows (half source, half target) splits evenly over `num_devices` when each device can
hold an equal share of both halves; `check_split` and `check_devices` say so once, naming the nearest sizes that
would work. `process_devices` lists this process's devices, or every process's after
`dann_jax.backend.distributed.initialize`; `make_mesh` lays them on a "data" axis; `place` puts a pytree on a sharding
without moving arrays that are already there.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from dann_jax.data.batching import half_batch

DATA_AXIS = "data"


def _nearest_valid(batch_size: int, num_devices: int) -> str:
  step = 2 * num_devices  # both halves split evenly
  below = batch_size // step * step
  sizes = [s for s in (below, below + step) if s > 0 and s != batch_size]
  return " or ".join(str(s) for s in sizes)


def check_split(batch_size: int, num_devices: int) -> None:
  """Raises ValueError unless both halves of the batch split evenly.

  Args:
    batch_size: the global batch, half source and half target.
    num_devices: the number of devices it is split over.

  Raises:
    ValueError: naming the nearest batch sizes that split.
  """
  if num_devices < 1:
    raise ValueError(f"{num_devices=} must be >= 1")
  half = half_batch(batch_size)
  if half % num_devices:  # then the whole batch splits too
    raise ValueError(
      f"batch_size={batch_size} with {num_devices} devices: each half "
      f"({half}) must split evenly; use "
      f"{_nearest_valid(batch_size, num_devices)}"
    )


def check_devices(batch_size: int, num_devices: int, available: int | None = None) -> None:
  """Raises ValueError for a batch that does not split or too few devices.

  Args:
    batch_size: the global batch, half source and half target.
    num_devices: the number of devices asked for.
    available: the devices there are; `jax.local_device_count()` if None.

  Raises:
    ValueError: naming the nearest valid batch sizes, or the device count
      that exists.
  """
  check_split(batch_size, num_devices)
  _check_available(num_devices, available)


def _check_available(num_devices: int, available: int | None = None) -> None:
  if num_devices < 1:
    raise ValueError(f"{num_devices=} must be >= 1")
  if available is None:
    available = jax.local_device_count()
  if num_devices > available:
    where = (
      f" in this process (process {jax.process_index()} of {jax.process_count()}; the count is per process)"
      if jax.process_count() > 1
      else ""
    )
    raise ValueError(
      f"{num_devices} devices asked for, but only {available} "
      f"{jax.default_backend()} device(s) exist{where}; use "
      f"`num_devices={available}` or fewer (on CPU, fake more with "
      "XLA_FLAGS=--xla_force_host_platform_device_count=N set before "
      "importing jax)"
    )


def _local_devices(num_devices: int | None) -> list:
  devices = jax.local_devices()
  if num_devices is None:
    return devices
  _check_available(num_devices, len(devices))
  return devices[:num_devices]


def process_devices(num_devices: int | None = None) -> list:
  """The first `num_devices` local devices of every process, process by process.

  With one process this is `jax.local_devices()[:num_devices]`; after
  `dann_jax.backend.distributed.initialize` it spans every process, each
  contributing the same number of devices.

  Args:
    num_devices: devices per process; all of each process's if None.

  Returns:
    The devices, ordered by process index, then in each process's order.

  Raises:
    ValueError: for more devices than this process has.
  """
  _local_devices(num_devices)  # checks the count against this process
  by_process: dict[int, list] = {}
  for device in jax.devices():
    by_process.setdefault(device.process_index, []).append(device)
  count = num_devices
  if count is None:
    count = min(len(devices) for devices in by_process.values())
  return [device for index in sorted(by_process) for device in by_process[index][:count]]


def place(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """Puts a value that every process holds in full onto `sharding`.

  Each process copies only the pieces its own devices hold, so nothing
  crosses processes (`jax.device_put` of host data onto a sharding that
  spans processes would also compare the value across them, and refuses a
  value already on a device). Arrays already laid out as `sharding` are
  returned as they are.

  Args:
    tree: a pytree of arrays (numpy, on a device, or PRNG keys), the same in
      every process: same code, data and seed.
    sharding: e.g. `NamedSharding(mesh, P())` for a copy on every device.

  Returns:
    The tree as `jax.Array`s with that sharding.
  """

  def put(x):
    if not isinstance(x, jax.Array):
      x = np.asarray(x)
    elif x.sharding.is_equivalent_to(sharding, x.ndim):
      return x
    pieces = [
      jax.device_put(x[index], device) for device, index in sharding.addressable_devices_indices_map(x.shape).items()
    ]
    return jax.make_array_from_single_device_arrays(x.shape, sharding, pieces)

  return jax.tree.map(put, tree)


def make_mesh(num_devices: int | None = None, devices: Sequence[Any] | None = None) -> Mesh:
  """A one-axis ("data") mesh over the first `num_devices` devices.

  Args:
    num_devices: how many; all of `devices` if None.
    devices: the devices to draw from; `jax.local_devices()` if None (pass
      `jax.devices()` for a multi-host mesh).

  Returns:
    The mesh.

  Raises:
    ValueError: for more devices than exist.
  """
  if devices is None:
    devices = _local_devices(num_devices)
  else:
    devices = list(devices)
    count = len(devices) if num_devices is None else num_devices
    _check_available(count, len(devices))
    devices = devices[:count]
  return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))
