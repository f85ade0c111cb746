"""TensorBoard event files: what a run writes, read back record by record."""

import struct

import numpy as np
import pytest

from dann_jax.training.tensorboard import RunWriter


def read_events(folder):
  """Every (tag, step, value or image size) in the event files under `folder` (TFRecord framing, no TensorFlow)."""
  from tensorboardX.proto import event_pb2

  found = []
  for path in sorted(folder.rglob("events.out.tfevents.*")):
    data = path.read_bytes()
    at = 0
    while at < len(data):
      (length,) = struct.unpack("<Q", data[at : at + 8])
      event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
      at += 12 + length + 4  # length, its crc, the record, its crc
      for v in event.summary.value:
        value = v.simple_value if v.WhichOneof("value") == "simple_value" else (v.image.height, v.image.width)
        found.append((path.parent.name, v.tag, event.step, value))
  return found


def test_steps_evaluations_and_figures_per_seed(tmp_path):
  writer = RunWriter(tmp_path / "tb", seeds=[3, 7])
  # A chunk of two steps after step 10, two seeds: (steps, seeds).
  writer.steps(10, {"label_loss": np.array([[0.5, 0.6], [0.4, 0.55]]), "lambda": np.array([[0.1, 0.1], [0.2, 0.2]])})
  writer.evaluation(12, {"target_accuracy": [0.81, 0.79]})
  png = tmp_path / "curves.png"
  from PIL import Image

  Image.new("RGB", (20, 10), "white").save(png)
  writer.figure("curves", png, 12)
  writer.close()
  events = read_events(tmp_path / "tb")
  scalars = {(run, tag, step): value for run, tag, step, value in events if tag != "figures/curves"}
  assert scalars[("seed_3", "train/label_loss", 11)] == pytest.approx(0.5)
  assert scalars[("seed_7", "train/label_loss", 12)] == pytest.approx(0.55)
  assert scalars[("seed_7", "train/lambda", 12)] == pytest.approx(0.2)
  assert scalars[("seed_3", "eval/target_accuracy", 12)] == pytest.approx(0.81)
  assert scalars[("seed_7", "eval/target_accuracy", 12)] == pytest.approx(0.79)
  assert ("seed_3", "figures/curves", 12, (10, 20)) in events


def test_one_seed_takes_plain_vectors(tmp_path):
  writer = RunWriter(tmp_path, seeds=[0])
  writer.steps(0, {"loss": np.array([1.0, 2.0, 3.0])})
  writer.evaluation(3, {"source_accuracy": 0.5})
  writer.close()
  events = read_events(tmp_path)
  assert [(tag, step, value) for _, tag, step, value in events if tag == "train/loss"] == [
    ("train/loss", 1, 1.0),
    ("train/loss", 2, 2.0),
    ("train/loss", 3, 3.0),
  ]
  assert ("seed_0", "eval/source_accuracy", 3, 0.5) in events


def test_train_writes_the_metrics_names_of_metrics_jsonl(tiny_mnist, tmp_path, capsys):
  import json

  from helpers import TRAIN

  from dann_jax.cli import main

  out, board = tmp_path / "run", tmp_path / "tb"
  assert main(TRAIN + ["--out", str(out), "--tensorboard", str(board)]) == 0
  assert f"wrote TensorBoard event files to {board}" in capsys.readouterr().out
  events = read_events(board)
  rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  trained = {k for k in rows[-1] if k not in ("step", "target_accuracy", "source_accuracy")}
  assert {tag for _, tag, _, _ in events if tag.startswith("train/")} == {f"train/{k}" for k in trained}
  assert {"train/lambda", "train/learning_rate"} <= {tag for _, tag, _, _ in events}
  # every step is there, and the last value is the logged chunk's last step
  losses = {step: value for _, tag, step, value in events if tag == "train/loss"}
  assert sorted(losses) == [1, 2, 3, 4]
  target = [value for _, tag, step, value in events if tag == "eval/target_accuracy"]
  assert target == [pytest.approx(rows[-1]["target_accuracy"])]
  assert any(tag == "figures/curves" for _, tag, _, _ in events)


def test_train_without_the_writer_package_stops_before_writing(tiny_mnist, tmp_path, capsys, monkeypatch):
  import sys

  from helpers import TRAIN

  from dann_jax.cli import main

  monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed
  out = tmp_path / "run"
  assert main(TRAIN + ["--out", str(out), "--tensorboard", str(tmp_path / "tb")]) == 2
  assert "needs the tensorboardX package" in capsys.readouterr().err
  assert not out.exists()


def test_a_folder_that_cannot_hold_event_files_stops_the_run_before_writing(tiny_mnist, tmp_path, capsys):
  from helpers import TRAIN

  from dann_jax.cli import main

  blocker = tmp_path / "a_file"
  blocker.write_text("")
  out = tmp_path / "run"
  assert main(TRAIN + ["--out", str(out), "--tensorboard", str(blocker / "tb")]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and f"{blocker} is a file" in err and "choose another --tensorboard folder" in err
  assert not out.exists()
