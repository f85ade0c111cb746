"""Several processes joined by jax.distributed on this machine: 2 processes x 2 CPU devices = 1 device.

Each test starts child processes with `JAX_NUM_CPU_DEVICES=2` that join over
a free localhost port (`dann_jax.backend.distributed.initialize`) and all-reduce over
gloo: the library's (this file run as a script, `library_child`, `check_child`) or the
`dann-jax train` command's. The pytest process computes the one-device
reference meanwhile. Every child is killed if it outlives its time limit.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import linen as nn

from dann_jax.backend import distributed
from dann_jax.cli import main
from dann_jax.core.config import TrainConfig
from dann_jax.core.models import DANN, MLP
from dann_jax.core.train import create_train_state
from dann_jax.data.batching import make_domain_pair
from dann_jax.runner.runs import load_run
from dann_jax.training import checkpoint, parallel
from dann_jax.training.evaluation import accuracy
from dann_jax.training.loop import fit

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHILD_LIMIT = 150  # seconds any child may run before it is killed
BATCH = 8  # one source and one target row on each of the 4 global devices
STEPS = 3
CLASSES = 3


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def child_env(**extra) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="2", PYTHONPATH=str(ROOT), **extra)
  env.pop("XLA_FLAGS", None)  # the device count comes from JAX_NUM_CPU_DEVICES
  for name in ("SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri", "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES"):
    if name not in extra:
      env.pop(name, None)  # a cluster job only where a test makes one
  return env


@contextlib.contextmanager
def started(commands: list[list[str]], limit: float = CHILD_LIMIT, envs: list[dict] | None = None):
  """Starts the commands side by side and gives `wait() -> results`.

  Every child still alive `limit` seconds after the start, or when the
  block ends, is killed.
  """
  envs = envs or [child_env() for _ in commands]
  procs = [
    subprocess.Popen(c, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for c, env in zip(commands, envs)
  ]
  deadline = time.monotonic() + limit

  def wait() -> list[subprocess.CompletedProcess]:
    results = []
    for command, proc in zip(commands, procs):
      try:
        out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 0.1))
      except subprocess.TimeoutExpired:
        for p in procs:
          p.kill()
        pytest.fail(f"{command} ran past {limit} s and was killed")
      results.append(subprocess.CompletedProcess(command, proc.returncode, out, err))
    return results

  try:
    yield wait
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


def run_all(
  commands: list[list[str]], limit: float = CHILD_LIMIT, envs: list[dict] | None = None
) -> list[subprocess.CompletedProcess]:
  """Runs the commands side by side (see `started`)."""
  with started(commands, limit, envs) as wait:
    return wait()


def check_ok(results):
  for r in results:
    assert r.returncode == 0, f"{r.args} exited {r.returncode}:\n{r.stdout}\n{r.stderr[-4000:]}"


# --- a tiny problem: one compile of a few dense layers --------------------


class Flat(nn.Module):
  """Flattens images, then a small dense layer: the feature extractor."""

  @nn.compact
  def __call__(self, x):
    return nn.relu(nn.Dense(16)(x.reshape((x.shape[0], -1))))


def tiny_pair():
  rng = np.random.default_rng(0)

  def domain(n, shift):
    images = rng.integers(0, 256 - shift, (n, 8, 8, 3)) + shift
    return images.astype(np.uint8), rng.integers(0, CLASSES, n).astype(np.int32)

  return make_domain_pair(domain(24, 0), domain(24, 60))


def initial_state():
  model = DANN(features=Flat(), label_predictor=MLP((8,), CLASSES), domain_classifier=MLP((8,), 1))
  config = TrainConfig(total_steps=2 * STEPS, batch_size=BATCH, learning_rate=0.05)
  return create_train_state(model, config, np.zeros((1, 8, 8, 3), np.float32))


def flat_params(state) -> dict[str, np.ndarray]:
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(state.params))[0]
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def assert_close(actual: dict, expected: dict):
  """The tolerance of the multi-device test (tests/multi_device_checks.py)."""
  assert actual.keys() == expected.keys()
  for name in expected:
    np.testing.assert_allclose(actual[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def library_child(coordinator: str, num_processes: int, process_id: int, work: str) -> None:
  """Trains STEPS steps over every process's devices, saves and resumes."""
  work = pathlib.Path(work)
  topology = distributed.initialize(coordinator, num_processes, process_id, config={"test": "library"})
  assert topology is not None and jax.device_count() == 2 * num_processes
  pair, template = tiny_pair(), initial_state()
  runner = parallel.make_runner("sharding", batch_size=BATCH)
  state = fit(template, pair, num_steps=STEPS, batch_size=BATCH, num_classes=CLASSES, chunk=STEPS, runner=runner)
  # The accuracy counts every process's rows, so it is the global one.
  correct = accuracy(state, np.asarray(pair.source_images), np.asarray(pair.source_labels), pair.mean, batch_size=8)
  checkpoint.save_checkpoint(work / "by_two", state)  # every process saves
  # Resume, in these processes, the run that one process saved at STEPS
  # (the test saves it while these processes start).
  deadline = time.monotonic() + CHILD_LIMIT
  while not (work / "by_one_saved").exists() and time.monotonic() < deadline:
    time.sleep(0.1)
  resumed = checkpoint.restore_checkpoint(work / "by_one", initial_state())
  resumed = fit(resumed, pair, num_steps=2 * STEPS, batch_size=BATCH, num_classes=CLASSES, chunk=STEPS, runner=runner)
  result = {"process": process_id, "accuracy": correct}
  if distributed.is_primary():
    np.savez(
      work / "two.npz",
      **{f"stopped{k}": v for k, v in flat_params(state).items()},
      **{f"resumed{k}": v for k, v in flat_params(resumed).items()},
    )
  # Every process ends with the same state; each reports a checksum of it.
  result["checksum"] = float(sum(np.sum(v, dtype=np.float64) for v in flat_params(resumed).values()))
  print(json.dumps(result), flush=True)


def check_child(coordinator: str, num_processes: int, process_id: int) -> None:
  """A barrier, an equal value, then values that differ: every process reports the error."""
  distributed.initialize(coordinator, num_processes, process_id, topology_timeout=60)
  distributed.barrier("start")
  distributed.check_same("seed", {"seed": 0})
  try:
    distributed.check_same("answers", {"answer": process_id})
  except ValueError as e:
    print(json.dumps({"error": str(e)}), flush=True)


def child_command(*args) -> list[str]:
  return [sys.executable, str(pathlib.Path(__file__).resolve()), *map(str, args)]


@pytest.mark.slow
def test_two_processes_train_and_resume_like_one_device(tmp_path):
  """2 processes x 2 devices = 1 process x 1 device, and checkpoints cross over.

  The reference trains 2 * STEPS steps on one device, saving at STEPS. The
  children train STEPS steps over 4 devices in 2 processes (same global
  batches), save collectively, and resume the one-device checkpoint; this
  process resumes theirs. All four states agree with the reference.
  """
  pair = tiny_pair()
  stopped = {}

  def save_at_stop(state, _):
    if int(state.step) == STEPS:
      stopped.update(flat_params(state))
      checkpoint.save_checkpoint(tmp_path / "by_one", state)
      (tmp_path / "by_one_saved").touch()

  port = free_port()
  with started([child_command("library", f"localhost:{port}", 2, i, tmp_path) for i in (0, 1)]) as wait:
    reference = fit(
      initial_state(),
      pair,
      num_steps=2 * STEPS,
      batch_size=BATCH,
      num_classes=CLASSES,
      chunk=STEPS,
      callback=save_at_stop,
    )
    results = wait()
  check_ok(results)
  reports = [json.loads(r.stdout.strip().splitlines()[-1]) for r in results]
  two = np.load(tmp_path / "two.npz")
  assert_close({k[len("stopped") :]: two[k] for k in two.files if k.startswith("stopped")}, stopped)
  assert_close({k[len("resumed") :]: two[k] for k in two.files if k.startswith("resumed")}, flat_params(reference))
  assert reports[0]["checksum"] == reports[1]["checksum"]
  # The checkpoint two processes saved, resumed in this single process.
  resumed = checkpoint.restore_checkpoint(tmp_path / "by_two", initial_state())
  assert_close(flat_params(resumed), stopped)
  # The accuracy the children report counts all rows: one device's count.
  expected = accuracy(resumed, np.asarray(pair.source_images), np.asarray(pair.source_labels), pair.mean, batch_size=8)
  assert [r["accuracy"] for r in reports] == [expected, expected]
  resumed = fit(resumed, pair, num_steps=2 * STEPS, batch_size=BATCH, num_classes=CLASSES, chunk=STEPS)
  assert int(resumed.step) == 2 * STEPS
  assert_close(flat_params(resumed), flat_params(reference))


@pytest.mark.slow
def test_check_same_names_the_differing_process_in_every_process():
  port = free_port()
  results = run_all([child_command("check", f"localhost:{port}", 2, i) for i in (0, 1)], limit=90)
  check_ok(results)
  for r in results:
    assert json.loads(r.stdout.strip().splitlines()[-1])["error"] == (
      "the answers differ between processes: process(es) [1] hold {'answer': 1}, process 0 {'answer': 0}; "
      "give every process the same code, data and arguments"
    )


# --- the command line ------------------------------------------------------


@pytest.fixture
def tiny_mnist(offline_data_dir, fake_mnist):
  """The tiny MNIST of tests/conftest.py in the data cache the children read."""
  idx_dir, _ = fake_mnist
  assert main(["data", "fetch", "mnist", "--idx-dir", str(idx_dir), "--no-mirror"]) == 0
  return offline_data_dir


TRAIN = [
  "train",
  "--source",
  "mnist",
  "--target",
  "mnist-m",
  "--method",
  "dann",
  "--preset",
  "quick",
  "--steps",
  "4",
  "--batch-size",
  "8",
  "--no-progress",
]


def cli(*args) -> list[str]:
  return [sys.executable, "-m", "dann_jax.cli", *map(str, args)]


def joined(port: int, index: int, count: int = 2) -> list[str]:
  return ["--coordinator", f"localhost:{port}", "--num-processes", str(count), "--process-id", str(index)]


@pytest.mark.slow
def test_cli_two_processes_report_what_one_process_reports(tiny_mnist, tmp_path, capsys):
  """The acceptance run on tiny data: 2 processes x 2 devices vs 1 x 1.

  One process (this one) trains while the two children do; each builds the
  MNIST-M target (the cache is written atomically).
  """
  one, two = tmp_path / "one", tmp_path / "two"
  port = free_port()
  with started([cli(*TRAIN, "--out", two, *joined(port, i)) for i in (0, 1)]) as wait:
    assert main(TRAIN + ["--out", str(one)]) == 0
    results = wait()
  check_ok(results)
  assert "target accuracy" in results[0].stdout
  assert "target accuracy" not in results[1].stdout  # process 0 reports
  assert sorted(p.name for p in two.iterdir()) == [
    "checkpoint",
    "curves.png",
    "metrics.jsonl",
    "run.json",
    "summary.json",
  ]
  summary_one = json.loads((one / "summary.json").read_text())
  summary_two = json.loads((two / "summary.json").read_text())
  assert round(summary_two["target_accuracy"]["mean"], 3) == round(summary_one["target_accuracy"]["mean"], 3)
  assert "4 x cpu (cpu) in 2 processes" in summary_two["machine"]
  # The quick preset trains with Adam, whose normalised update turns the
  # float-order noise of a near-zero gradient into a larger relative change
  # than SGD's (tests above), so a looser tolerance on the parameters.
  expected = flat_params(load_run(one).state)
  for name, value in flat_params(load_run(two).state).items():
    np.testing.assert_allclose(value, expected[name], rtol=1e-4, atol=1e-5, err_msg=name)
  # The checkpoint of two processes, resumed by one: nothing left to train.
  capsys.readouterr()
  assert main(TRAIN + ["--out", str(two), "--resume"]) == 0
  again = json.loads((two / "summary.json").read_text())
  assert again["steps_run"] == 0
  assert again["target_accuracy"] == summary_two["target_accuracy"]


def error_lines(result) -> list[str]:
  return [line for line in result.stderr.splitlines() if line.startswith("dann-jax: error:") or "Traceback" in line]


@pytest.mark.slow
def test_cli_bad_topologies_end_with_one_error_in_bounded_time(tmp_path, capsys):
  out = ["--out", str(tmp_path / "run")]
  # Checked in the process itself, before anything waits.
  assert main(TRAIN + out + joined(1234, 2)) == 2
  assert capsys.readouterr().err == (
    "dann-jax: error: --process-id 2 must lie in [0, 1] for "
    "--num-processes 2: number the processes 0 to 1, process 0 on the "
    "coordinator's host\n"
  )
  assert main(TRAIN + out + ["--coordinator", "localhost:1234"]) == 2
  assert "give --num-processes and --process-id too" in capsys.readouterr().err
  # Processes that never meet, or meet and disagree, side by side; the last
  # two are an `srun` step of 2 tasks as SLURM describes it to each task,
  # joined with no flags.
  lonely_1, lonely_0, differ, slurm = (free_port() for _ in range(4))
  wait = ["--topology-timeout", "3"]
  batch_16 = [*TRAIN[:-3], "--batch-size", "16", "--no-progress", *out]
  commands = {
    "no coordinator": cli(*TRAIN, *out, *joined(lonely_1, 1), *wait),
    "no process 1": cli(*TRAIN, *out, *joined(lonely_0, 0), *wait),
    "batch 8": cli(*TRAIN, *out, *joined(differ, 0)),
    "batch 16": cli(*batch_16, *joined(differ, 1)),
    "slurm batch 8": cli(*TRAIN, *out),
    "slurm batch 16": cli(*batch_16),
  }
  task = lambda i: child_env(
    SLURM_JOB_ID="7",
    SLURM_STEP_NODELIST="localhost",
    SLURM_NTASKS="2",
    SLURM_PROCID=str(i),
    SLURM_LOCALID=str(i),
    JAX_COORDINATOR_PORT=str(slurm),
  )
  envs = [child_env() for _ in range(4)] + [task(0), task(1)]
  start = time.monotonic()
  results = dict(zip(commands, run_all(list(commands.values()), limit=90, envs=envs)))
  assert time.monotonic() - start < 90
  for name, result in results.items():
    assert result.returncode == 2, (name, result.stderr[-3000:])
    assert len(error_lines(result)) == 1, (name, result.stderr[-3000:])
  message = lambda name: error_lines(results[name])[0]
  assert "cannot reach the coordinator localhost:" in message(
    "no coordinator"
  ) and "within the topology timeout (3 s; raise it with --topology-timeout or DANN_JAX_TOPOLOGY_TIMEOUT)" in message(
    "no coordinator"
  )
  assert "process(es) [1] of 2 did not join" in message("no process 1")
  for name in ("batch 8", "batch 16", "slurm batch 8", "slurm batch 16"):
    assert (
      "process 1 was started with a different configuration from "
      "process 0 (--batch-size 8 in process 0, 16 in process 1)" in message(name)
    )
  assert not (tmp_path / "run").exists()


# --- topology checks: no process is started --------------------------------

SLURM = {
  "SLURM_JOB_ID": "7",
  "SLURM_STEP_NODELIST": "node[001-002]",
  "SLURM_NTASKS": "2",
  "SLURM_PROCID": "1",
  "SLURM_LOCALID": "0",
}


@pytest.mark.parametrize(
  "environ,cluster",
  [
    ({}, None),
    (SLURM, "slurm"),
    (dict(SLURM, SLURM_NTASKS="1"), None),  # one task: a plain process
    ({"OMPI_MCA_orte_hnp_uri": "1;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "4"}, "ompi"),
    ({"TPU_WORKER_HOSTNAMES": "t-0,t-1"}, "tpu"),
    ({"TPU_WORKER_HOSTNAMES": "t-0"}, None),
  ],
)
def test_detect_cluster_reads_only_the_environment(environ, cluster):
  assert distributed.detect_cluster(environ) == cluster


def test_no_arguments_outside_a_cluster_is_one_plain_process():
  assert distributed.resolve_topology(environ={}) is None
  topology = distributed.resolve_topology("node001:1234", 4, 3)
  assert (topology.coordinator, topology.num_processes, topology.process_id) == ("node001:1234", 4, 3)


@pytest.mark.parametrize(
  "args,message",
  [
    (("localhost:1234", 2, 2), "`process_id=2` must lie in [0, 1] for `num_processes=2`"),
    (("localhost:1234", 2, -1), "`process_id=-1` must lie in [0, 1]"),
    (("localhost:1234", 0, 0), "`num_processes=0` must be a whole number"),
    (("localhost", 2, 1), "`coordinator=localhost` must be HOST:PORT"),
    (("localhost:99999", 2, 1), "must be HOST:PORT"),
    (("localhost:1234", None, 1), "give `num_processes` too"),
    ((None, 2, None), "give `coordinator` and `process_id` too"),
  ],
)
def test_bad_topologies_name_the_argument(args, message):
  with pytest.raises(ValueError) as info:
    distributed.resolve_topology(*args, environ={})
  assert message in str(info.value)


def test_topology_timeout_from_argument_or_environment(monkeypatch):
  monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
  assert distributed.resolve_timeout() == distributed.DEFAULT_TIMEOUT
  assert distributed.resolve_timeout(7) == 7
  monkeypatch.setenv(distributed.TIMEOUT_ENV, "30")
  assert distributed.resolve_timeout() == 30
  with pytest.raises(ValueError, match="`topology_timeout=0` must be a positive number"):
    distributed.resolve_timeout(0)
  monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
  with pytest.raises(ValueError, match="DANN_JAX_TOPOLOGY_TIMEOUT='soon'"):
    distributed.resolve_timeout()


def test_one_process_joins_nothing():
  assert distributed.initialize("localhost:1", 1, 0).num_processes == 1
  assert not jax.distributed.is_initialized()
  distributed.barrier("alone")  # no-ops for one process
  distributed.check_same("alone", 1)


if __name__ == "__main__":
  MODES = {"library": library_child, "check": check_child}
  mode, *rest = sys.argv[1:]
  coordinator, count, index, *more = rest
  MODES[mode](coordinator, int(count), int(index), *more)
