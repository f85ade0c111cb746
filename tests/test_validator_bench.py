"""The validator benchmark's report: reverse validation, scored on final checkpoints only, is measured there alone."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from dann_jax.runner.candidates import default_candidates
from dann_jax.validation.selection import weighted_spearman

_SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "selection" / "validator_bench.py"
_spec = importlib.util.spec_from_file_location("validator_bench", _SCRIPT)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

PAIR = "mnist->mnist-dilated"


def _rows(seed: int, rng, reverse: bool) -> list[dict]:
  """Three checkpoints per candidate with random scores; reverse validation on the last one only."""
  rows = []
  for cand in default_candidates():
    for step in (300, 600, 900):
      scores = {"source-risk": float(rng.random()), "info-max": float(rng.random())}
      if reverse and step == 900:
        scores[bench.REVERSE] = float(rng.random())
      rows.append(
        dict(pair=PAIR, seed=seed, candidate=cand.name, step=step, scores=scores, target_accuracy=float(rng.random()))
      )
  return rows


@pytest.mark.parametrize("reverse_seeds", [(0, 1), (1,)])
def test_reverse_validation_is_measured_on_final_checkpoints_only(reverse_seeds):
  rng = np.random.default_rng(0)
  rows = [r for s in (0, 1) for r in _rows(s, rng, reverse=s in reverse_seeds)]
  table = bench.summarize(rows, [PAIR], [0, 1])
  entry = table["pairs"][PAIR]
  assert set(entry["validators"]) == {"source-risk", "info-max"}  # per checkpoint: no reverse validation
  finals = entry["final_checkpoints"]
  assert finals[bench.REVERSE]["seeds"] == list(reverse_seeds) and finals["info-max"]["seeds"] == [0, 1]
  # numpy reference: one final checkpoint (step 900) per candidate, seed by seed
  for name, measured in finals.items():
    wsp, picked = [], []
    for s in measured["seeds"]:
      last = [r for r in rows if r["seed"] == s and r["step"] == 900]
      risk = np.array([r["scores"][name] for r in last])
      acc = np.array([r["target_accuracy"] for r in last])
      wsp.append(weighted_spearman(risk, acc))
      picked.append(acc[np.argmin(risk)])
    assert measured["weighted_spearman"] == pytest.approx(np.mean(wsp))
    assert measured["selected"] == pytest.approx(picked)
  assert bench.REVERSE in bench.markdown({**table, "protocol": {"candidates": {}}}).split("## Final checkpoints")[1]


def test_a_seed_with_a_candidate_unscored_is_left_out_and_named():
  rng = np.random.default_rng(1)
  lost = default_candidates()[2].name
  rows = [r for s in (0, 1) for r in _rows(s, rng, reverse=False) if not (s == 1 and r["candidate"] == lost)]
  other = "mnist->mnist-m"
  rows += [dict(r, pair=other) for r in _rows(0, rng, reverse=False) if r["candidate"] != lost]
  table = bench.summarize(rows, [PAIR, other], [0, 1])
  entry = table["pairs"][PAIR]
  assert entry["seeds"] == [0] and entry["incomplete_seeds"] == {"1": [lost]}
  assert other not in table["pairs"] and table["incomplete"] == {other: {"0": [lost]}}
  text = bench.markdown({**table, "protocol": {"candidates": {}}})
  assert f"Seed 1 left out: {lost} not scored." in text and f"seed 0 lacks {lost}" in text


def test_confusions_describe_counts_by_hand():
  spec = importlib.util.spec_from_file_location("confusions", _SCRIPT.with_name("confusions.py"))
  confusions = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(confusions)
  # Three classes; logits put 0.8 / 0.1 / 0.1 on the predicted class (log-probabilities).
  pred = np.array([0, 0, 1, 2, 2, 2])
  labels = np.array([0, 1, 1, 1, 2, 0])
  logits = np.log(np.where(np.eye(3)[pred] > 0, 0.8, 0.1))
  d = confusions.describe(logits, labels, 3, top=2)
  assert d["accuracy"] == pytest.approx(3 / 6)
  assert d["confidence_right"] == pytest.approx(0.8) and d["confidence_wrong"] == pytest.approx(0.8)
  np.testing.assert_allclose(d["predicted_share"], [2 / 6, 1 / 6, 3 / 6])
  np.testing.assert_allclose(d["true_share"], [2 / 6, 3 / 6, 1 / 6])
  # Off-diagonal counts: 1->0 once, 1->2 once, 0->2 once; ties keep row-major order.
  assert d["confusions"] == [(0, 2, 1), (1, 0, 1)]


def test_share_check_replay_reads_few_drifts_and_chooses_as_adapt_would_with_all_of_them():
  from dann_jax.runner.choice import DRIFT, choose

  spec = importlib.util.spec_from_file_location("share_check", _SCRIPT.with_name("share_check.py"))
  share_check = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(share_check)
  source_only = [c.name for c in default_candidates() if not c.adapts]
  for trial in range(40):
    rng = np.random.default_rng(trial)
    # Coarse risks so that ties happen; drifts around the bound.
    scored = {
      c.name: {
        str(s): {"scores": {"v": float(rng.integers(0, 6))}, DRIFT: float(rng.random() * 0.3)} for s in (1, 2, 3)
      }
      for c in default_candidates()
    }
    read = []

    def drift(name, step, scored=scored, read=read):
      read.append((name, step))
      return scored[name][str(step)][DRIFT]

    got, bound, _ = share_check.replay(scored, "v", drift)
    want = choose(scored, "v", share_margin=share_check.MARGIN, source_only=source_only)
    assert (got.candidate, got.step) == (want.candidate, want.step)
    # Read: the best source-only checkpoint, then DANN checkpoints best first, up to the first that passes.
    dann_read = [(n, s) for n, s in read if n not in source_only]
    assert all(scored[n][str(s)][DRIFT] > bound for n, s in dann_read[:-1])
    assert len(read) < sum(len(v) for v in scored.values())


def test_fresh_pairs_report_checks_choices_and_pools_pairs_for_leave_one_pair_out(tmp_path, monkeypatch):
  import json
  from types import SimpleNamespace

  from dann_jax.runner.choice import DRIFT, choose
  from dann_jax.validation.selection import leave_one_out_choice

  spec = importlib.util.spec_from_file_location("fresh_pairs", _SCRIPT.with_name("fresh_pairs.py"))
  fresh = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(fresh)
  monkeypatch.setattr(fresh, "RESULTS", tmp_path)
  monkeypatch.setattr(fresh, "ARCHIVE", tmp_path / "fresh_scores")
  src, tgt = fresh.PAIRS[0]
  rng = np.random.default_rng(0)
  scored = {}
  for cand in default_candidates():
    scored[cand.name] = {
      str(step): {
        # DANN checkpoints outscore source only; most drift past the check's bound (source only's 0 + margin).
        "scores": {v: float(rng.random()) - cand.adapts for v in ("bnm", "source-risk")},
        DRIFT: float(rng.random() * 0.3) * cand.adapts,
        "target_accuracy": float(rng.random()),
      }
      for step in (100, 200)
    }
    f = tmp_path / "fresh_scores" / fresh.folder(src, tgt).name / f"{cand.name}_s0.json"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(scored[cand.name]))
  bench = {
    "pairs": {
      "a->b": {"validators": {"bnm": {"weighted_spearman": 0.2}, "source-risk": {"weighted_spearman": 0.5}}},
      "c->d": {"validators": {"bnm": {"weighted_spearman": 0.6}, "source-risk": {"weighted_spearman": 0.1}}},
    }
  }
  (tmp_path / "validators.json").write_text(json.dumps(bench))
  fresh.report(SimpleNamespace(seeds=[0]))
  out = json.loads((tmp_path / "fresh_pairs.json").read_text())
  entry = out["pairs"][fresh.pair_name(src, tgt)]
  source_only = [c.name for c in default_candidates() if not c.adapts]
  want = choose(scored, "bnm", share_margin=fresh.MARGIN, source_only=source_only)
  assert (want.candidate, want.step) != (choose(scored, "bnm").candidate, choose(scored, "bnm").step)
  assert entry["adapt_checked"] == [{"accuracy": want.target_accuracy, "chosen": f"{want.candidate}@{want.step}"}]
  corr = {p: {c: v["weighted_spearman"] for c, v in e["validators"].items()} for p, e in bench["pairs"].items()}
  corr[fresh.pair_name(src, tgt)] = {c: v["weighted_spearman"] for c, v in entry["validators"].items()}
  lopo = leave_one_out_choice(corr)
  assert out["lopo_all_pairs"]["choice"] == lopo
  assert out["lopo_all_pairs"]["mean"] == pytest.approx(np.mean([corr[p][lopo[p]] for p in corr]))
  assert out["lopo_all_pairs"]["benchmark_mean"] == pytest.approx(np.mean([corr[p][lopo[p]] for p in bench["pairs"]]))
  pooled = out["mean_over_all_pairs"]
  assert pooled["bnm"] == pytest.approx(np.mean([corr[p]["bnm"] for p in corr]))
  assert list(pooled) == sorted(pooled, key=lambda c: -pooled[c])
  assert "Leave-one-pair-out" in (tmp_path / "fresh_pairs.md").read_text()
