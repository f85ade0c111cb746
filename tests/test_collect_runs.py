"""experiments/paper/collect_runs.py groups finished runs into mean +- std."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

_SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "paper" / "collect_runs.py"
_spec = importlib.util.spec_from_file_location("collect_runs", _SCRIPT)
collect_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(collect_runs)


def _fake_run(root: Path, name: str, method: str, seed: int, accuracy: float, trajectory: dict[int, float]) -> Path:
  run = root / name
  run.mkdir()
  summary = {
    "pair": "mnist->mnist-m",
    "method": method,
    "preset": "paper",
    "steps": 2000,
    "seeds": [seed],
    "target_accuracy": {"mean": accuracy, "std": 0.0, "per_seed": [accuracy]},
    "source_accuracy": {"mean": 0.98, "std": 0.0, "per_seed": [0.98]},
    "target_test_size": 10000,
    "paper_v1": 0.8149,
    "paper_icml": 0.7666,
    "train_seconds": 60.0 * (seed + 1),
    "machine": "test machine",
    "note": "",
    "config": {},
  }
  (run / "summary.json").write_text(json.dumps(summary))
  with open(run / "metrics.jsonl", "w") as f:
    for step in (500, 1000, 1500, 2000):
      row = {"step": step, "loss": 1.0}
      if step in trajectory:
        row["target_accuracy"] = trajectory[step]
      f.write(json.dumps(row) + "\n")
  return run


def test_groups_seeds_and_methods(tmp_path, capsys):
  runs = [
    _fake_run(tmp_path, "d0", "dann", 0, 0.90, {1000: 0.6, 2000: 0.9}),
    _fake_run(tmp_path, "d1", "dann", 1, 0.94, {1000: 0.7, 2000: 0.94}),
    _fake_run(tmp_path, "s0", "source_only", 0, 0.55, {1000: 0.5}),
  ]
  out = tmp_path / "results" / "paper"
  assert collect_runs.main([*map(str, runs), "--out", str(out), "--command", "dann-jax train ..."]) == 0
  record = json.loads(out.with_suffix(".json").read_text())
  rows = {r["method"]: r for r in record["rows"]}
  dann = rows["dann"]
  assert dann["seeds"] == [0, 1]
  assert dann["target_accuracy"]["mean"] == pytest.approx(0.92)
  assert dann["target_accuracy"]["std"] == pytest.approx(np.std([0.9, 0.94]))
  assert dann["trajectory"] == {"1000": [0.6, 0.7], "2000": [0.9, 0.94]}
  assert dann["train_seconds"] == [60.0, 120.0]
  assert rows["source_only"]["trajectory"] == {"1000": [0.5]}
  markdown = out.with_suffix(".md").read_text()
  assert "0.9200 +- 0.0200" in markdown and "0.9000 / 0.9400" in markdown
  assert "`dann-jax train ...`" in markdown


def test_unfinished_run_is_refused(tmp_path):
  (tmp_path / "half").mkdir()
  with pytest.raises(SystemExit, match="has not finished"):
    collect_runs.main([str(tmp_path / "half"), "--out", str(tmp_path / "o")])


def test_a_run_of_several_seeds_counts_each_seed(tmp_path):
  one = _fake_run(tmp_path, "d0", "dann", 0, 0.90, {2000: 0.9})
  both = _fake_run(tmp_path, "d12", "dann", 1, 0.0, {2000: [0.8, 0.7]})
  summary = json.loads((both / "summary.json").read_text())
  summary.update(seeds=[1, 2], target_accuracy={"mean": 0.75, "std": 0.05, "per_seed": [0.8, 0.7]})
  (both / "summary.json").write_text(json.dumps(summary))
  row = collect_runs.summarise([collect_runs.read_run(one), collect_runs.read_run(both)])
  assert row["seeds"] == [0, 1, 2]
  assert row["trajectory"] == {"2000": [0.9, 0.8, 0.7]}
  assert row["target_accuracy"]["per_seed"] == [0.9, 0.8, 0.7]


def test_trajectory_steps_below_a_thousand_keep_their_value(tmp_path):
  run = _fake_run(tmp_path, "q0", "dann", 0, 0.7, {500: 0.5, 1500: 0.6})
  out = tmp_path / "quick"
  assert collect_runs.main([str(run), "--out", str(out)]) == 0
  markdown = out.with_suffix(".md").read_text()
  assert "0.5k 0.500; 1.5k 0.600" in markdown
