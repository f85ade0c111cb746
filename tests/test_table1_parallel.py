"""experiments/paper/table1_parallel.py: each run trains in a folder of its own and lands in the harness's layout."""

import importlib.util
import json
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

_SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "paper" / "table1_parallel.py"
_spec = importlib.util.spec_from_file_location("table1_parallel", _SCRIPT)
table1_parallel = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(table1_parallel)

# Stands in for `dann-jax reproduce table1`: writes the run folder and record the harness would, notes whether the
# run folder was already there (a resumed run), and counts its calls.
_FAKE_HARNESS = textwrap.dedent(
  """
  import json, sys
  from pathlib import Path
  a = dict(zip(sys.argv[1::2], sys.argv[2::2]))
  pair = a["--pairs"].replace("->", "_to_")
  name = f"{a['--methods']}_s{a['--seed']}"
  run = Path(a["--runs"]) / pair / name
  resumed = run.exists()
  run.mkdir(parents=True, exist_ok=True)
  (run / "summary.json").write_text("{}")
  record = Path(a["--results"]) / "table1" / "records" / "paper" / pair / f"{name}.json"
  record.parent.mkdir(parents=True, exist_ok=True)
  record.write_text(json.dumps({"resumed": resumed}))
  with open(Path(a["--runs"]).parents[3] / "calls.txt", "a") as f:
    f.write(name + "\\n")
  """
)


def _fake_harness(args, runs: str, results: str, *options: str) -> list[str]:
  return [sys.executable, "-c", _FAKE_HARNESS, "--runs", runs, "--results", results, *options]


def _args(root: Path) -> SimpleNamespace:
  runs = root / "runs"
  return SimpleNamespace(
    preset="paper", steps=None, runs=str(runs), results=str(root / "results"), work=str(runs / "_jobs")
  )


def test_runs_land_in_the_harness_layout_and_finished_ones_are_reused(tmp_path, monkeypatch):
  monkeypatch.setattr(table1_parallel, "_harness", _fake_harness)
  args = _args(tmp_path)
  deadline = time.monotonic() + 600
  pair = "mnist->mnist-m"
  # A run stopped earlier in the shared layout is handed back to its job, which resumes it.
  stopped = tmp_path / "runs" / "mnist_to_mnist-m" / "dann_s1"
  stopped.mkdir(parents=True)
  for method, seed in (("source_only", 0), ("dann", 1)):
    job = table1_parallel.run_job(args, pair, method, seed, deadline)
    assert job["rc"] == 0 and job["recorded"]
  for method, seed, resumed in (("source_only", 0, False), ("dann", 1, True)):
    assert (tmp_path / "runs" / "mnist_to_mnist-m" / f"{method}_s{seed}" / "summary.json").exists()
    record = tmp_path / "results" / "table1" / "records" / "paper" / "mnist_to_mnist-m" / f"{method}_s{seed}.json"
    assert json.loads(record.read_text()) == {"resumed": resumed}
    own = tmp_path / "runs" / "_jobs" / f"mnist_to_mnist-m_{method}_s{seed}"
    assert not (own / "runs" / "mnist_to_mnist-m" / f"{method}_s{seed}").exists()
  # Finished runs are not trained again.
  again = table1_parallel.run_job(args, pair, "dann", 1, deadline)
  assert again["reused"]
  assert (tmp_path / "calls.txt").read_text().split() == ["source_only_s0", "dann_s1"]


def test_no_run_starts_without_time_left(tmp_path, monkeypatch):
  monkeypatch.setattr(table1_parallel, "_harness", _fake_harness)
  job = table1_parallel.run_job(_args(tmp_path), "mnist->mnist-m", "dann", 0, time.monotonic() + 5)
  assert job["skipped"] and job["rc"] is None
  assert not (tmp_path / "calls.txt").exists()
