"""Who is who among a run's processes, read and checked before JAX joins them.

`resolve_topology` reads this process's place from its arguments (process 0's
address, the process count, this process's id) or, with none of them, from a
cluster job of several processes (`detect_cluster`: SLURM, Open MPI, a Cloud
TPU pod), and checks the arguments.

`rendezvous` is the one check JAX's public machinery cannot give: with JAX
0.10, `jax.distributed.initialize` ends the process with a fatal error (an
abort, no Python exception, after `initialization_timeout`) when the
coordinator cannot be reached, when a process never starts, or when two
processes share one id. So, for a topology given by hand, the processes meet
once before JAX's rendezvous over a plain TCP socket on the coordinator's
port: process 0 listens there, the others connect and send their process id
and process count, and every process ends with one `ValueError` naming the
cause within the topology timeout. A cluster job skips it: the scheduler
numbers and starts every task, and JAX reads the coordinator from the job.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from typing import Mapping

DEFAULT_TIMEOUT = 120  # seconds
TIMEOUT_ENV = "DANN_JAX_TOPOLOGY_TIMEOUT"
_GREETING = "dann-jax join 2"
_RETRY = 0.25  # seconds between attempts to reach the coordinator


@dataclasses.dataclass(frozen=True)
class Topology:
  """Who this process is among the processes of one run.

  Attributes:
    coordinator: HOST:PORT of process 0, where the others join; None in a
      cluster job, whose coordinator JAX reads from the job.
    num_processes: how many processes take part; None in a cluster job until
      JAX has joined it.
    process_id: this process's index, in [0, num_processes); None in a
      cluster job until JAX has joined it.
    cluster: the cluster job it was read from ("slurm", "ompi", "tpu"), or
      None when given explicitly.
  """

  coordinator: str | None
  num_processes: int | None
  process_id: int | None
  cluster: str | None = None


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


def timeout_hint(timeout: float) -> str:
  """The timeout as error messages name it."""
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
      f"`coordinator={coordinator}` must be HOST:PORT, the address of process 0 and a free port there, e.g. "
      "localhost:12355 or node001:12355"
    )
  return host, int(port)


def resolve_topology(
  coordinator: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  *,
  environ: Mapping[str, str] | None = None,
) -> Topology | None:
  """This process's place among the run's processes, checked; None for one plain process.

  Args:
    coordinator: HOST:PORT of process 0.
    num_processes: how many processes take part.
    process_id: this process's index.
    environ: the environment read for a cluster job (`detect_cluster`).

  Returns:
    The topology: from the arguments when given (all three together), else
    a detected cluster job's (whose coordinator, count and id JAX reads when
    it joins); None when neither applies.

  Raises:
    ValueError: some but not all of the three arguments, a coordinator that
      is not HOST:PORT, fewer than one process, or a process id outside
      [0, num_processes).
  """
  given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
  if all(value is None for value in given.values()):
    cluster = detect_cluster(environ)
    return None if cluster is None else Topology(None, None, None, cluster)
  missing = [name for name, value in given.items() if value is None]
  if missing:
    raise ValueError(
      "`coordinator`, `num_processes` and `process_id` go together: give "
      f"{' and '.join(f'`{name}`' for name in missing)} too (or none of them for a single process, or inside a "
      "SLURM, Open MPI or TPU job)"
    )
  _split_address(coordinator)
  if int(num_processes) != num_processes or num_processes < 1:
    raise ValueError(f"`num_processes={num_processes}` must be a whole number >= 1")
  if int(process_id) != process_id or not 0 <= process_id < num_processes:
    raise ValueError(
      f"`process_id={process_id}` must lie in [0, {num_processes - 1}] for `num_processes={num_processes}`: "
      f"number the processes 0 to {num_processes - 1}, process 0 on the coordinator's host"
    )
  return Topology(str(coordinator), int(num_processes), int(process_id))


def _send(conn: socket.socket, message: dict) -> None:
  conn.sendall((json.dumps(message) + "\n").encode())


def _receive(conn: socket.socket) -> dict | None:
  """One JSON line from `conn`; None for anything else (a stray client)."""
  with conn.makefile("rb") as lines:
    line = lines.readline(1 << 16)
  try:
    message = json.loads(line)
  except ValueError:
    return None
  return message if isinstance(message, dict) else None


def _listen(port: int) -> socket.socket:
  try:
    if socket.has_dualstack_ipv6():
      return socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True, reuse_port=False)
    return socket.create_server(("", port))
  except OSError as e:
    raise ValueError(
      f"process 0 cannot listen on port {port} ({e.strerror or e}); pick another free port in `coordinator`"
    ) from None


def _verdict(topology: Topology, hello: dict, joined: set) -> str | None:
  """Process 0's objection to one process's greeting, or None."""
  index, count = hello.get("process_id"), hello.get("num_processes")
  if count != topology.num_processes:
    return (
      f"process {index} was started with `num_processes={count}`, process 0 with "
      f"`num_processes={topology.num_processes}`; give every process the same count"
    )
  if index in joined or index == 0:
    return (
      f"two processes were started with `process_id={index}`; give each process its own id in "
      f"[0, {topology.num_processes - 1}]"
    )
  return None


def _gather(topology: Topology, timeout: float) -> None:
  """Process 0: waits for every other process, checks who each is, answers all."""
  deadline = time.monotonic() + timeout
  server = _listen(_split_address(topology.coordinator)[1])
  joined: set[int] = set()
  answer = []  # every process that joined, or tried to: each gets the verdict
  error = None
  try:
    server.settimeout(_RETRY)
    while len(joined) < topology.num_processes - 1 and error is None:
      remaining = deadline - time.monotonic()
      if remaining <= 0:
        missing = sorted(set(range(1, topology.num_processes)) - joined)
        error = (
          f"process(es) {missing} of {topology.num_processes} did not join the coordinator "
          f"{topology.coordinator} within {timeout_hint(timeout)}; start every process with the same "
          "`coordinator` and `num_processes` and its own `process_id`"
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
      error = _verdict(topology, hello, joined)
      joined.add(hello.get("process_id"))
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


def _connect(topology: Topology, deadline: float, timeout: float) -> socket.socket:
  host, port = _split_address(topology.coordinator)
  last = None
  while (remaining := deadline - time.monotonic()) > 0:
    try:
      return socket.create_connection((host, port), timeout=min(remaining, 5))
    except OSError as e:
      last = e.strerror or str(e) or type(e).__name__
      time.sleep(min(_RETRY, max(deadline - time.monotonic(), 0)))
  raise ValueError(
    f"cannot reach the coordinator {topology.coordinator} (process 0) within {timeout_hint(timeout)}: {last}; "
    "start process 0 with the same `coordinator`, and check that this host can reach that address and port"
  )


def _join(topology: Topology, timeout: float) -> None:
  """Process 1...N-1: reaches process 0, says who it is, waits for its verdict."""
  deadline = time.monotonic() + timeout
  with _connect(topology, deadline, timeout) as conn:
    conn.settimeout(max(deadline - time.monotonic(), 1.0))
    hello = {"greeting": _GREETING, "process_id": topology.process_id, "num_processes": topology.num_processes}
    try:
      _send(conn, hello)
      reply = _receive(conn)
    except socket.timeout:
      raise ValueError(
        f"process 0 at {topology.coordinator} took this process in, but not every one of the "
        f"{topology.num_processes} processes joined within {timeout_hint(timeout)}; start them all"
      ) from None
    except OSError:
      reply = None
  if reply is None:
    raise ValueError(
      f"{topology.coordinator} did not answer as a dann-jax process 0 does: another program (or a run that "
      "already started) holds that port, or process 0 stopped; pick another port in `coordinator` and start all "
      "processes again"
    )
  if reply.get("error"):
    raise ValueError(reply["error"])


def rendezvous(topology: Topology, topology_timeout: float | None = None) -> None:
  """Meets the other processes once over TCP and checks who each one is.

  Process 0 listens on the coordinator's port until every other process has
  connected; each sends its id and its process count. A process missing, two
  with one id or different counts end every process with the same
  ValueError. The processes' configurations are compared after JAX has
  joined them (`dann_jax.backend.distributed.initialize`).

  Args:
    topology: this process's place, given by hand (`resolve_topology`).
    topology_timeout: seconds to wait for the others (`resolve_timeout`).

  Raises:
    ValueError: the coordinator unreachable or its port taken, a process
      missing, two processes with one id, or different process counts.
  """
  timeout = resolve_timeout(topology_timeout)
  if topology.num_processes == 1:
    return
  if topology.process_id == 0:
    _gather(topology, timeout)
  else:
    _join(topology, timeout)
