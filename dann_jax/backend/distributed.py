"""Several processes, one per host: joining them, who writes, and checks that they agree.

`initialize(coordinator, num_processes, process_id)` joins this process to
the others through `jax.distributed.initialize`, after which `jax.devices()`
lists every process's devices and `dann_jax.training.parallel` trains over all of
them. With no arguments it joins only inside a cluster job of several
processes (SLURM, Open MPI, a Cloud TPU pod with `TPU_WORKER_HOSTNAMES`;
`detect_cluster`), whose coordinator, process count and process id
`jax.distributed.initialize` reads itself; otherwise it does nothing, and the
run stays one plain process.

For a topology given by hand, the processes first meet over TCP
(`dann_jax.backend.topology.rendezvous`), because JAX aborts the process
instead of raising when the coordinator cannot be reached, a process is
missing or two share an id: each of these ends every process with one
`ValueError` within the topology timeout. Once JAX has joined them, the
processes compare their configurations over `multihost_utils`, and
`barrier` / `check_same` use `multihost_utils` too. The topology timeout
(`topology_timeout` seconds, by default $DANN_JAX_TOPOLOGY_TIMEOUT or 120)
bounds the TCP meeting, JAX's rendezvous and its shutdown wait. `barrier` and
`check_same` are collectives, with no timeout of their own: a process that
is gone fails them (a `ValueError` here), or JAX ends every process once one
misses its heartbeat for max(timeout, 60) s.

Every process runs the same program on the same data with the same seed;
`is_primary()` (process 0) alone writes logs, metrics and summaries.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from dann_jax.backend.topology import (
  DEFAULT_TIMEOUT,
  TIMEOUT_ENV,
  Topology,
  detect_cluster,
  rendezvous,
  resolve_timeout,
  resolve_topology,
)

__all__ = [
  "DEFAULT_TIMEOUT",
  "TIMEOUT_ENV",
  "Topology",
  "barrier",
  "check_same",
  "detect_cluster",
  "initialize",
  "is_primary",
  "rendezvous",
  "resolve_timeout",
  "resolve_topology",
]

# JAX's failure detector: a process that stops sending heartbeats for this
# long is declared dead. Shorter timeouts are for tests, not for heartbeats
# of a loaded machine.
MIN_HEARTBEAT = 60
# `detect_cluster`'s names as `jax.distributed.initialize(cluster_detection_method=...)`
# spells them; a TPU job is left to JAX's own detection (GCE or GKE).
_JAX_CLUSTERS = {"slurm": "slurm", "ompi": "ompi", "tpu": None}


def _stopped(what: str) -> ValueError:
  return ValueError(f"a process stopped before {what}; see the other processes' errors")


def _all_values(what: str, value: Any) -> list[Any]:
  """Every process's JSON-serialisable `value`, in process order."""
  data = np.frombuffer(json.dumps(value, sort_keys=True).encode(), np.uint8)
  # process_allgather needs one shape in every process: sizes first, then
  # every value padded to the longest.
  try:
    sizes = multihost_utils.process_allgather(np.int32(data.size))
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    rows = multihost_utils.process_allgather(padded)
  except jax.errors.JaxRuntimeError:  # a collective whose peer is gone
    raise _stopped(what) from None
  return [json.loads(row[:size].tobytes()) for row, size in zip(rows, sizes)]


def _differences(first: Any, other: Any, index: int) -> str:
  if isinstance(first, dict) and isinstance(other, dict):
    keys = sorted(set(first) | set(other))
    return "; ".join(
      f"{k} {first.get(k)!r} in process 0, {other.get(k)!r} in process {index}"
      for k in keys
      if first.get(k) != other.get(k)
    )
  return f"{first!r} in process 0, {other!r} in process {index}"


def _check_configs(config: Any) -> None:
  configs = _all_values("the configuration check", config)
  differ = [i for i, c in enumerate(configs) if c != configs[0]]
  if differ:
    index = differ[0]
    raise ValueError(
      f"process {index} was started with a different configuration from process 0 "
      f"({_differences(configs[0], configs[index], index)}); start every process with the same arguments, only "
      "`process_id` differing"
    )


def _join_jax(topology: Topology, timeout: float) -> Topology:
  """`jax.distributed.initialize` with the topology's (or the cluster's) place and the timeout."""
  seconds = max(1, int(round(timeout)))
  timeouts = {
    "initialization_timeout": seconds,
    "heartbeat_timeout_seconds": max(seconds, MIN_HEARTBEAT),
    "shutdown_timeout_seconds": seconds,
  }
  if topology.cluster is None:
    jax.distributed.initialize(
      topology.coordinator,
      topology.num_processes,
      topology.process_id,
      # The topology is settled: JAX must not read a cluster's instead.
      cluster_detection_method="deactivate",
      **timeouts,
    )
    return topology
  try:
    jax.distributed.initialize(cluster_detection_method=_JAX_CLUSTERS[topology.cluster], **timeouts)
  except ValueError as e:
    raise ValueError(
      f"a {topology.cluster} job was detected, but JAX could not read its coordinator, process count and process "
      f"id from it ({e}); pass `coordinator`, `num_processes` and `process_id`"
    ) from None
  return dataclasses.replace(topology, num_processes=jax.process_count(), process_id=jax.process_index())


def initialize(
  coordinator: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  *,
  config: Any = None,
  topology_timeout: float | None = None,
) -> Topology | None:
  """Joins this process to the run's others (`jax.distributed.initialize`).

  Call it in every process before any JAX computation. Without arguments it
  joins only in a cluster job of several processes (`detect_cluster`);
  otherwise it returns None and leaves JAX alone.

  Args:
    coordinator: HOST:PORT of process 0 (any free port there).
    num_processes: how many processes take part.
    process_id: this process's index, 0 on the coordinator's host.
    config: a JSON-serialisable value that must be equal in every process
      (e.g. the run's arguments, without the process id).
    topology_timeout: seconds to wait for the others, for JAX's rendezvous
      and shutdown; default $DANN_JAX_TOPOLOGY_TIMEOUT or 120.

  Returns:
    The topology joined, or None for a single plain process.

  Raises:
    ValueError: bad arguments, the processes do not meet (`rendezvous`)
      within the timeout, or their configs differ.
  """
  timeout = resolve_timeout(topology_timeout)
  topology = resolve_topology(coordinator, num_processes, process_id)
  if topology is None or topology.num_processes == 1:
    return topology
  config = json.loads(json.dumps(config))  # not serialisable: fail before waiting
  if jax.distributed.is_initialized():
    if topology.cluster is None and (jax.process_count(), jax.process_index()) != (
      topology.num_processes,
      topology.process_id,
    ):
      raise ValueError(
        f"JAX already joined as process {jax.process_index()} of {jax.process_count()}, not "
        f"`process_id={topology.process_id}` of `num_processes={topology.num_processes}`"
      )
    return dataclasses.replace(topology, num_processes=jax.process_count(), process_id=jax.process_index())
  if topology.cluster is None:
    rendezvous(topology, timeout)
  topology = _join_jax(topology, timeout)
  _check_configs(config)
  return topology


def is_primary() -> bool:
  """Whether this is process 0, the one that writes logs and summaries."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name` (`multihost_utils.sync_global_devices`).

  A no-op for one process. It waits as long as the slowest process takes (a
  collective has no timeout); a process that is gone fails the collective,
  or JAX ends every process once one misses its heartbeat.

  Raises:
    ValueError: if the processes meet at barriers of different names, or a
      process stopped before the barrier.
  """
  if jax.process_count() == 1:
    return
  try:
    multihost_utils.sync_global_devices(f"dann_jax/{name}")
  except AssertionError:
    raise ValueError(
      f"the processes met at different barriers, this one at {name!r}; run the same code in every process"
    ) from None
  except jax.errors.JaxRuntimeError:  # a collective whose peer is gone
    raise _stopped(f"the barrier {name!r}") from None


def check_same(name: str, value: Any) -> None:
  """Raises ValueError unless every process passes an equal `value`.

  Every process's value is gathered over `multihost_utils.process_allgather`,
  so every process raises the same error.

  Args:
    name: what `value` is, for the message.
    value: a JSON-serialisable value, e.g. a fingerprint of the data.

  Raises:
    ValueError: naming the processes whose value differs from process 0's,
      or when a process stopped before the check (see `barrier`).
  """
  if jax.process_count() == 1:
    return
  values = _all_values(f"the check of the {name}", value)
  differ = [i for i, v in enumerate(values) if v != values[0]]
  if differ:
    raise ValueError(
      f"the {name} differ between processes: process(es) {differ} hold {values[differ[0]]!r}, process 0 "
      f"{values[0]!r}; give every process the same code, data and arguments"
    )
