"""What a run writes while it trains: the evaluation sample, and the summary of a finished run resumed."""

import numpy as np


def test_the_evaluation_sample_spreads_over_a_class_sorted_test_set():
  from dann_jax.data import Domain
  from dann_jax.runner.log import evaluation_sample

  labels = np.repeat(np.arange(4), 50).astype(np.int32)  # a folder's order: class by class
  images = np.arange(200, dtype=np.uint8).reshape(200, 1, 1, 1) * np.ones((1, 32, 32, 3), np.uint8)
  domain = Domain("folder", images, labels, 4, "sorted")
  sample = evaluation_sample(domain, 40)
  assert len(sample.labels) == 40 and set(sample.labels) == {0, 1, 2, 3}  # the first 40 hold class 0 alone
  index = sample.images[:, 0, 0, 0].astype(int)
  assert list(index) == sorted(set(index)) and np.array_equal(labels[index], sample.labels)
  assert np.array_equal(evaluation_sample(domain, 40).labels, sample.labels)  # the same sample every time
  assert evaluation_sample(domain, 500) is domain and evaluation_sample(None, 5) is None


def test_a_runs_evaluations_score_that_sample(tiny_mnist, tmp_path):
  import json

  import pytest
  from helpers import TRAIN

  from dann_jax.cli import main
  from dann_jax.runner.log import evaluation_sample, labelled
  from dann_jax.runner.runs import load_run
  from dann_jax.training.evaluation import accuracy

  out = tmp_path / "run"
  assert main(TRAIN + ["--set", "eval_size=7", "--out", str(out)]) == 0
  run = load_run(out)
  last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
  for key, test in (("target_accuracy", run.data.target_test), ("source_accuracy", run.data.source_test)):
    sample = evaluation_sample(labelled(test), 7)
    assert len(sample.labels) == 7 < len(test.labels)
    assert last[key] == pytest.approx(float(accuracy(run.state, sample.images, sample.labels, run.mean)))


def test_resuming_a_finished_run_trains_nothing_and_keeps_its_training_time(tiny_mnist, tmp_path, capsys):
  import json

  from helpers import TRAIN

  from dann_jax.cli import main

  out = tmp_path / "run"
  assert main(TRAIN + ["--out", str(out)]) == 0
  first = json.loads((out / "summary.json").read_text())
  capsys.readouterr()
  assert main(TRAIN + ["--out", str(out), "--resume"]) == 0
  assert "already finished at step 4: nothing to train" in capsys.readouterr().out
  again = json.loads((out / "summary.json").read_text())
  assert again["steps_run"] == 0 and again["train_seconds"] == first["train_seconds"] > 0
  assert again["target_accuracy"] == first["target_accuracy"]
