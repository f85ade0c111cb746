"""`dann-jax adapt` on seeds the validator benchmark never trained: its choice with and without the learning rate
chosen on held-out source images, against source only.

The benchmark's seeds 0-2 are where adapt's rule was measured; these seeds are
a check on new runs. Per seed, the candidates' scores (each run folder's
scores.json, from `dann-jax adapt`) are copied into the results folder, so the
report can be rebuilt without the run folders, and the choice is made by
`dann_jax.runner.choice.adapt_choice` twice: as adapt makes it (learning rate
on source first) and by the validator alone over every candidate. Target
accuracy is read only for the report.

Run:
  for s in 3 4 5; do dann-jax adapt --source mnist --target optdigits --seed $s --out runs/adapt_optdigits; done
  python experiments/selection/more_seeds.py --runs runs/adapt_optdigits --pair mnist->optdigits --seeds 3 4 5
Writes experiments/results/selection/more_seeds/<pair>/ (scores per candidate and seed, report.json, report.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from dann_jax.io import write_text_atomic
from dann_jax.names import DEFAULT_CRITERION
from dann_jax.runner.candidates import default_candidates
from dann_jax.runner.choice import SCORES, adapt_choice, source_error_words

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adapt_table import final_source_only  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results" / "selection" / "more_seeds"


def collect(runs: Path | None, folder: Path, seeds) -> dict[int, dict[str, dict]]:
  """Per seed, candidate name -> scores; copied from `runs` into `folder` first where `runs` has them."""
  out = {}
  for seed in seeds:
    scored = {}
    for cand in default_candidates():
      kept = folder / f"{cand.name}_s{seed}.json"
      if runs is not None and (runs / f"{cand.name}_s{seed}" / SCORES).exists():
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(runs / f"{cand.name}_s{seed}" / SCORES, kept)
      if kept.exists():
        scored[cand.name] = json.loads(kept.read_text())
    if len(scored) == len(default_candidates()):
      out[seed] = scored
    else:
      print(f"seed {seed}: {len(scored)} of {len(default_candidates())} candidates scored; left out", file=sys.stderr)
  return out


def summarize(per_seed: dict[int, dict[str, dict]], validator: str) -> dict:
  candidates = default_candidates()
  rows = []
  for seed, scored in sorted(per_seed.items()):
    source_only = final_source_only(scored)  # the quick preset's source-only run
    with_source, setting = adapt_choice(scored, validator, candidates)
    alone, _ = adapt_choice(scored, validator, candidates, source_setting=False)
    rows.append(
      {
        "seed": seed,
        "source_only": source_only,
        "adapt": with_source.target_accuracy,
        "adapt_chosen": f"{with_source.candidate}@{with_source.step}",
        "source_error": setting.source_error,
        "validator_alone": alone.target_accuracy,
        "validator_alone_chosen": f"{alone.candidate}@{alone.step}",
        "best_checkpoint": max(e["target_accuracy"] for s in scored.values() for e in s.values()),
      }
    )
  mean = lambda key: float(np.mean([r[key] for r in rows]))
  return {
    "validator": validator,
    "seeds": [r["seed"] for r in rows],
    "per_seed": rows,
    "mean": {k: mean(k) for k in ("source_only", "adapt", "validator_alone", "best_checkpoint")},
  }


def markdown(pair: str, report: dict) -> str:
  note = f" {report['note']}" if report.get("note") else ""
  lines = [
    f"# `dann-jax adapt` on more seeds: {pair}",
    "",
    "Command: see the docstring of `experiments/selection/more_seeds.py`. Per seed: the quick preset's source-only "
    "run (final checkpoint); `adapt` (learning rate chosen on held-out source images, then the lowest "
    f"**{report['validator']}** risk among its candidates); the validator alone over every candidate; the best "
    f"checkpoint (oracle). Target accuracy is read after the choice, for this report only.{note}",
    "",
    "| seed | source only | adapt | chosen | validator alone | chosen | best checkpoint | source-only error per "
    "learning rate |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for r in report["per_seed"]:
    errors = source_error_words(r["source_error"])
    lines.append(
      f"| {r['seed']} | {r['source_only']:.4f} | {r['adapt']:.4f} | {r['adapt_chosen']} | "
      f"{r['validator_alone']:.4f} | {r['validator_alone_chosen']} | {r['best_checkpoint']:.4f} | {errors} |"
    )
  m = report["mean"]
  lines += [
    f"| mean | {m['source_only']:.4f} | {m['adapt']:.4f} | | {m['validator_alone']:.4f} | | "
    f"{m['best_checkpoint']:.4f} | |",
    "",
  ]
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--pair", required=True, help="e.g. mnist->optdigits")
  parser.add_argument("--seeds", nargs="+", type=int, required=True)
  parser.add_argument("--runs", type=Path, default=None, help="the adapt --out folder (default: the kept scores)")
  parser.add_argument("--validator", default=DEFAULT_CRITERION)
  parser.add_argument("--note", default="", help="a sentence for the report, e.g. where the runs were trained")
  args = parser.parse_args(argv)
  folder = RESULTS / args.pair.replace("->", "_to_")
  per_seed = collect(args.runs, folder / "scores", args.seeds)
  if not per_seed:
    raise SystemExit(f"no seed of {args.seeds} has every candidate scored in {args.runs or folder / 'scores'}")
  report = {**summarize(per_seed, args.validator), "note": args.note}
  write_text_atomic(folder / "report.json", json.dumps(report, indent=1))
  write_text_atomic(folder / "report.md", markdown(args.pair, report))
  print(markdown(args.pair, report))
  return 0


if __name__ == "__main__":
  sys.exit(main())
