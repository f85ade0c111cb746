"""`dann-jax adapt`: the choice is the validator's argmin over every checkpoint, never reads target labels, and is kept."""

import dataclasses
import json

import numpy as np
import pytest

from dann_jax.runner import adapt, choice
from dann_jax.runner.candidates import Candidate, default_candidates
from dann_jax.validation import selection


def test_default_candidates_span_the_adaptation_strength():
  cands = default_candidates()
  assert [c.name for c in cands] == [
    "so_lr1e-3",
    "dann_lam0.1_lr1e-3",
    "dann_lam0.3_lr1e-3",
    "dann_lam1_lr1e-3",
    "so_lr3e-4",
    "dann_lam0.1_lr3e-4",
    "dann_lam0.3_lr3e-4",
    "dann_lam1_lr3e-4",
  ]
  assert sorted({c.lam_max for c in cands}) == [0.0, 0.1, 0.3, 1.0]
  assert {c.overrides["learning_rate"] for c in cands} == {1e-3, 3e-4}
  with pytest.raises(ValueError, match="lam_max"):
    default_candidates(lambda_maxes=(0.0,))


def _scores(risks, accs=None):
  return {
    str(s): {"scores": {"v": r}, "target_accuracy": None if accs is None else accs[i]}
    for i, (s, r) in enumerate(risks.items())
  }


def test_choose_is_the_lowest_risk_and_prefers_source_only_on_ties():
  scored = {
    "so": _scores({100: 0.5, 200: 0.3}),
    "dann": _scores({100: 0.3, 200: float("nan"), 300: 0.4}),
  }
  c = choice.choose(scored, "v")
  assert (c.candidate, c.step, c.score) == ("so", 200, 0.3)  # tie with dann@100: the earlier candidate
  scored["dann"]["300"]["scores"]["v"] = 0.1
  assert (choice.choose(scored, "v").candidate, choice.choose(scored, "v").step) == ("dann", 300)
  with pytest.raises(ValueError, match="no scored checkpoint"):
    choice.choose({}, "v")


def _drifted(risks_drifts):
  return {str(s): {"scores": {"v": r}, "class_share_drift": d} for s, (r, d) in risks_drifts.items()}


def test_choose_with_the_class_share_check_skips_dann_checkpoints_that_drift_from_the_source_shares():
  scored = {
    "so": _drifted({100: (0.5, 0.30), 200: (0.4, 0.10)}),  # best source only: step 200, drift 0.10
    "dann": _drifted({100: (0.1, 0.16), 200: (0.2, 0.15), 300: (0.3, 0.02), 400: (0.05, float("nan"))}),
  }
  assert (choice.choose(scored, "v").candidate, choice.choose(scored, "v").step) == ("dann", 400)
  kept = choice.choose(scored, "v", share_margin=0.05, source_only=["so"])
  assert (kept.candidate, kept.step) == ("dann", 200)  # 0.15 <= 0.10 + 0.05; 0.16 and NaN are left out
  assert choice.choose(scored, "v", share_margin=0.0, source_only=["so"]).step == 300
  # Every DANN checkpoint drifts too far: the best source-only checkpoint, whatever its own drift.
  scored["dann"]["300"]["class_share_drift"] = 0.5
  kept = choice.choose(scored, "v", share_margin=0.01, source_only=["so"])
  assert (kept.candidate, kept.step) == ("so", 200)
  with pytest.raises(ValueError, match="source-only checkpoint"):
    choice.choose({"dann": scored["dann"]}, "v", share_margin=0.05, source_only=["so"])
  with pytest.raises(ValueError, match="share_margin"):
    choice.choose(scored, "v", share_margin=-0.1, source_only=["so"])


def _sourced(rows):
  """{step: (risk, held-out source accuracy)} -> scores as `score_checkpoints` writes them."""
  return {str(s): {"scores": {"v": r}, "source_val_accuracy": a, "target_accuracy": None} for s, (r, a) in rows.items()}


def test_the_learning_rate_is_chosen_on_held_out_source_images_then_the_validator_chooses_within_it():
  cands = default_candidates()  # source only and DANN at 0.1 / 0.3 / 1, learning rates 1e-3 and 3e-4
  scored = {c.name: _sourced({100: (0.0, 0.95), 200: (0.0, 0.95)}) for c in cands}
  # so_lr1e-3 ends at .970 but reached .990 at step 100: its error is the best of its checkpoints, .010;
  # so_lr3e-4 reaches .985 (.015). The lowest risk of all is a DANN at 3e-4; within 1e-3, dann_lam0.3 at 200.
  scored["so_lr1e-3"] = _sourced({100: (0.5, 0.99), 200: (0.4, 0.97)})
  scored["so_lr3e-4"] = _sourced({100: (0.5, 0.985), 200: (0.4, 0.98)})
  scored["dann_lam1_lr3e-4"]["200"]["scores"]["v"] = -2.0
  scored["dann_lam0.3_lr1e-3"]["200"]["scores"]["v"] = -1.0
  setting = choice.settings_on_source(scored, cands)
  assert setting.source_error == pytest.approx({"so_lr1e-3": 0.010, "so_lr3e-4": 0.015})
  assert setting.kept == tuple(c.name for c in cands[:4]) and setting.left_out == tuple(c.name for c in cands[4:])
  picked, _ = choice.adapt_choice(scored, "v", cands)
  assert (picked.candidate, picked.step) == ("dann_lam0.3_lr1e-3", 200)
  alone, none = choice.adapt_choice(scored, "v", cands, source_setting=False)
  assert (alone.candidate, alone.step, none) == ("dann_lam1_lr3e-4", 200, None)
  # A tie keeps both learning rates.
  scored["so_lr3e-4"]["100"]["source_val_accuracy"] = 0.99
  assert choice.settings_on_source(scored, cands).kept == tuple(c.name for c in cands)
  # A learning rate whose source-only run has no source measure (failed, or None/NaN) is left out...
  del scored["so_lr3e-4"]
  assert choice.settings_on_source(scored, cands).left_out == tuple(c.name for c in cands[5:])
  scored["so_lr1e-3"] = _sourced({100: (0.5, float("nan")), 200: (0.4, None)})
  # ... unless no learning rate has one: then the validator compares every candidate.
  assert choice.settings_on_source(scored, cands) == choice.SettingChoice({}, tuple(scored), ())
  # The training setting is every override but the adaptation strength.
  assert cands[1].setting == cands[0].setting == (("learning_rate", 1e-3),) != cands[4].setting


def test_the_report_says_which_learning_rate_the_source_chose_and_compares_only_its_candidates(tmp_path):
  from dann_jax.runner.adapt_report import build_report, markdown

  cands = default_candidates()[:2] + default_candidates()[4:6]  # so and DANN at lam 0.1, at both rates
  scored = {
    "so_lr1e-3": _sourced({100: (0.3, 0.99)}),
    "dann_lam0.1_lr1e-3": _sourced({100: (0.2, 0.98)}),
    "so_lr3e-4": _sourced({100: (0.1, 0.97)}),  # outscores every 1e-3 checkpoint, but errs more on source
    "dann_lam0.1_lr3e-4": _sourced({100: (0.0, 0.97)}),
  }
  picked, setting = choice.adapt_choice(scored, "v", cands)
  pair = type("Pair", (), {"name": "a->b"})()
  trained = {n: (tmp_path, {}) for n in scored}
  report = build_report(pair, 0, "v", None, cands, scored, trained, {}, picked, tmp_path, setting)
  assert (report["chosen"]["candidate"], report["chosen"]["risk"]) == ("dann_lam0.1_lr1e-3", 0.2)
  assert report["setting_check"]["left_out"] == ["so_lr3e-4", "dann_lam0.1_lr3e-4"]
  assert [r["compared"] for r in report["candidates"].values()] == [True, True, False, False]
  # "ranks this DANN above source only" compares with the source-only checkpoint of its own learning rate
  assert "the best source-only checkpoint scored 0.3000" in report["chosen"]["why"]
  assert "of the 2 checkpoints of 2 candidates" in report["chosen"]["why"]
  assert "training setting chosen on held-out source images" in report["chosen"]["why"]
  page = markdown(report, 0)
  assert "so_lr1e-3 0.0100, so_lr3e-4 0.0300" in page and "dann_lam0.1_lr3e-4 (setting left out)" in page


def _info_max_risk(logits):
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  h = lambda q: -(q * np.log(np.clip(q, 1e-300, None))).sum(-1)
  return -(h(p.mean(0)) - h(p).mean())


TWO = (
  Candidate("so_lr1e-3", "source_only", {"learning_rate": 1e-3, "eval_every": 2}),
  Candidate("dann_lam1_lr1e-3", "dann", {"learning_rate": 1e-3, "lam_max": 1.0, "eval_every": 2}),
)


@pytest.mark.slow
def test_adapt_keeps_the_argmin_and_never_reads_target_labels(tiny_mnist, tmp_path, monkeypatch):
  from dann_jax.data.pair_data import load_pair_data
  from dann_jax.data.pairs import PAIRS
  from dann_jax.runner.runs import load_run
  from dann_jax.training import checkpoint
  from dann_jax.training.evaluation import features

  pair = PAIRS["mnist->mnist-m"]
  data = load_pair_data(pair, data_dir=tiny_mnist)
  out = tmp_path / "adapt"
  kw = dict(
    out_dir=out, steps=6, batch_size=8, candidates=TWO, validator="info-max", progress=False, log=lambda line: None
  )
  report = adapt.adapt(pair, data=data, **kw)
  # Every checkpoint's risk, recomputed by hand from the model's target logits on the same view.
  risks = {}
  for cand in TWO:
    run = load_run(out / f"{cand.name}_s0", data=data)
    view = selection.selection_set(run.data, run.mean, **choice.VIEW_SIZES)
    for step in checkpoint.all_steps(out / f"{cand.name}_s0" / "checkpoint"):
      state = checkpoint.restore_checkpoint(out / f"{cand.name}_s0" / "checkpoint", run.state, step)
      target_logits = features(state, view.target_images, run.mean, "logits")
      risks[(cand.name, step)] = _info_max_risk(target_logits)
      got = report["candidates"][cand.name]["checkpoints"][str(step)]
      assert got["risk"] == pytest.approx(risks[(cand.name, step)], rel=1e-4, abs=1e-6)
      # The class-share drift beside it: predicted target shares against the held-out source label shares.
      q = np.bincount(target_logits.argmax(-1), minlength=10) / len(target_logits)
      p = np.bincount(view.source_val_labels, minlength=10) / len(view.source_val_labels)
      assert got["class_share_drift"] == pytest.approx(0.5 * np.abs(q - p).sum(), abs=1e-9)
      # The held-out source accuracy beside it, from the source validation view's labels.
      predicted = features(state, view.source_val_images, run.mean, "logits").argmax(-1)
      assert got["source_val_accuracy"] == pytest.approx(np.mean(predicted == view.source_val_labels), abs=1e-6)
  best = min(risks, key=risks.get)
  chosen = report["chosen"]
  assert (chosen["candidate"], chosen["step"]) == best
  chosen_source = report["candidates"][best[0]]["checkpoints"][str(best[1])]["source_val_accuracy"]
  assert chosen["source_val_accuracy"] == chosen_source
  assert (
    f"Held-out source accuracy (label-free: source labels only): chosen {chosen_source:.4f}"
    in (out / "report_s0.md").read_text()
  )
  # The kept model is that checkpoint.
  kept = load_run(out / "chosen_s0", data=data)
  src = checkpoint.restore_checkpoint(out / f"{best[0]}_s0" / "checkpoint", kept.state, best[1])
  for a, b in zip(__import__("jax").tree.leaves(kept.state.params), __import__("jax").tree.leaves(src.params)):
    np.testing.assert_array_equal(a, b)
  # Keeping an earlier checkpoint keeps that one alone.
  folder = out / f"{TWO[1].name}_s0"
  first = checkpoint.all_steps(folder / "checkpoint")[0]
  adapt._keep(folder, first, tmp_path / "kept")
  assert checkpoint.all_steps(tmp_path / "kept" / "checkpoint") == [first]
  assert json.loads((out / "adapt_s0.json").read_text())["chosen"] == chosen
  assert (out / "report_s0.md").read_text().count("|") > 10 and (out / "scores_s0.png").stat().st_size > 0

  # The same data with the target test labels shuffled: same choice, other accuracy (reported only).
  rng = np.random.default_rng(0)
  shuffled = dataclasses.replace(
    data, target_test=dataclasses.replace(data.target_test, labels=rng.permutation(data.target_test.labels))
  )
  import dann_jax.runner.runs

  def no_training(*args, **kwargs):
    raise AssertionError("a finished candidate was trained again")

  monkeypatch.setattr(dann_jax.runner.runs, "train_run", no_training)
  for folder in out.glob("*_s0"):
    (folder / "scores.json").unlink(missing_ok=True)
  again = adapt.adapt(pair, data=shuffled, **kw)
  assert (again["chosen"]["candidate"], again["chosen"]["step"]) == best

  # The class-share check through adapt: the DANN's cached scores are rewritten so that every DANN checkpoint
  # outscores source only and the drifts straddle the bound (the best source-only checkpoint's drift, margin 0).
  so_rows = report["candidates"][TWO[0].name]["checkpoints"]
  bound = min(so_rows.values(), key=lambda e: e["risk"])["class_share_drift"]
  cache = out / f"{TWO[1].name}_s0" / "scores.json"
  cached = json.loads(cache.read_text())
  steps = sorted(cached, key=int)
  assert len(steps) == 3
  for step, risk, drift in zip(steps, (-3.0, -2.0, -4.0), (bound + 0.1, bound - 0.01, bound + 0.2)):
    cached[step]["scores"]["info-max"], cached[step]["class_share_drift"] = risk, drift
  cache.write_text(json.dumps(cached))
  assert adapt.adapt(pair, data=data, **kw)["chosen"]["step"] == int(steps[2])  # no check: the lowest risk
  checked = adapt.adapt(pair, data=data, share_margin=0.0, **kw)
  assert (checked["chosen"]["candidate"], checked["chosen"]["step"]) == (TWO[1].name, int(steps[1]))
  assert checked["class_share_check"]["bound"] == pytest.approx(bound)
  assert sorted(map(tuple, checked["class_share_check"]["left_out"])) == [(TWO[1].name, int(steps[i])) for i in (0, 2)]
  assert "class-share check" in checked["chosen"]["why"]
  assert checkpoint.all_steps(out / "chosen_s0" / "checkpoint") == [int(steps[1])]


@pytest.mark.slow
def test_adapt_leaves_out_a_candidate_whose_run_fails_and_refuses_shared_names(tiny_mnist, tmp_path, monkeypatch):
  import dann_jax.runner.runs
  from dann_jax.data.pair_data import load_pair_data
  from dann_jax.data.pairs import PAIRS
  from dann_jax.training.guard import Unrecoverable

  pair = PAIRS["mnist->mnist-m"]
  data = load_pair_data(pair, data_dir=tiny_mnist)
  real = dann_jax.runner.runs.train_or_reuse

  def dann_collapses(pair, method, out_dir, **kwargs):
    if method == "dann":
      raise Unrecoverable(4, "collapse")
    return real(pair, method, out_dir, **kwargs)

  monkeypatch.setattr(dann_jax.runner.runs, "train_or_reuse", dann_collapses)
  kw = dict(data=data, steps=4, batch_size=8, validator="info-max", progress=False, log=lambda line: None)
  report = adapt.adapt(pair, out_dir=tmp_path / "adapt", candidates=TWO, **kw)
  assert report["chosen"]["candidate"] == "so_lr1e-3"
  assert "at step 4" in report["failed"]["dann_lam1_lr1e-3"] and list(report["candidates"]) == ["so_lr1e-3"]
  twins = (TWO[0], dataclasses.replace(TWO[1], name=TWO[0].name))
  with pytest.raises(ValueError, match=r"share the names \['so_lr1e-3'\]"):
    adapt.adapt(pair, out_dir=tmp_path / "twins", candidates=twins, **kw)
  # Learning rates a digit apart get names of their own.
  lrs = [c.overrides["learning_rate"] for c in default_candidates(learning_rates=(1e-3, 1.4e-3), lambda_maxes=(1.0,))]
  names = [c.name for c in default_candidates(learning_rates=(1e-3, 1.4e-3), lambda_maxes=(1.0,))]
  assert lrs == [1e-3, 1e-3, 1.4e-3, 1.4e-3] and len(set(names)) == 4 and "so_lr1.4e-3" in names


FOUR = (
  Candidate("so_a", "source_only", {"learning_rate": 1e-3, "eval_every": 3}),
  Candidate("dann_a", "dann", {"learning_rate": 1e-3, "lam_max": 1.0, "eval_every": 3}),
  Candidate("so_b", "source_only", {"learning_rate": 3e-4, "eval_every": 3}),
  Candidate("dann_b", "dann", {"learning_rate": 3e-4, "lam_max": 1.0, "eval_every": 3}),
)


@pytest.mark.slow
def test_adapt_trains_source_only_first_and_no_dann_at_a_learning_rate_that_lost_on_source(
  tiny_mnist, tmp_path, monkeypatch
):
  import dann_jax.runner.runs
  from dann_jax.data.pair_data import load_pair_data
  from dann_jax.data.pairs import PAIRS

  pair = PAIRS["mnist->mnist-m"]
  data = load_pair_data(pair, data_dir=tiny_mnist)
  real_score, real_train = adapt.score_checkpoints, dann_jax.runner.runs.train_or_reuse

  def score(folder, data, criteria, **kwargs):  # so_b fits the held-out source images worse than so_a
    scores = real_score(folder, data, criteria, **kwargs)
    accuracy = 0.5 if folder.name.startswith("so_b") else 0.9
    return {step: {**e, "source_val_accuracy": accuracy} for step, e in scores.items()}

  trained = []

  def train(pair, method, folder, **kwargs):
    trained.append(folder.name)
    return real_train(pair, method, folder, **kwargs)

  monkeypatch.setattr(adapt, "score_checkpoints", score)
  monkeypatch.setattr(dann_jax.runner.runs, "train_or_reuse", train)
  out = tmp_path / "adapt"
  kw = dict(out_dir=out, steps=6, batch_size=8, candidates=FOUR, validator="info-max", progress=False)
  logged = []
  report = adapt.adapt(pair, data=data, log=logged.append, **kw)
  assert trained == ["so_a_s0", "so_b_s0", "dann_a_s0"] and not (out / "dann_b_s0").exists()
  assert list(report["not_trained"]) == ["dann_b"]
  assert "source-only error so_a 0.1000, so_b 0.5000" in report["not_trained"]["dann_b"]
  assert any(line.startswith("[4/4] dann_b: not trained") for line in logged)
  rows = report["candidates"]
  assert [n for n, r in rows.items() if r["compared"]] == ["so_a", "dann_a"]
  risks = {(n, int(s)): e["risk"] for n in ("so_a", "dann_a") for s, e in rows[n]["checkpoints"].items()}
  assert (report["chosen"]["candidate"], report["chosen"]["step"]) == min(risks, key=risks.get)
  assert "| dann_b | - | not trained: its training setting lost" in (out / "report_s0.md").read_text()
  # A DANN at a learning rate with no source-only run has nothing to be judged by on source: not trained either.
  odd = Candidate("dann_c", "dann", {"learning_rate": 1e-2, "lam_max": 1.0, "eval_every": 3})
  trained.clear()
  again = adapt.adapt(pair, data=data, log=logged.append, **{**kw, "candidates": (*FOUR, odd)})
  assert trained == ["so_a_s0", "so_b_s0", "dann_a_s0"] and again["chosen"] == report["chosen"]
  assert again["not_trained"]["dann_c"] == "no source-only candidate at its training setting to judge it by"
  # Without the source choice, dann_b trains too and all four are compared (the other three are reused).
  trained.clear()
  alone = adapt.adapt(pair, data=data, source_setting=False, log=logged.append, **kw)
  assert trained == ["so_a_s0", "so_b_s0", "dann_a_s0", "dann_b_s0"] and (out / "dann_b_s0" / "summary.json").exists()
  assert alone["not_trained"] == {} and all(r["compared"] for r in alone["candidates"].values())
