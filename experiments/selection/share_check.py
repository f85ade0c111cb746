"""The class-share check of `dann-jax adapt` on the validator benchmark's pairs: what it would have kept.

For each pair and seed of the benchmark, `dann_jax.runner.choice.choose` with
`share_margin` (the rule `adapt --class-share-margin` applies) is replayed on
the archived scores of the default validator. The class-share drift of a
checkpoint (`dann_jax.validation.selection.class_share_drift` on `adapt`'s view)
is computed only where the rule reads it: the best source-only checkpoint, then
the DANN checkpoints that outscore it, best first, until one passes the check
(those ranked below it cannot be chosen). Target accuracies come from the
archive and are reported, never used. The margin was fixed before any drift was
computed (experiments/results/selection/fresh_pairs_plan.md).

Needs the benchmark's run folders (runs/selection/<pair>/). Run (resumes; the
drifts computed so far are kept in the JSON):
  python experiments/selection/share_check.py
Writes experiments/results/selection/share_check.{json,md}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validator_bench import PAIR_NAMES, RESULTS, archive_file, run_dir  # noqa: E402

from dann_jax.data.pairs import PAIRS  # noqa: E402
from dann_jax.io import write_text_atomic  # noqa: E402
from dann_jax.runner.candidates import default_candidates  # noqa: E402
from dann_jax.runner.choice import DRIFT, VIEW_SIZES, choose  # noqa: E402

MARGIN = 0.05  # fixed in fresh_pairs_plan.md before any drift was computed
OUT = RESULTS / "share_check.json"


class Drifts:
  """Computes (and caches in `store`) a checkpoint's class-share drift on `adapt`'s view."""

  def __init__(self, pair: str, seed: int, store: dict):
    self.pair, self.seed, self.store = pair, seed, store
    self.data = self.runs = None

  def __call__(self, candidate: str, step: int) -> float:
    key = f"{candidate}@{step}"
    if key not in self.store:
      self.store[key] = self._compute(candidate, step)
    return self.store[key]

  def _compute(self, candidate: str, step: int) -> float:
    from dann_jax.data.pair_data import load_pair_data
    from dann_jax.runner.runs import load_run
    from dann_jax.training import checkpoint
    from dann_jax.validation import selection

    self.data = self.data or load_pair_data(PAIRS[self.pair])
    folder = run_dir(self.pair, candidate, self.seed)
    run = load_run(folder, data=self.data)
    view = selection.selection_set(run.data, run.mean, **VIEW_SIZES)
    state = checkpoint.restore_checkpoint(folder / "checkpoint", run.state, step)
    logits = selection.model_outputs(state, view, [selection.CLASS_SHARES]).target_logits
    return selection.class_share_drift(logits, view.source_val_labels)


def replay(scored: dict, validator: str, drift: Drifts) -> tuple:
  """`choose` with the check, the drift computed only where the rule reads it; (choice, drifts read)."""
  names = [c.name for c in default_candidates()]
  source_only = [c.name for c in default_candidates() if not c.adapts]
  risk = lambda e: e["scores"][validator]
  best = choose({n: scored[n] for n in source_only}, validator)
  so_best = (best.candidate, best.step, scored[best.candidate][str(best.step)])
  bound = drift(so_best[0], so_best[1]) + MARGIN
  better = sorted(
    (
      (n, int(s), e) for n in names if n not in source_only for s, e in scored[n].items() if risk(e) <= risk(so_best[2])
    ),
    key=lambda t: (risk(t[2]), names.index(t[0]), t[1]),
  )
  read = {(so_best[0], so_best[1]): drift(so_best[0], so_best[1])}
  for n, s, _ in better:
    read[(n, s)] = drift(n, s)
    if read[(n, s)] <= bound:
      break
  # Every checkpoint the walk did not reach ranks below one it kept: an infinite drift there changes nothing.
  filled = {
    n: {s: {**e, DRIFT: read.get((n, int(s)), float("inf"))} for s, e in steps.items()} for n, steps in scored.items()
  }
  return choose(filled, validator, share_margin=MARGIN, source_only=source_only), bound, read


def main() -> int:
  bench = json.loads((RESULTS / "validators.json").read_text())
  validator = bench["default"]
  table = json.loads((RESULTS.parent / "quick" / "adapt_table_3seeds.json").read_text())
  done = json.loads(OUT.read_text()) if OUT.exists() else {}
  result = {"validator": validator, "margin": MARGIN, "pairs": {}, "drifts": done.get("drifts", {})}
  for name in PAIR_NAMES:
    entry = {"source_only": [], "adapt": [], "adapt_checked": [], "chosen_checked": [], "bound": [], "left_out": []}
    row = table["pairs"][name]
    for i, seed in enumerate(row["seeds"]):
      scored = {c.name: json.loads(archive_file(name, c.name, seed).read_text()) for c in default_candidates()}
      drift = Drifts(name, seed, result["drifts"].setdefault(f"{name} s{seed}", {}))
      choice, bound, read = replay(scored, validator, drift)
      unchecked = choose(scored, validator)
      assert unchecked.target_accuracy == row["adapt"][i], (name, seed)  # the table's choice, replayed
      entry["source_only"].append(row["source_only"][i])
      entry["adapt"].append(row["adapt"][i])
      entry["adapt_checked"].append(choice.target_accuracy)
      entry["chosen_checked"].append(f"{choice.candidate}@{choice.step}")
      entry["bound"].append(bound)
      entry["left_out"].append(sum(d > bound for d in read.values()))
      result["pairs"][name] = entry
      write_text_atomic(OUT, json.dumps(result, indent=1))
      print(
        f"{name} s{seed}: adapt {row['adapt'][i]:.4f} -> checked {choice.target_accuracy:.4f} "
        f"({choice.candidate}@{choice.step}; bound {bound:.3f}, {entry['left_out'][-1]} left out)",
        flush=True,
      )
  write_text_atomic(OUT.with_suffix(".md"), markdown(result))
  return 0


def markdown(result: dict) -> str:
  lines = [
    "# The class-share check on the validator benchmark's pairs",
    "",
    f"`dann-jax adapt` with `--validator {result['validator']} --class-share-margin {result['margin']:g}`, replayed on "
    "the benchmark's scores (`python experiments/selection/share_check.py`). These five pairs' target accuracies "
    "were read before the check was proposed: this is an in-sample check, not a test. Target accuracy is reported, "
    "never used.",
    "",
    "| pair | source only | adapt | adapt + check | per seed (adapt -> checked) | DANN checkpoints left out |",
    "|---|---|---|---|---|---|",
  ]
  for name, e in result["pairs"].items():
    per = ", ".join(f"{a:.3f}->{b:.3f}" for a, b in zip(e["adapt"], e["adapt_checked"]))
    lines.append(
      f"| {name} | {np.mean(e['source_only']):.4f} | {np.mean(e['adapt']):.4f} | {np.mean(e['adapt_checked']):.4f} "
      f"| {per} | {', '.join(map(str, e['left_out']))} |"
    )
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  sys.exit(main())
