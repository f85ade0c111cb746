"""The label-free guard: when it trips (hand-built loss curves), and a guarded run's recovery end to end."""

import json

import numpy as np
import pytest

from dann_jax.training import guard
from dann_jax.training.health import AT_CHANCE, LEARNED

CHANCE = np.log(10)


def test_collapse_needs_learning_then_patience_rows_at_chance():
  steps = [100, 200, 300, 400, 500, 600]
  low, high = 0.2 * CHANCE, 1.0 * CHANCE
  # Never learned: the loss sits at chance from the start -> no collapse.
  assert guard.collapse_start(steps, [high] * 6, CHANCE, 2) is None
  # Learned, one row back at chance, then recovered: a blip, not a collapse.
  assert guard.collapse_start(steps, [high, low, high, low, low, low], CHANCE, 2) is None
  # Learned, then two rows in a row at chance: the first of them.
  assert guard.collapse_start(steps, [high, low, low, high, high, low], CHANCE, 2) == 400
  assert guard.collapse_start(steps, [high, low, low, high, high, low], CHANCE, 3) is None
  # NaN counts as at chance; patience 1 trips at once.
  assert guard.collapse_start(steps, [low, float("nan"), low, low, low, low], CHANCE, 1) == 200


def test_collapse_thresholds_are_health_s():
  steps = [1, 2, 3]
  just_learned = LEARNED * CHANCE * 0.999
  below = AT_CHANCE * CHANCE * 0.999
  at = AT_CHANCE * CHANCE
  assert guard.collapse_start(steps, [just_learned, at, at], CHANCE, 2) == 2
  assert guard.collapse_start(steps, [just_learned, below, below], CHANCE, 2) is None
  assert guard.collapse_start(steps, [LEARNED * CHANCE, at, at], CHANCE, 2) is None  # never below LEARNED


def test_lambda_scale_halves_then_stops_adapting():
  config = guard.GuardConfig(shrink=0.5, max_recoveries=3)
  assert [guard.lambda_scale(n, config) for n in range(6)] == [1.0, 0.5, 0.25, 0.125, 0.0, 0.0]
  base = lambda count: 2.0 * count
  assert guard.scaled(base, 1.0) is base
  assert guard.scaled(base, 0.25)(8) == 4.0
  with pytest.raises(ValueError, match="shrink"):
    guard.GuardConfig(shrink=1.0)


def _lambda_p(step, total, lam_max, gamma=10.0):
  return lam_max * (2.0 / (1.0 + np.exp(-gamma * step / total)) - 1.0)


def _train(tiny_mnist, out, method="dann", **kwargs):
  from dann_jax.data.pairs import PAIRS
  from dann_jax.runner.runs import train_pair

  return train_pair(
    PAIRS["mnist->mnist-m"],
    method,
    out_dir=out,
    preset="quick",
    steps=8,
    batch_size=8,
    source_holdout=0,
    data_dir=tiny_mnist,
    progress=False,
    plots=False,
    **kwargs,
  )


@pytest.mark.slow
def test_a_guarded_run_that_diverges_recovers_with_weaker_lambda(tiny_mnist, tmp_path, capsys):
  # SGD with lam_max = 1e30 sends the features to huge values at the first step with
  # lambda > 0: the loss is NaN from step 2 on at every lambda scale but 0.
  out = tmp_path / "run"
  result = _train(tiny_mnist, out, overrides={"lam_max": 1e30, "optimizer": "sgd", "eval_every": 2}, guard=True)
  events = result.summary["guard"]["events"]
  assert [e["reason"] for e in events] == ["diverged"] * 4
  assert [e["lam_scale"] for e in events] == [0.5, 0.25, 0.125, 0.0]
  assert all(e["restored_step"] < e["step"] for e in events)
  assert json.loads((out / "guard.json").read_text())["events"] == events
  assert not (out / "diverged.json").exists()
  rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})  # one row per chunk, no abandoned ones
  assert all(np.isfinite(r["loss"]) for r in rows)
  assert np.isfinite(result.summary["target_accuracy"]["mean"])
  assert "guard: diverged at step" in capsys.readouterr().err
  # Unguarded, the same run stops with the error.
  from dann_jax.training.loop import Diverged

  with pytest.raises(Diverged):
    _train(tiny_mnist, tmp_path / "unguarded", overrides={"lam_max": 1e30, "optimizer": "sgd", "eval_every": 2})


@pytest.mark.slow
def test_a_collapse_sends_the_run_back_with_half_lambda_and_resumes_to_the_same_numbers(
  tiny_mnist, tmp_path, monkeypatch
):
  import dann_jax.runner.runs
  from dann_jax.training import checkpoint

  real = guard.collapse_start
  trips = []

  def collapse_once_at_step_6(steps, losses, chance, patience):
    if steps[-1] == 6 and not trips:
      trips.append(6)
      return 6
    return real(steps, losses, chance, patience)

  monkeypatch.setattr(dann_jax.runner.runs.guard, "collapse_start", collapse_once_at_step_6)
  out = tmp_path / "run"
  result = _train(tiny_mnist, out, overrides={"eval_every": 2}, guard=True)
  (event,) = result.summary["guard"]["events"]
  assert event == {"step": 6, "reason": "collapse", "restored_step": 4, "lam_scale": 0.5}
  rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [2, 4, 6, 8]
  # The logged lambda is the mean over each 2-step chunk of lambda_p, halved after step 4.
  for r in rows:
    scale = 1.0 if r["step"] <= 4 else 0.5
    expected = np.mean([_lambda_p(s, 8, 1.0) for s in (r["step"] - 2, r["step"] - 1)]) * scale
    assert r["lambda"] == pytest.approx(expected, rel=1e-5)
  # The unguarded run takes the same first four steps.
  plain = _train(tiny_mnist, tmp_path / "plain", overrides={"eval_every": 2})
  first = lambda run: checkpoint.restore_checkpoint(run / "checkpoint", plain.state, 4)
  np.testing.assert_array_equal(
    first(out).params["features"]["Conv_0"]["kernel"], first(tmp_path / "plain").params["features"]["Conv_0"]["kernel"]
  )
  assert not np.array_equal(
    result.state.params["features"]["Conv_0"]["kernel"], plain.state.params["features"]["Conv_0"]["kernel"]
  )
  # Interrupted after the recovery (checkpoint 6 kept, 8 lost), the resumed run
  # keeps the halved lambda and ends on the same numbers.
  checkpoint.delete_after(out / "checkpoint", 6)
  (out / "summary.json").unlink()
  lines = (out / "metrics.jsonl").read_text().splitlines()
  (out / "metrics.jsonl").write_text("\n".join(lines[:3]) + "\n")
  resumed = _train(tiny_mnist, out, overrides={"eval_every": 2}, guard=True, resume=True)
  for a, b in zip(
    __import__("jax").tree.leaves(resumed.state.params), __import__("jax").tree.leaves(result.state.params)
  ):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_break_no_weaker_lambda_can_mend_stops_with_one_error(tiny_mnist, tmp_path, monkeypatch):
  import dann_jax.runner.runs

  always_at_step_6 = lambda steps, losses, chance, patience: 6 if steps[-1] >= 6 else None
  monkeypatch.setattr(dann_jax.runner.runs.guard, "collapse_start", always_at_step_6)
  # DANN: four recoveries (lambda halved three times, then 0), then the break at lambda 0 ends the run.
  with pytest.raises(guard.Unrecoverable, match="at step 6") as caught:
    _train(tiny_mnist, tmp_path / "dann", overrides={"eval_every": 2}, guard=True)
  assert isinstance(caught.value, FloatingPointError)  # the CLI's one-line error for a failed run
  events = json.loads((tmp_path / "dann" / "guard.json").read_text())["events"]
  assert [e["lam_scale"] for e in events] == [0.5, 0.25, 0.125, 0.0]
  # Source only has no lambda to weaken: its replay would break the same way, so it stops at once.
  with pytest.raises(guard.Unrecoverable, match="at step 6"):
    _train(tiny_mnist, tmp_path / "so", method="source_only", overrides={"eval_every": 2}, guard=True)
  assert not (tmp_path / "so" / "guard.json").exists()


def test_rewinding_past_the_label_free_best_keeps_the_best_row_before_it(tmp_path):
  from helpers import image_batch, linen_state

  from dann_jax.core.config import TrainConfig
  from dann_jax.runner.log import RunLog
  from dann_jax.training import checkpoint

  state = linen_state(TrainConfig(batch_size=8), image_batch(__import__("jax").random.key(0)))
  for step in (2, 4, 6):
    checkpoint.save_checkpoint(tmp_path / "checkpoint", state.replace(step=np.int32(step)), max_to_keep=None)
  checkpoint.save_checkpoint(tmp_path / "best", state.replace(step=np.int32(6)))
  log = object.__new__(RunLog)  # only what rewind reads
  log.out, log.metrics_path, log.write, log.bar = tmp_path, tmp_path / "metrics.jsonl", True, None
  log.history = [{"step": 2, "selection": 0.5}, {"step": 4, "selection": 0.3}, {"step": 6, "selection": 0.1}]
  log.best = (0.1, 6)
  # The guard sends the run back to step 4: the best scored at 6 was on the abandoned branch.
  log.rewind(4)
  assert log.best == (0.3, 4) and checkpoint.all_steps(tmp_path / "best") == [4]
  restored = checkpoint.restore_checkpoint(tmp_path / "best", state, 4)
  assert int(restored.step) == 4
  # Back to step 2 with no score kept after it but step 2's.
  log.rewind(2)
  assert log.best == (0.5, 2) and checkpoint.all_steps(tmp_path / "best") == [2]
  # A rewind that keeps the best leaves it alone.
  log.rewind(2)
  assert log.best == (0.5, 2)
