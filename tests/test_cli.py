"""End-to-end CLI runs on tiny stand-in data: files written and read back."""

import json

import numpy as np
import pytest

from dann_jax.cli import main


@pytest.fixture
def tiny_mnist(offline_data_dir, fake_mnist):
  idx_dir, _ = fake_mnist
  assert main(["data", "fetch", "mnist", "--idx-dir", str(idx_dir),
               "--no-mirror"]) == 0
  return offline_data_dir


TRAIN = ["train", "--source", "mnist", "--target", "mnist-m", "--steps", "4",
         "--batch-size", "8", "--no-progress"]


def test_train_writes_and_resumes(tiny_mnist, tmp_path, capsys):
  out = tmp_path / "run"
  assert main(TRAIN + ["--out", str(out)]) == 0
  summary = json.loads((out / "summary.json").read_text())
  assert summary["pair"] == "mnist->mnist-m" and summary["method"] == "dann"
  assert summary["steps"] == 4 and summary["seeds"] == [0]
  assert 0.0 <= summary["target_accuracy"]["mean"] <= 1.0
  assert summary["target_test_size"] == 20
  assert summary["paper_v1"] == pytest.approx(0.8149)
  rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [4]
  assert "target_accuracy" in rows[-1]
  assert np.isfinite(rows[-1]["loss"])
  assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
  printed = capsys.readouterr().out
  assert "target accuracy" in printed

  # The same folder again without --resume: a clear error, nothing touched.
  assert main(TRAIN + ["--out", str(out)]) == 2
  assert "already holds a run" in capsys.readouterr().err
  # A longer run resumed from the step-4 checkpoint is refused (different
  # run), the same run resumed is a no-op that rewrites the summary.
  assert main(TRAIN + ["--out", str(out), "--resume"]) == 0
  again = json.loads((out / "summary.json").read_text())
  assert again["target_accuracy"] == summary["target_accuracy"]
  assert again["steps_run"] == 0


def test_seeds_and_tsne(tiny_mnist, tmp_path, capsys):
  runs = []
  for method in ("source-only", "dann"):
    out = tmp_path / method
    args = TRAIN + ["--method", method, "--out", str(out), "--seeds", "2"]
    assert main(args) == 0
    runs.append(str(out))
  summary = json.loads((tmp_path / "dann" / "summary.json").read_text())
  assert len(summary["target_accuracy"]["per_seed"]) == 2
  capsys.readouterr()
  png = tmp_path / "tsne.png"
  assert main(["plot", "tsne", *runs, "--out", str(png), "-n", "12"]) == 0
  assert png.read_bytes()[:4] == b"\x89PNG"
  distances = json.loads(capsys.readouterr().out)["proxy_a_distance"]
  assert set(distances) == {"source_only", "dann"}


@pytest.mark.parametrize("args,message", [
    (["--source", "mnist", "--target", "cifar"], "unknown pair"),
    (["--source", "mnist", "--target", "mnist-m", "--seeds", "0"],
     "--seeds 0 must be >= 1"),
    (["--source", "mnist", "--target", "mnist-m", "--steps", "0"],
     "steps=0 must be positive"),
    (["--source", "mnist", "--target", "mnist-m", "--batch-size", "7"],
     "must be even"),
])
def test_bad_arguments(args, message, tmp_path, capsys):
  assert main(["train", *args, "--out", str(tmp_path / "x")]) == 2
  assert message in capsys.readouterr().err


def test_resume_without_run(tmp_path, capsys, tiny_mnist):
  assert main(TRAIN + ["--out", str(tmp_path / "none"), "--resume"]) == 2
  assert "nothing to resume" in capsys.readouterr().err


def test_train_on_four_fake_devices(tiny_mnist, tmp_path):
  import os
  import subprocess
  import sys
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  for parallel in ("sharding", "pmap"):
    out = tmp_path / parallel
    cmd = [sys.executable, "-m", "dann_jax.cli", "train", "--source", "mnist",
           "--target", "mnist-m", "--steps", "5", "--batch-size", "8",
           "--devices", "4", "--parallel", parallel, "--no-progress",
           "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 5
  # A half batch of 4 does not split over 3 devices: the nearest sizes.
  proc = subprocess.run(cmd[:-7] + ["--devices", "3", "--out",
                                    str(tmp_path / "bad")],
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2
  assert "use 6 or 12" in proc.stderr
