"""Several processes, one per host: joining them, who writes, and checks that they agree.

`initialize(coordinator, num_processes, process_id)` joins this process to
the others through `jax.distributed.initialize`, after which `jax.devices()`
lists every process's devices and `dann_jax.parallel` trains over all of
them. With no arguments it joins only inside a cluster job that JAX knows how
to read (SLURM, Open MPI, a Cloud TPU pod with `TPU_WORKER_HOSTNAMES`) and
that has several processes; otherwise it does nothing, and the run stays one
plain process.

Before JAX's own rendezvous, the processes meet once over a plain TCP socket
on the coordinator's port: process 0 listens there, the others connect and
send their process id, process count and configuration. So a coordinator
that cannot be reached, a missing or repeated process id, or processes
started with different configurations end, in every process, with one
`ValueError` naming the cause, within the topology timeout (instead of
JAX's rendezvous, which retries for minutes and then aborts the process).
The same timeout bounds JAX's rendezvous, its shutdown wait and `barrier` /
`check_same`: `topology_timeout` seconds, by default
$DANN_JAX_TOPOLOGY_TIMEOUT or 120.

Every process runs the same program on the same data with the same seed;
`is_primary()` (process 0) alone writes logs, metrics and summaries.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from typing import Any, Mapping

import jax

DEFAULT_TIMEOUT = 120  # seconds
TIMEOUT_ENV = "DANN_JAX_TOPOLOGY_TIMEOUT"
# JAX's failure detector: a process that stops sending heartbeats for this
# long is declared dead. Shorter timeouts are for tests, not for heartbeats
# of a loaded machine.
MIN_HEARTBEAT = 60
_GREETING = "dann-jax join 1"
_RETRY = 0.25  # seconds between attempts to reach the coordinator


@dataclasses.dataclass(frozen=True)
class Topology:
  """Who this process is among the processes of one run.

  Attributes:
    coordinator: HOST:PORT of process 0, where the others join.
    num_processes: how many processes take part.
    process_id: this process's index, in [0, num_processes).
    cluster: the cluster job it was read from ("slurm", "ompi", "tpu"), or
      None when given explicitly.
    local_device_ids: the devices this process may use, where the cluster
      assigns them (one GPU per SLURM task); None for all.
  """

  coordinator: str
  num_processes: int
  process_id: int
  cluster: str | None = None
  local_device_ids: tuple[int, ...] | None = None


def resolve_timeout(topology_timeout: float | None = None) -> float:
  """The topology timeout in seconds: the argument, else $DANN_JAX_TOPOLOGY_TIMEOUT, else 120.

  Raises:
    ValueError: for a timeout that is not a positive number.
  """
  if topology_timeout is None:
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
      return float(DEFAULT_TIMEOUT)
    try:
      topology_timeout = float(text)
    except ValueError:
      raise ValueError(f"{TIMEOUT_ENV}={text!r} must be a number of seconds, e.g. 120") from None
  if not topology_timeout > 0:
    raise ValueError(f"`topology_timeout={topology_timeout}` must be a positive number of seconds, e.g. 120")
  return float(topology_timeout)


def _timeout_hint(timeout: float) -> str:
  return f"the topology timeout ({timeout:g} s; raise it with `topology_timeout` or {TIMEOUT_ENV})"


def _several(value: str | None) -> bool:
  try:
    return value is not None and int(value) > 1
  except ValueError:
    return False


def detect_cluster(environ: Mapping[str, str] | None = None) -> str | None:
  """The multi-process cluster job this process runs in, from its environment.

  Only environment variables are read (nothing is asked over the network),
  and a job of a single process counts as none, so a plain run, or one task
  inside an allocation, stays single-process.

  Args:
    environ: the environment; `os.environ` if None.

  Returns:
    "slurm" (an `srun` step of several tasks), "ompi" (`mpirun` of several
    ranks), "tpu" (a Cloud TPU pod slice or GKE TPU job of several hosts), or
    None.
  """
  env = os.environ if environ is None else environ
  slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
  if all(name in env for name in slurm) and _several(env["SLURM_NTASKS"]):
    return "slurm"
  if "OMPI_MCA_orte_hnp_uri" in env and _several(env.get("OMPI_COMM_WORLD_SIZE")):
    return "ompi"
  hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES")
  if hosts and len(hosts.split(",")) > 1:
    return "tpu"
  return None


def _split_address(coordinator: str) -> tuple[str, int]:
  host, sep, port = str(coordinator).rpartition(":")
  host = host.strip("[]")  # [::1]:1234
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(
      f"`coordinator={coordinator}` must be HOST:PORT, the "
      "address of process 0 and a free port there, e.g. "
      "localhost:12355 or node001:12355"
    )
  return host, int(port)


def _cluster_topology(cluster: str, timeout: float) -> Topology:
  """The coordinator, count and id that JAX reads from a cluster job."""
  # JAX's own reading of SLURM, Open MPI and TPU environments (what
  # jax.distributed.initialize() does without arguments), called directly so
  # that the processes can meet and compare before JAX's rendezvous.
  try:
    from jax._src import clusters  # pylint: disable=import-outside-toplevel

    detect = clusters.ClusterEnv.auto_detect_unset_distributed_params
  except (ImportError, AttributeError):
    raise ValueError(
      f"a {cluster} job was detected, but this JAX does not "
      "say how it reads one; pass `coordinator`, "
      "`num_processes` and `process_id`"
    ) from None
  coordinator, count, index, local = detect(None, None, None, None, None, int(timeout))
  if None in (coordinator, count, index):
    raise ValueError(
      f"a {cluster} job was detected, but JAX could not read "
      "its coordinator, process count and process id from it; "
      "pass `coordinator`, `num_processes` and `process_id`"
    )
  return Topology(coordinator, int(count), int(index), cluster, None if local is None else tuple(local))


def resolve_topology(
  coordinator: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  *,
  environ: Mapping[str, str] | None = None,
  topology_timeout: float | None = None,
) -> Topology | None:
  """This process's place among the run's processes, checked; None for one plain process.

  Args:
    coordinator: HOST:PORT of process 0.
    num_processes: how many processes take part.
    process_id: this process's index.
    environ: the environment read for a cluster job (`detect_cluster`).
    topology_timeout: seconds JAX may take to read a cluster's coordinator.

  Returns:
    The topology: from the arguments when given (all three together), else
    from a detected cluster job; None when neither applies.

  Raises:
    ValueError: some but not all of the three arguments, a coordinator that
      is not HOST:PORT, fewer than one process, or a process id outside
      [0, num_processes).
  """
  given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
  if all(value is None for value in given.values()):
    cluster = detect_cluster(environ)
    if cluster is None:
      return None
    return _cluster_topology(cluster, resolve_timeout(topology_timeout))
  missing = [name for name, value in given.items() if value is None]
  if missing:
    raise ValueError(
      "`coordinator`, `num_processes` and `process_id` go together: give "
      f"{' and '.join(f'`{name}`' for name in missing)} too (or none of "
      "them for a single process, or inside a SLURM, Open MPI or TPU "
      "job)"
    )
  _split_address(coordinator)
  if int(num_processes) != num_processes or num_processes < 1:
    raise ValueError(f"`num_processes={num_processes}` must be a whole number >= 1")
  if int(process_id) != process_id or not 0 <= process_id < num_processes:
    raise ValueError(
      f"`process_id={process_id}` must lie in [0, {num_processes - 1}] "
      f"for `num_processes={num_processes}`: number the processes 0 to "
      f"{num_processes - 1}, process 0 on the coordinator's host"
    )
  return Topology(str(coordinator), int(num_processes), int(process_id))


def _send(conn: socket.socket, message: dict) -> None:
  conn.sendall((json.dumps(message) + "\n").encode())


def _receive(conn: socket.socket, limit: int = 1 << 20) -> dict | None:
  """One JSON line from `conn`; None for anything else (a stray client)."""
  data = b""
  while not data.endswith(b"\n"):
    chunk = conn.recv(65536)
    if not chunk or len(data) > limit:
      return None
    data += chunk
  try:
    message = json.loads(data)
  except ValueError:
    return None
  return message if isinstance(message, dict) else None


def _differences(mine: Any, theirs: Any, index: Any) -> str:
  if isinstance(mine, dict) and isinstance(theirs, dict):
    keys = sorted(set(mine) | set(theirs))
    return "; ".join(
      f"{k} {mine.get(k)!r} in process 0, {theirs.get(k)!r} in process {index}"
      for k in keys
      if mine.get(k) != theirs.get(k)
    )
  return f"{mine!r} in process 0, {theirs!r} in process {index}"


def _listen(port: int) -> socket.socket:
  try:
    if socket.has_dualstack_ipv6():
      return socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True, reuse_port=False)
    return socket.create_server(("", port))
  except OSError as e:
    raise ValueError(
      f"process 0 cannot listen on port {port} ({e.strerror or e}); pick another free port in `coordinator`"
    ) from None


def _gather(topology: Topology, config: Any, timeout: float) -> None:
  """Process 0: waits for every other process, checks what each sent, answers all."""
  deadline = time.monotonic() + timeout
  _, port = _split_address(topology.coordinator)
  server = _listen(port)
  joined: dict[int, socket.socket] = {}
  answer = []  # every process that joined, or tried to: each gets the verdict
  error = None
  try:
    server.settimeout(_RETRY)
    while len(joined) < topology.num_processes - 1 and error is None:
      remaining = deadline - time.monotonic()
      if remaining <= 0:
        missing = sorted(set(range(1, topology.num_processes)) - set(joined))
        error = (
          f"process(es) {missing} of {topology.num_processes} did not "
          f"join the coordinator {topology.coordinator} within "
          f"{_timeout_hint(timeout)}; start every process with the "
          "same `coordinator` and `num_processes` and its own "
          "`process_id`"
        )
        break
      try:
        conn, _ = server.accept()
      except (socket.timeout, InterruptedError):
        continue
      conn.settimeout(max(min(remaining, 10.0), 0.1))
      try:
        hello = _receive(conn)
      except OSError:
        hello = None
      if not hello or hello.get("greeting") != _GREETING:
        conn.close()  # not one of ours
        continue
      answer.append(conn)
      index, count = hello.get("process_id"), hello.get("num_processes")
      if count != topology.num_processes:
        error = (
          f"process {index} was started with `num_processes={count}`"
          f", process 0 with `num_processes={topology.num_processes}`"
          "; give every process the same count"
        )
      elif index in joined or index == 0:
        error = (
          f"two processes were started with `process_id={index}`; "
          "give each process its own id in "
          f"[0, {topology.num_processes - 1}]"
        )
      elif hello.get("config") != config:
        error = (
          f"process {index} was started with a different "
          f"configuration from process 0 "
          f"({_differences(config, hello.get('config'), index)}); start "
          "every process with the same arguments, only "
          "`process_id` differing"
        )
      if error is None:
        joined[index] = conn
    reply = {"error": error} if error else {"ok": True}
    for conn in answer:
      try:
        conn.settimeout(5.0)
        _send(conn, reply)
        # The clients close first, so that no closed connection holds the
        # port that JAX's coordinator binds next.
        conn.recv(1)
      except OSError:
        pass
  finally:
    for conn in answer:
      conn.close()
    server.close()
  if error:
    raise ValueError(error)


def _join(topology: Topology, config: Any, timeout: float) -> None:
  """Process 1...N-1: reaches process 0, says who it is, waits for its verdict."""
  deadline = time.monotonic() + timeout
  host, port = _split_address(topology.coordinator)
  conn, last = None, None
  while conn is None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
      raise ValueError(
        f"cannot reach the coordinator {topology.coordinator} (process 0) "
        f"within {_timeout_hint(timeout)}: {last}; start process 0 with "
        "the same `coordinator`, and check that this host can reach that "
        "address and port"
      )
    try:
      conn = socket.create_connection((host, port), timeout=min(remaining, 5))
    except OSError as e:
      last = e.strerror or str(e) or type(e).__name__
      time.sleep(min(_RETRY, max(deadline - time.monotonic(), 0)))
  with conn:
    conn.settimeout(max(deadline - time.monotonic(), 1.0))
    try:
      _send(
        conn,
        {
          "greeting": _GREETING,
          "process_id": topology.process_id,
          "num_processes": topology.num_processes,
          "config": config,
        },
      )
      reply = _receive(conn)
    except socket.timeout:
      raise ValueError(
        f"process 0 at {topology.coordinator} took this process in, but not "
        f"every one of the {topology.num_processes} processes joined within "
        f"{_timeout_hint(timeout)}; start them all"
      ) from None
    except OSError as e:
      reply, last = None, e
    if reply is None:
      raise ValueError(
        f"{topology.coordinator} did not answer as a dann-jax process 0 "
        "does: another program (or a run that already started) holds that "
        "port, or process 0 stopped; pick another port in `coordinator` "
        "and start all processes again"
      )
    if reply.get("error"):
      raise ValueError(reply["error"])


def rendezvous(topology: Topology, config: Any = None, topology_timeout: float | None = None) -> None:
  """Meets the other processes once over TCP and checks that they agree.

  Process 0 listens on the coordinator's port until every other process has
  connected; each sends its id, its process count and `config`. Any
  disagreement ends every process with the same ValueError.

  Args:
    topology: this process's place (`resolve_topology`).
    config: a JSON-serialisable value that must be equal in every process
      (e.g. the run's arguments, without the process id).
    topology_timeout: seconds to wait for the others (see
      `topology_timeout`).

  Raises:
    ValueError: the coordinator unreachable or its port taken, a process
      missing, two processes with one id, or different counts or configs.
  """
  timeout = resolve_timeout(topology_timeout)
  config = json.loads(json.dumps(config))  # as the other side receives it
  if topology.num_processes == 1:
    return
  if topology.process_id == 0:
    _gather(topology, config, timeout)
  else:
    _join(topology, config, timeout)


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
    config: what must be equal in every process (see `rendezvous`).
    topology_timeout: seconds to wait for the others, for JAX's rendezvous
      and shutdown, and for `barrier`/`check_same`; default
      $DANN_JAX_TOPOLOGY_TIMEOUT or 120.

  Returns:
    The topology joined, or None for a single plain process.

  Raises:
    ValueError: bad arguments, or the processes do not meet or disagree
      (`rendezvous`), each within the timeout.
  """
  timeout = resolve_timeout(topology_timeout)
  topology = resolve_topology(coordinator, num_processes, process_id, topology_timeout=timeout)
  if topology is None or topology.num_processes == 1:
    return topology
  if jax.distributed.is_initialized():
    if (jax.process_count(), jax.process_index()) != (topology.num_processes, topology.process_id):
      raise ValueError(
        f"JAX already joined as process {jax.process_index()} of "
        f"{jax.process_count()}, not `process_id={topology.process_id}` of "
        f"`num_processes={topology.num_processes}`"
      )
    return topology
  rendezvous(topology, config, timeout)
  seconds = max(1, int(round(timeout)))
  jax.distributed.initialize(
    topology.coordinator,
    topology.num_processes,
    topology.process_id,
    local_device_ids=(None if topology.local_device_ids is None else list(topology.local_device_ids)),
    # The topology is settled: JAX must not read a cluster's again.
    cluster_detection_method="deactivate",
    initialization_timeout=seconds,
    heartbeat_timeout_seconds=max(seconds, MIN_HEARTBEAT),
    shutdown_timeout_seconds=seconds,
  )
  _STATE["timeout"] = timeout
  return topology


_STATE: dict[str, Any] = {"timeout": None, "barriers": 0}


def is_primary() -> bool:
  """Whether this is process 0, the one that writes logs and summaries."""
  return jax.process_index() == 0


def _client():
  # JAX keeps the coordination client of jax.distributed.initialize here;
  # it is the bounded-time way to wait for other processes (collectives
  # over the devices would wait forever for a process that is gone).
  from jax._src import distributed as jax_distributed  # pylint: disable=import-outside-toplevel

  return jax_distributed.global_state.client


def _wait_ms(topology_timeout: float | None) -> tuple[float, int]:
  timeout = topology_timeout if topology_timeout is not None else _STATE["timeout"] or resolve_timeout(None)
  return timeout, max(1, int(timeout * 1000))


def barrier(name: str, topology_timeout: float | None = None) -> None:
  """Waits until every process reaches the barrier `name`; no-op for one process.

  Raises:
    ValueError: if some process does not arrive within the topology timeout.
  """
  if jax.process_count() == 1:
    return
  timeout, ms = _wait_ms(topology_timeout)
  _STATE["barriers"] += 1
  try:
    _client().wait_at_barrier(f"dann_jax/{name}/{_STATE['barriers']}", ms)
  except Exception:  # noqa: BLE001 - XLA raises its own runtime error type
    raise ValueError(
      f"not every process reached {name!r} within {_timeout_hint(timeout)}; see the other processes' errors"
    ) from None


def check_same(name: str, value: Any, topology_timeout: float | None = None) -> None:
  """Raises ValueError unless every process passes an equal `value`.

  Args:
    name: what `value` is, for the message (one call per name and run).
    value: a JSON-serialisable value, e.g. a fingerprint of the data.
    topology_timeout: seconds to wait for the other processes' values.

  Raises:
    ValueError: naming the processes whose value differs from process 0's,
      or those that did not answer within the timeout.
  """
  if jax.process_count() == 1:
    return
  timeout, ms = _wait_ms(topology_timeout)
  client = _client()
  prefix = f"dann_jax/same/{name}"
  mine = json.dumps(value, sort_keys=True)
  client.key_value_set(f"{prefix}/{jax.process_index()}", mine)
  values = {}
  for index in range(jax.process_count()):
    try:
      values[index] = client.blocking_key_value_get(f"{prefix}/{index}", ms)
    except Exception:  # noqa: BLE001 - XLA raises its own runtime error type
      raise ValueError(
        f"process {index} did not report its {name} within {_timeout_hint(timeout)}; see its errors"
      ) from None
  differ = [i for i, v in values.items() if v != values[0]]
  if differ:
    raise ValueError(
      f"the {name} differ between processes: process(es) {differ} hold "
      f"{json.loads(values[differ[0]])!r}, process 0 "
      f"{json.loads(values[0])!r}; give every process the same code, data "
      "and arguments"
    )
