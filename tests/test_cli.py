"""End-to-end CLI runs on tiny stand-in data: files written and read back."""

import json

import numpy as np
import pytest
from helpers import TRAIN, table1_args

from dann_jax.cli import main


@pytest.mark.slow
def test_train_writes_and_resumes(tiny_mnist, tmp_path, capsys):
  out = tmp_path / "run"
  assert main(TRAIN + ["--out", str(out)]) == 0
  summary = json.loads((out / "summary.json").read_text())
  assert summary["pair"] == "mnist->mnist-m" and summary["method"] == "dann"
  assert summary["steps"] == 4 and summary["seeds"] == [0]
  assert 0.0 <= summary["target_accuracy"]["mean"] <= 1.0
  assert summary["target_test_size"] == 20
  assert summary["paper_v1"] == pytest.approx(0.8149)
  assert summary["collapsed_at_step"] == [None]
  rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [4]
  assert "target_accuracy" in rows[-1]
  assert np.isfinite(rows[-1]["loss"])
  assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
  printed = capsys.readouterr().out
  assert "target accuracy" in printed

  # The same folder again without --resume: a clear error, nothing touched.
  assert main(TRAIN + ["--out", str(out)]) == 2
  err = capsys.readouterr().err
  assert "already holds a run" in err and "pass --resume to continue" in err
  # A longer run resumed from the step-4 checkpoint is refused (different
  # run), the same run resumed is a no-op that rewrites the summary.
  assert main(TRAIN + ["--out", str(out), "--resume"]) == 0
  again = json.loads((out / "summary.json").read_text())
  assert again["target_accuracy"] == summary["target_accuracy"]
  assert again["steps_run"] == 0


@pytest.mark.slow
def test_train_warns_when_a_seed_collapsed(tiny_mnist, tmp_path, capsys, monkeypatch):
  import dann_jax.runner.runs

  real = dann_jax.runner.runs.train_run

  def collapsing(*args, **kwargs):
    result = real(*args, **kwargs)
    result.summary["collapsed_at_step"] = [3, None]
    return result

  monkeypatch.setattr(dann_jax.runner.runs, "train_run", collapsing)
  out = tmp_path / "run"
  assert main(TRAIN + ["--seeds", "2", "--out", str(out)]) == 0
  assert json.loads((out / "summary.json").read_text())["collapsed_at_step"] == [None, None]  # as trained
  err = capsys.readouterr().err
  assert "dann-jax: warning: seed 0 collapsed at step 3: its training label loss went back to chance" in err
  assert "seed 1 collapsed" not in err
  for knob in ("--set learning_rate=", "--set lam_max=", "--set max_norm=", "source_holdout=N, one seed per run"):
    assert knob in err


def test_a_collapse_the_guard_cannot_mend_is_one_error_line(tmp_path, capsys, monkeypatch):
  import dann_jax.runner.runs
  from dann_jax.training.guard import Unrecoverable

  def collapsing(*args, **kwargs):
    raise Unrecoverable(6, "collapse")

  monkeypatch.setattr(dann_jax.runner.runs, "train_run", collapsing)
  assert main(TRAIN + ["--guard", "--out", str(tmp_path / "run")]) == 1
  err = capsys.readouterr().err
  assert err.startswith("dann-jax: error: the run's label loss went back to chance (collapse) at step 6")
  assert err.count("\n") == 1 and "Lower the learning rate" in err


def test_select_scores_each_seed_with_its_own_seed(tiny_mnist, tmp_path, monkeypatch, capsys):
  from dann_jax.validation import selection

  out = tmp_path / "run"
  assert main(TRAIN + ["--seeds", "2", "--out", str(out)]) == 0
  seen = []

  def recording(state, view, criterion, **kwargs):
    seen.append(kwargs["seed"])
    return float(kwargs["seed"])

  monkeypatch.setattr(selection, "score_state", recording)
  assert main(["select", str(out), "--criterion", "reverse-validation", "--out", str(tmp_path / "r.json")]) == 0
  assert seen == [0, 1]  # the reverse model of seed 1 is not seed 0's


def test_a_diverged_run_is_one_error_line(tmp_path, capsys, monkeypatch):
  import dann_jax.runner.runs
  from dann_jax.training.loop import Diverged

  def diverging(*args, **kwargs):
    raise Diverged(12)

  monkeypatch.setattr(dann_jax.runner.runs, "train_run", diverging)
  assert main(TRAIN + ["--out", str(tmp_path / "run")]) == 1
  err = capsys.readouterr().err
  assert err.startswith("dann-jax: error: the loss became non-finite at step 12") and "--set lam_max=" in err
  assert "Traceback" not in err


def test_a_run_that_diverges_after_a_checkpoint_leaves_the_step_beside_it(tiny_mnist, tmp_path, capsys, monkeypatch):
  import dann_jax.runner.runs
  from dann_jax.training.loop import Diverged

  real_fit = dann_jax.runner.runs.fit

  def fit_diverging_after_step_2(*args, callback, **kwargs):
    def chunk_done(state, metrics):
      callback(state, metrics)  # logs and checkpoints step 2
      raise Diverged(3)

    return real_fit(*args, callback=chunk_done, **kwargs)

  monkeypatch.setattr(dann_jax.runner.runs, "fit", fit_diverging_after_step_2)
  out = tmp_path / "run"
  assert main(TRAIN + ["--set", "eval_every=2", "--out", str(out)]) == 1
  assert "non-finite at step 3" in capsys.readouterr().err
  assert json.loads((out / "diverged.json").read_text()) == {"step": 3}
  assert sorted(p.name for p in (out / "checkpoint").iterdir()) == ["2"] and not (out / "summary.json").exists()


@pytest.mark.slow
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
  assert main(["plot", "tsne", *runs, "--out", str(png), "-n", "12", "--json"]) == 0
  assert png.read_bytes()[:4] == b"\x89PNG"
  last = capsys.readouterr().out.strip().splitlines()[-1]
  distances = json.loads(last)["proxy_a_distance"]
  assert set(distances) == {"source_only", "dann"}


@pytest.mark.slow
def test_keep_best_agrees_with_select(tiny_mnist, tmp_path, capsys):
  out = tmp_path / "kb"
  args = TRAIN[:-5] + [
    "--steps",
    "1000",
    "--batch-size",
    "8",
    "--no-progress",
    "--keep-best",
    "source-risk",
    "--out",
    str(out),
  ]
  assert main(args) == 0
  summary = json.loads((out / "summary.json").read_text())
  rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  scored = [(r["selection"], r["step"]) for r in rows if "selection" in r]
  assert [step for _, step in scored] == list(range(100, 1001, 100))
  best_score, best_step = min(scored)  # ties: the earliest step
  assert summary["best"]["step"] == best_step
  assert summary["best"]["score"] == best_score
  assert summary["best"]["final_score"] == scored[-1][0]
  assert "label-free best" in capsys.readouterr().out
  # The ranking of the same run's checkpoints by `select` agrees, and each
  # score is the held-out source error (4 of the 40 tiny MNIST images).
  ranking_file = tmp_path / "ranking.json"
  assert main(["select", str(out), "--criterion", "source-risk", "--checkpoints", "--out", str(ranking_file)]) == 0
  ranking = json.loads(ranking_file.read_text())["ranking"]
  assert len(ranking) == 10
  assert ranking[0]["step"] == best_step
  assert sorted(r["score"] for r in ranking) == [r["score"] for r in ranking]
  assert all(r["score"] * 4 == round(r["score"] * 4) for r in ranking)
  assert {r["step"]: r["score"] for r in ranking} == {step: score for score, step in scored}
  assert "10/10" in capsys.readouterr().err  # the progress bar counted every checkpoint
  # Every validator ranks the same checkpoints; BNM's risk is minus a nuclear norm / N, in [-1, 0).
  assert main(["select", str(out), "--criterion", "bnm", "--checkpoints", "--out", str(ranking_file)]) == 0
  bnm = json.loads(ranking_file.read_text())["ranking"]
  assert sorted(r["step"] for r in bnm) == list(range(100, 1001, 100))
  assert all(-1.0 <= r["score"] < 0.0 for r in bnm)


def test_select_refuses_runs_without_holdout(tiny_mnist, tmp_path, capsys):
  out = tmp_path / "paper"
  assert main(TRAIN + ["--preset", "paper", "--out", str(out)]) == 0
  capsys.readouterr()
  assert main(["select", str(out), "--criterion", "dev", "--out", str(tmp_path / "r.json")]) == 2
  assert "no held-out validation split" in capsys.readouterr().err
  assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_demo_writes_a_report_and_says_when_it_reuses(tiny_mnist, tmp_path, capsys):
  out = tmp_path / "demo"
  args = ["demo", "--steps", "4", "--batch-size", "8", "--no-progress", "--out", str(out)]
  assert main(args) == 0
  printed = capsys.readouterr().out
  report = out / "report.md"
  assert f"report: {report}" in printed
  text = report.read_text()
  assert "| DANN |" in text and "| source only |" in text
  assert "0.8149" in text  # the paper's number beside ours
  assert (out / "tsne.png").read_bytes()[:4] == b"\x89PNG"
  for link in ("tsne.png", "source_only/curves.png", "dann/curves.png"):
    assert f"]({link})" in text and (out / link).exists()
  assert "collapsed" not in text
  # The default validator's choice over both runs' checkpoints: their lowest risk.
  from dann_jax.validation.selection import DEFAULT_CRITERION

  risks = {
    (m, int(step)): e["scores"][DEFAULT_CRITERION]
    for m in ("source_only", "dann")
    for step, e in json.loads((out / m / "scores.json").read_text()).items()
  }
  method, step = min(risks, key=risks.get)
  assert f"label-free choice ({DEFAULT_CRITERION}" in printed and f": {method} at step {step:,}" in printed
  assert f"**{method} at step {step:,}**" in text
  # a reused DANN run whose summary names a collapse: the report says so
  summary_path = out / "dann" / "summary.json"
  summary_path.write_text(json.dumps(json.loads(summary_path.read_text()) | {"collapsed_at_step": [3]}))
  assert main(args) == 0
  assert "reusing the runs already in" in capsys.readouterr().out
  assert "**DANN collapsed at step 3**" in report.read_text()
  assert main(args + ["--force"]) == 0
  assert "training afresh" in capsys.readouterr().out


@pytest.mark.parametrize(
  "args,message",
  [
    (["--source", "mnist", "--target", "cifar"], "unknown pair"),
    (["--source", "mnist", "--target", "mnist-m", "--seeds", "0"], "--seeds 0 must be >= 1"),
    (["--source", "mnist", "--target", "mnist-m", "--steps", "0"], "steps=0 must be positive"),
    (["--source", "mnist", "--target", "mnist-m", "--batch-size", "7"], "must be even"),
  ],
)
def test_bad_arguments(args, message, tmp_path, capsys):
  assert main(["train", *args, "--out", str(tmp_path / "x")]) == 2
  assert message in capsys.readouterr().err


def test_resume_without_run(tmp_path, capsys, tiny_mnist):
  assert main(TRAIN + ["--out", str(tmp_path / "none"), "--resume"]) == 2
  err = capsys.readouterr().err
  assert "nothing to resume" in err and "without --resume" in err


@pytest.mark.slow
def test_train_on_four_fake_devices(tiny_mnist, tmp_path):
  import os
  import subprocess
  import sys

  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
  for parallel in ("sharding", "pmap"):
    out = tmp_path / parallel
    cmd = [
      sys.executable,
      "-m",
      "dann_jax.cli",
      "train",
      "--source",
      "mnist",
      "--target",
      "mnist-m",
      "--steps",
      "5",
      "--batch-size",
      "8",
      "--devices",
      "4",
      "--parallel",
      parallel,
      "--no-progress",
      "--out",
      str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 5
  # A half batch of 4 does not split over 3 devices: the nearest sizes.
  proc = subprocess.run(
    cmd[:-7] + ["--devices", "3", "--out", str(tmp_path / "bad")], env=env, capture_output=True, text=True, timeout=600
  )
  assert proc.returncode == 2
  assert "use 6 or 12" in proc.stderr


@pytest.mark.slow
def test_reproduce_tabulates_finished_runs_and_says_what_is_running(tiny_mnist, tmp_path, capsys):
  runs, results = tmp_path / "runs", tmp_path / "results"
  done = runs / "mnist_to_mnist-dilated" / "dann_s0"
  assert (
    main(
      TRAIN[:3]
      + ["--target", "mnist-dilated", "--steps", "4", "--batch-size", "8", "--no-progress", "--out", str(done)]
    )
    == 0
  )
  # A run stopped midway: its run.json and metrics, no summary.
  stopped = runs / "mnist_to_mnist-dilated" / "source_only_s0"
  stopped.mkdir(parents=True)
  (stopped / "run.json").write_text(json.dumps({"steps": 3000}))
  (stopped / "metrics.jsonl").write_text(json.dumps({"step": 1200}) + "\n")
  capsys.readouterr()
  assert main(table1_args(["mnist->mnist-dilated"], runs, results, "--table-only")) == 0
  table = json.loads((results / "table1_quick.json").read_text())
  cells = table["pairs"]["mnist->mnist-dilated"]
  finished = json.loads((done / "summary.json").read_text())
  assert cells["dann"] == finished["target_accuracy"]["per_seed"]
  assert cells["status"] == {
    "source_only": "seed 0: running: step 1,200 of 3,000",
    "target_only": "seed 0: not started",
  }
  assert table["steps"] == 4 and table["seeds"] == [0]
  md = (results / "table1_quick.md").read_text()
  assert "running: step 1,200 of 3,000" in md
  assert f"{finished['target_accuracy']['mean']:.4f}" in md


def test_set_overrides_config_fields(tiny_mnist, tmp_path):
  from dann_jax.cli.train import parse_overrides

  assert parse_overrides(
    ["learning_rate=3e-4", "optimizer=sgd", "anneal_learning_rate=false", "max_norm=none", "batch_size=64"]
  ) == {"learning_rate": 3e-4, "optimizer": "sgd", "anneal_learning_rate": False, "max_norm": None, "batch_size": 64}
  out = tmp_path / "set"
  assert main(TRAIN + ["--set", "lam_max=0.5", "--set", "adam_b1=0.8", "--out", str(out)]) == 0
  config = json.loads((out / "summary.json").read_text())["config"]
  assert config["lam_max"] == 0.5 and config["adam_b1"] == 0.8
  assert json.loads((out / "run.json").read_text())["overrides"] == {"lam_max": 0.5, "adam_b1": 0.8}


@pytest.mark.parametrize(
  "item,message",
  [
    ("lr=0.1", "FIELD one of"),
    ("learning_rate", "FIELD one of"),
    ("learning_rate=fast", "'fast' is not a valid float"),
    ("anneal_learning_rate=maybe", "not a valid bool"),
    ("total_steps=10", "use --steps"),
    ("learning_rate=-1", "learning_rate=-1.0 must be a finite number > 0"),
    ("eval_size=0", "--set eval_size=0 must be a positive integer"),
    ("source_holdout=-5", "source_holdout=-5 must be >= 0"),
  ],
)
def test_bad_set_is_one_clear_error(item, message, tmp_path, capsys):
  assert main(["train", "--source", "mnist", "--target", "mnist-m", "--set", item, "--out", str(tmp_path / "x")]) == 2
  err = capsys.readouterr().err
  assert message in err and err.count("\n") == 1
  assert not (tmp_path / "x").exists()


def test_keep_best_without_a_holdout_names_the_flag_that_adds_one(tmp_path, capsys):
  args = ["train", "--source", "mnist", "--target", "mnist-m", "--preset", "paper", "--keep-best", "source-risk"]
  assert main([*args, "--out", str(tmp_path / "x")]) == 2
  err = capsys.readouterr().err
  assert "--keep-best needs labelled source images" in err and "add --set source_holdout=N (N > 0)" in err
  assert not (tmp_path / "x").exists()


def test_out_naming_a_file_is_one_clear_error(tmp_path, capsys):
  target = tmp_path / "afile"
  target.write_text("x")
  assert main(["train", "--source", "mnist", "--target", "mnist-m", "--out", str(target)]) == 2
  assert "is a file" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_failing_at_start_leaves_its_folder_reusable(tiny_mnist, tmp_path, capsys):
  out = tmp_path / "run"
  # 40 tiny MNIST images cannot fill a batch of 128.
  assert main(TRAIN[:7] + ["--batch-size", "128", "--no-progress", "--out", str(out)]) == 2
  assert "use a smaller batch" in capsys.readouterr().err
  assert not out.exists()
  assert main(TRAIN + ["--out", str(out)]) == 0


def test_resume_over_a_damaged_checkpoint_is_one_clear_error(tiny_mnist, tmp_path, capsys):
  out = tmp_path / "run"
  assert main(TRAIN + ["--out", str(out)]) == 0
  (out / "summary.json").unlink()
  for path in (out / "checkpoint" / "4").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(b"damaged")
  capsys.readouterr()
  assert main(TRAIN + ["--out", str(out), "--resume"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("dann-jax: error: cannot read the checkpoint in ") and err.count("\n") == 1
  assert str(out / "checkpoint") in err and "start again without --resume" in err


def test_resume_past_a_damaged_newest_checkpoint_writes_that_step_again(tiny_mnist, tmp_path, capsys):
  import jax

  from dann_jax.runner.runs import load_run
  from dann_jax.training import checkpoint

  args = TRAIN + ["--set", "eval_every=2"]
  assert main(args + ["--out", str(tmp_path / "whole")]) == 0
  out = tmp_path / "run"
  assert main(args + ["--out", str(out)]) == 0
  (out / "summary.json").unlink()
  for path in (out / "checkpoint" / "4").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(path.read_bytes()[:10])
  assert main(args + ["--out", str(out), "--resume"]) == 0
  assert "damaged steps (step 4:" in capsys.readouterr().err  # resumed from step 2
  whole = load_run(tmp_path / "whole")
  again = checkpoint.restore_checkpoint(out / "checkpoint", whole.state, 4)  # readable again, the same numbers
  for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(whole.state.params)):
    np.testing.assert_array_equal(a, b)


# Users' own data: folder:/npz: domains, official files.

OWN = ["--steps", "4", "--batch-size", "8", "--no-progress"]


def train_folders(source, target, *flags):
  """`dann-jax train` from folder:SOURCE to folder:TARGET, 4 steps of batch 8, then `flags`; returns the exit code."""
  return main(["train", "--source", f"folder:{source}", "--target", f"folder:{target}", *OWN, *flags])


def _class_folders(root, classes, per_class, seed=0, size=(20, 24)):
  """ROOT/<class>/<i>.png: random images, a different size from 32x32 so that they are resized."""
  from PIL import Image

  rng = np.random.default_rng(seed)
  for c in classes:
    (root / c).mkdir(parents=True)
    for i in range(per_class):
      Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
  return root


@pytest.fixture
def own_folders(tmp_path, offline_data_dir):
  """A labelled source (3 classes x 8), a labelled target (3 x 6), a flat unlabelled target (10 images)."""
  from PIL import Image

  source = _class_folders(tmp_path / "product", ("bike", "chair", "mug"), 8)
  target = _class_folders(tmp_path / "real", ("bike", "chair", "mug"), 6, seed=1)
  flat = tmp_path / "camera"
  flat.mkdir()
  rng = np.random.default_rng(2)
  for i in range(10):
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(flat / f"IMG_{i:04d}.jpg")
  return source, target, flat


@pytest.mark.slow
def test_train_on_own_folders_and_reload_the_run(own_folders, tmp_path, capsys, monkeypatch):
  source, target, _ = own_folders
  out = tmp_path / "run"
  monkeypatch.chdir(tmp_path)
  assert main(["train", "--source", "folder:product", "--target", "folder:real", *OWN, "--out", str(out)]) == 0
  summary = json.loads((out / "summary.json").read_text())
  assert summary["pair"] == f"folder:{source}->folder:{target}"  # absolute, readable from anywhere
  assert 0.0 <= summary["target_accuracy"]["mean"] <= 1.0
  assert summary["target_test_size"] == 18  # no test split: the target's train images, labels never trained on
  assert summary["paper_v1"] is None and summary["network"] == "mnist"
  assert "no test split" in summary["provenance"]["target_test"]
  assert summary["splits"]["target"] == {"test": None, "test_fraction": None, "seed": 0}
  assert "your own data; no paper numbers" in capsys.readouterr().out
  # The run folder names its data: it reloads from another working directory.
  from dann_jax.runner.runs import load_run

  monkeypatch.chdir(tmp_path.parent)
  result = load_run(out)
  assert result.identity["source"] == f"folder:{source}"
  assert len(result.data.target_test) == 18 and result.data.source_train.class_names == ("bike", "chair", "mug")
  assert train_folders(source, target, "--out", str(out), "--resume") == 0


def test_unlabelled_target_folder_reports_no_target_accuracy(own_folders, tmp_path, capsys):
  source, _, flat = own_folders
  out = tmp_path / "run"
  assert train_folders(source, flat, "--test-fraction", "0.25", "--split-seed", "1", "--out", str(out)) == 0
  summary = json.loads((out / "summary.json").read_text())
  assert summary["target_accuracy"] is None and summary["target_test_size"] == 0
  assert 0.0 <= summary["source_accuracy"]["mean"] <= 1.0
  assert summary["splits"]["source"] == {"test": None, "test_fraction": 0.25, "seed": 1}
  rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  assert "target_accuracy" not in rows[-1] and "source_accuracy" in rows[-1]
  assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
  assert "target accuracy none (no target test image has a label)" in capsys.readouterr().out
  # Label-free selection works without target labels and reports no target accuracy.
  ranking = tmp_path / "ranking.json"
  assert main(["select", str(out), "--criterion", "source-risk", "--out", str(ranking)]) == 0
  assert json.loads(ranking.read_text())["ranking"][0]["target_accuracy"] is None
  capsys.readouterr()  # select's progress bar
  # Train-on-target needs target labels: one error, nothing written.
  assert train_folders(source, flat, "--method", "target-only", "--out", str(tmp_path / "to")) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "10 of the 10 target train images have none" in err
  assert not (tmp_path / "to").exists()


@pytest.mark.parametrize(
  "flags,message",
  [
    (
      ["--source", "mnist", "--target", "mnist-m", "--source-test", "x"],
      "--source-test applies to a folder:PATH or npz:PATH source; the built-in 'mnist' has its own test split",
    ),
    (["--source", "mnist", "--target", "mnist-m", "--test-fraction", "0.2"], "--test-fraction 0.2 holds out"),
    (["--source", "mnist", "--target", "mnist-m", "--network", "svhn"], "--network applies to pairs with"),
    (
      ["--source", "folder:product", "--target", "mnist", "--test-fraction", "1.5"],
      "--test-fraction 1.5 must lie strictly between 0 and 1",
    ),
    (["--source", "folder:product", "--target", "mnist", "--split-seed", "3"], "--split-seed seeds the"),
    (
      ["--source", "folder:product", "--target", "mnist", "--source-test", "nowhere"],
      "--source-test nowhere: no such folder or file",
    ),
    (["--source", "folder:nowhere", "--target", "mnist"], "'nowhere' does not exist"),
    (["--source", "folder:product", "--target", "cifar"], "unknown domain 'cifar'"),
  ],
)
def test_bad_split_flags_are_one_clear_error(flags, message, own_folders, tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(own_folders[0].parent)
  assert main(["train", *flags, "--out", str(tmp_path / "x")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("dann-jax: error: ") and err.count("\n") == 1 and message in err
  assert not (tmp_path / "x").exists()


def test_mismatched_class_sets_are_one_clear_error(own_folders, tmp_path, capsys):
  source, _, _ = own_folders
  other = _class_folders(tmp_path / "other", ("bike", "chair", "emu"), 4)
  assert train_folders(source, other, "--out", str(tmp_path / "x")) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1
  assert "only in the source: ['mug']; only in the target: ['emu']" in err
  assert not (tmp_path / "x").exists()


def test_data_import_svhn_verifies_and_feeds_the_domain(offline_data_dir, tmp_path, capsys, monkeypatch):
  import scipy.io

  from dann_jax.data import domains, official

  mat = tmp_path / "train_32x32.mat"
  x = np.random.default_rng(0).integers(0, 256, (32, 32, 3, 20), dtype=np.uint8)
  scipy.io.savemat(mat, {"X": x, "y": (np.arange(20) % 10 + 1).astype(np.uint8).reshape(20, 1)})
  md5 = official.file_md5(mat)
  monkeypatch.setitem(
    official.EXPECTED, "svhn", {**official.EXPECTED["svhn"], "train": official.Expected("train_32x32.mat", md5, 20)}
  )
  assert main(["data", "import", "svhn", str(mat)]) == 0
  out = capsys.readouterr().out
  assert f"svhn train: 20 images verified (md5 {md5}, the published one" in out
  assert str(official.official_cache_path("svhn", "train")) in out
  svhn = domains.load_domain("svhn", "train")
  np.testing.assert_array_equal(svhn.images, np.transpose(x, (3, 0, 1, 2)))
  assert svhn.labels[9] == 0 and "train_32x32.mat" in svhn.provenance
  # Another file under the same name is refused, in one line, and the import stays.
  scipy.io.savemat(mat, {"X": x[..., :19], "y": np.ones((19, 1), np.uint8)})
  assert main(["data", "import", "svhn", str(mat)]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "is not the official svhn file" in err and md5 in err
  assert len(domains.load_domain("svhn", "train")) == 20


def test_data_show_reads_a_folder(own_folders, tmp_path, capsys):
  _, _, flat = own_folders
  grid = tmp_path / "grid.png"
  assert main(["data", "show", f"folder:{flat}", "--out", str(grid), "--n", "4"]) == 0
  assert "wrote 4" in capsys.readouterr().out and grid.read_bytes()[:4] == b"\x89PNG"
  assert main(["data", "show", "mnist-m", "--backgrounds", "bsds500", "--out", str(grid)]) == 2
  assert "dann-jax data import bsds500 PATH" in capsys.readouterr().err


def test_reproduce_says_which_file_a_pair_needs(offline_data_dir, tmp_path, capsys):
  # The imported-file domain is loaded first, so the pair stops before anything is built or trained.
  results = tmp_path / "results"
  assert main(table1_args(["mnist->usps", "svhn->mnist"], tmp_path / "runs", results, "--no-progress")) == 0
  table = json.loads((results / "table1_quick.json").read_text())
  for pair, name in (("mnist->usps", "usps"), ("svhn->mnist", "svhn")):
    assert f"needs the file: `dann-jax data import {name} PATH`" in table["pairs"][pair]["status"]["all"]
  assert "http://ufldl.stanford.edu/housenumbers/" in (results / "table1_quick.md").read_text()
  assert main(table1_args(["mnist->usps"], tmp_path / "runs", results, "--table-only")) == 0
  table = json.loads((results / "table1_quick.json").read_text())
  assert "needs the file: `dann-jax data import usps PATH`" in table["pairs"]["mnist->usps"]["status"]["all"]


def test_printed_paper_number_names_pairs_the_paper_has_no_number_for():
  from dann_jax.cli.train import paper_words
  from dann_jax.data.pairs import PAIRS, get_pair

  assert paper_words(PAIRS["mnist->mnist-m"], 0.8149) == "paper v1: 0.8149"
  assert paper_words(PAIRS["mnist->optdigits"], None) == "not in the paper's tables"
  assert paper_words(PAIRS["mnist->svhn"], None).startswith("JMLR")
  custom = get_pair("folder:a", "folder:b", network="mnist")
  assert paper_words(custom, None) == "your own data; no paper numbers"


@pytest.mark.slow
def test_adapt_on_own_folders_with_an_unlabelled_target(own_folders, tmp_path, capsys):
  source, _, flat = own_folders
  out = tmp_path / "adapt"
  args = ["adapt", "--source", f"folder:{source}", "--target", f"folder:{flat}", *OWN, "--out", str(out)]
  assert main(args) == 0
  printed = capsys.readouterr().out
  report = json.loads((out / "adapt_s0.json").read_text())
  chosen = report["chosen"]
  assert f"chosen: {chosen['candidate']} at step {chosen['step']}" in printed
  assert chosen["target_accuracy"] is None and "target accuracy" not in printed  # no label to report
  assert len(report["candidates"]) == 8 and all(r["checkpoints"] for r in report["candidates"].values())
  # The learning rate(s) whose source-only candidate errs least on held-out source images; the lowest risk there.
  rows = report["candidates"]
  error = {
    r["overrides"]["learning_rate"]: 1 - max(c["source_val_accuracy"] for c in r["checkpoints"].values())
    for r in rows.values()
    if r["method"] == "source_only"
  }
  rates = {lr for lr, e in error.items() if e == min(error.values())}
  compared = [n for n, r in rows.items() if r["overrides"]["learning_rate"] in rates]
  assert [n for n, r in rows.items() if r["compared"]] == compared
  assert chosen["risk"] == min(c["risk"] for n in compared for c in rows[n]["checkpoints"].values())
  assert (out / "chosen_s0" / "run.json").exists() and (out / "report_s0.md").exists()
  # Run again, it reuses every candidate and keeps the same checkpoint.
  assert main(args) == 0
  assert json.loads((out / "adapt_s0.json").read_text())["chosen"] == chosen
  # The class-share check with a margin of 1 (a drift is at most 1) keeps every checkpoint eligible: same choice.
  capsys.readouterr()
  assert main([*args, "--class-share-margin", "1"]) == 0
  checked = json.loads((out / "adapt_s0.json").read_text())
  assert checked["class_share_check"]["margin"] == 1 and checked["class_share_check"]["left_out"] == []
  assert (checked["chosen"]["candidate"], checked["chosen"]["step"]) == (chosen["candidate"], chosen["step"])
  # --all-settings: the validator alone, over every candidate's checkpoints.
  assert main([*args, "--all-settings"]) == 0
  alone = json.loads((out / "adapt_s0.json").read_text())
  assert alone["setting_check"] is None and all(r["compared"] for r in alone["candidates"].values())
  assert alone["chosen"]["risk"] == min(c["risk"] for r in rows.values() for c in r["checkpoints"].values())
  capsys.readouterr()
  assert main([*args, "--class-share-margin", "-0.1"]) == 2
  assert "share_margin=-0.1 must be a number >= 0" in _one_error(capsys)


# Damaged run folders and inputs that must fail before any work: one error line, nothing left behind.


def _one_error(capsys) -> str:
  err = capsys.readouterr().err
  assert err.startswith("dann-jax: error: ") and "Traceback" not in err, err
  return err


def test_a_one_class_source_is_refused_before_training(tmp_path, offline_data_dir, capsys):
  source = _class_folders(tmp_path / "only", ("mug",), 6)
  target = _class_folders(tmp_path / "tgt", ("mug",), 4, seed=1)
  out = tmp_path / "run"
  assert train_folders(source, target, "--out", str(out)) == 2
  err = _one_error(capsys)
  assert "hold 1 class(es)" in err and "one folder (or label) per class" in err
  assert not out.exists()


@pytest.mark.parametrize(
  "damage,words",
  [
    (lambda text: text[: len(text) // 2], "not valid JSON"),
    (lambda text: b"\x9c\x00\xff garbage", "not text"),
  ],
  ids=["truncated", "binary"],
)
def test_a_damaged_run_json_is_named_with_the_fix(tiny_mnist, tmp_path, capsys, damage, words):
  out = tmp_path / "run"
  assert main(TRAIN + ["--out", str(out)]) == 0
  capsys.readouterr()
  run_json = out / "run.json"
  broken = damage(run_json.read_text())
  run_json.write_bytes(broken if isinstance(broken, bytes) else broken.encode())
  for argv in (TRAIN + ["--out", str(out), "--resume"], ["select", str(out), "--out", str(tmp_path / "r.json")]):
    assert main(argv) == 2
    err = _one_error(capsys)
    assert str(run_json) in err and words in err and "delete the folder and train the run again" in err
  assert (out / "checkpoint").exists()  # nothing deleted


def test_a_damaged_summary_is_named_with_the_fix(tiny_mnist, tmp_path, capsys):
  out = tmp_path / "run"
  assert main(TRAIN + ["--out", str(out)]) == 0
  (out / "summary.json").write_text('{"target_accuracy": ')
  capsys.readouterr()
  assert main(["predict", str(out), "--images", "mnist-m", "--out", str(tmp_path / "p.csv")]) == 2
  err = _one_error(capsys)
  assert str(out / "summary.json") in err and "not valid JSON" in err and "delete it and resume the run" in err


@pytest.mark.slow
def test_a_torn_last_metrics_line_is_dropped_on_resume_with_the_same_numbers(tiny_mnist, tmp_path, capsys):
  from dann_jax.training import checkpoint

  steps = ["--set", "eval_every=2"]
  whole, torn = tmp_path / "whole", tmp_path / "torn"
  assert main(TRAIN + steps + ["--out", str(whole)]) == 0
  assert main(TRAIN + steps + ["--out", str(torn)]) == 0
  # Killed while writing step 4's row: checkpoint 4 and the summary never written.
  checkpoint.delete_after(torn / "checkpoint", 2)
  (torn / "summary.json").unlink()
  first = (torn / "metrics.jsonl").read_text().splitlines()[0]
  (torn / "metrics.jsonl").write_text(first + '\n{"step": 4, "loss": 0.')
  capsys.readouterr()
  assert main(TRAIN + steps + ["--out", str(torn), "--resume"]) == 0
  assert "dropped its torn last line" in capsys.readouterr().err
  a, b = (json.loads((d / "metrics.jsonl").read_text().splitlines()[-1]) for d in (whole, torn))
  assert a == b and a["step"] == 4  # the same numbers as the uninterrupted run
  rows = [json.loads(line) for line in (torn / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [2, 4]


def test_data_import_into_an_unwritable_cache_fails_first(tmp_path, capsys, monkeypatch):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  monkeypatch.setenv("DANN_JAX_DATA", str(blocker / "cache"))
  mat = tmp_path / "train_32x32.mat"
  mat.write_bytes(b"irrelevant")
  assert main(["data", "import", "svhn", str(mat)]) == 2
  err = _one_error(capsys)
  assert "cannot be written" in err and "DANN_JAX_DATA" in err


def test_reproduce_refused_leaves_no_results_folder(tmp_path, capsys):
  results = tmp_path / "results"
  argv = table1_args(["mnist->mnist-dilated"], tmp_path / "runs", results)
  argv[argv.index("--steps") + 1] = "0"
  assert main(argv) == 2
  _one_error(capsys)
  assert not results.exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_predict_gives_the_run_s_own_accuracies_per_checkpoint(tiny_mnist, tmp_path, capsys):
  import dann_jax

  out = tmp_path / "run"
  assert main(TRAIN + ["--set", "eval_every=2", "--out", str(out)]) == 0
  summary = json.loads((out / "summary.json").read_text())
  rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  capsys.readouterr()
  # The final state on the whole source test set: the summary's source accuracy.
  assert main(["predict", str(out), "--images", "mnist", "--out", str(tmp_path / "p.csv")]) == 0
  printed = capsys.readouterr().out
  assert f"accuracy {summary['source_accuracy']['mean']:.4f} on the 20 labelled images" in printed
  lines = (tmp_path / "p.csv").read_text().splitlines()
  assert lines[0] == "image,class,probability,label" and len(lines) == 21
  # Step 2 from Python: the accuracy logged at step 2 (all 20 test images), and a confusion matrix that adds up.
  model = dann_jax.load_model(out, checkpoint=2)
  result = dann_jax.evaluate(model, "mnist")
  assert model.step == 2 and result["accuracy"] == pytest.approx(rows[0]["source_accuracy"])
  assert result["confusion"].sum() == 20 and np.trace(result["confusion"]) == round(20 * result["accuracy"])
  with pytest.raises(FileNotFoundError, match="no checkpoint at step 3"):
    dann_jax.load_model(out, checkpoint=3)


@pytest.mark.slow
def test_predict_on_a_folder_names_each_image(own_folders, tmp_path, capsys):
  source, target, flat = own_folders
  out = tmp_path / "run"
  assert train_folders(source, target, "--out", str(out)) == 0
  capsys.readouterr()
  assert main(["predict", str(out), "--images", f"folder:{flat}"]) == 0
  assert "accuracy" not in capsys.readouterr().out  # a flat folder has no labels
  lines = (out / "predictions.csv").read_text().splitlines()[1:]
  assert sorted(line.split(",")[0] for line in lines) == sorted(str(p) for p in flat.iterdir())
  assert {line.split(",")[1] for line in lines} <= {"bike", "chair", "mug"}
  # Class subfolders are matched to the run's classes by name.
  assert main(["predict", str(out), "--images", f"folder:{target}"]) == 0
  assert "on the 18 labelled images" in capsys.readouterr().out


def test_predict_refuses_images_whose_labels_the_model_has_no_class_for(own_folders, tiny_mnist, tmp_path, capsys):
  source, target, _ = own_folders
  out = tmp_path / "run"
  assert train_folders(source, target, "--out", str(out)) == 0
  capsys.readouterr()
  argv = ["predict", str(out), "--images", "mnist", "--data-dir", str(tiny_mnist), "--out", str(tmp_path / "p.csv")]
  assert main(argv) == 2
  err = _one_error(capsys)
  assert "labels reach 9 but the model predicts 3 classes" in err and not (tmp_path / "p.csv").exists()


def test_select_writes_its_ranking_beside_the_runs_it_ranks(tmp_path):
  from dann_jax.cli.select import default_out

  demo = tmp_path / "runs" / "demo"
  assert default_out([str(demo / "source_only"), str(demo / "dann")]) == demo / "selection.json"
  assert default_out([str(demo / "dann")]) == demo / "dann" / "selection.json"
