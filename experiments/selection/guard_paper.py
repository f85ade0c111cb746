"""The guard under the paper preset, on the pairs where unguarded DANN collapses or diverges.

MNIST -> optdigits, unguarded (experiments/results/table1_paper.md): seeds 0
and 2 collapse to constant predictions (.1024) and seed 1 diverges at step
2,806. Syn-digits -> MNIST (SVHN net), unguarded on one H200
(`dann-jax train ... --preset paper --seeds 3`): seed 0's label loss rises back
to chance (2.3) from step ~1,500 and the run stops with a non-finite loss at
step 2,266. Each seed here is the same run with `--guard`, i.e.
  dann-jax train --source SRC --target TGT --preset paper --guard --seed S --out runs/guard/NAME_sS
trained (or resumed, or reused) by this script, which then writes
experiments/results/selection/guard_paper_NAME.{json,md}, NAME being optdigits for MNIST -> optdigits and
syn-digits_to_mnist for syn-digits -> MNIST.

Run: python experiments/selection/guard_paper.py --pair mnist->optdigits --seeds 0 1 2
  (--collect: tabulate finished seeds only; --runs: where the run folders are)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from dann_jax.io import write_text_atomic

RUNS = Path("runs/guard")
RESULTS_ROOT = Path(__file__).resolve().parents[1] / "results"
RESULTS = RESULTS_ROOT / "selection"


def optdigits_source_only() -> list[float]:
  """The unguarded paper-preset source-only runs of Table 1 (CPU), seeds 0-2."""
  records = RESULTS_ROOT / "table1" / "records" / "paper" / "mnist_to_optdigits"
  return [json.loads((records / f"source_only_s{s}.json").read_text())["target_accuracy"] for s in (0, 1, 2)]


def syn_digits_source_only() -> list[float]:
  """The paper-preset source-only run of syn-digits -> mnist on the H200 (`--seeds 3`), seeds 0-2."""
  summary = RESULTS_ROOT / "table1_h200" / "syn-digits_to_mnist" / "source_only_summary.json"
  return json.loads(summary.read_text())["target_accuracy"]["per_seed"]


# Per pair: the name of its run folders and result files, the source-only baseline (seeds 0-2) and what the
# unguarded DANN did per seed.
PAIRS = {
  "mnist->optdigits": (
    "optdigits",
    optdigits_source_only,
    {0: "collapsed (.1024)", 1: "diverged at 2,806", 2: "collapsed (.1024)"},
  ),
  "syn-digits->mnist": (
    "syn-digits_to_mnist",
    syn_digits_source_only,
    {
      0: "label loss at chance from ~1,500; the run diverged at 2,266",
      1: "stopped at 2,266 by seed 0's divergence",
      2: "stopped at 2,266 by seed 0's divergence",
    },
  ),
}


def folder(runs: Path, pair: str, seed: int) -> Path:
  return runs / f"{PAIRS[pair][0]}_s{seed}"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--pair", choices=tuple(PAIRS), default="mnist->optdigits")
  parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
  parser.add_argument("--runs", type=Path, default=RUNS, help=f"folder of the run folders (default {RUNS})")
  parser.add_argument("--collect", action="store_true", help="only tabulate the finished seeds")
  args = parser.parse_args(argv)
  if not args.collect:
    from dann_jax.data.pairs import PAIRS as KNOWN
    from dann_jax.runner.runs import train_or_reuse

    for seed in args.seeds:
      run = folder(args.runs, args.pair, seed)
      train_or_reuse(KNOWN[args.pair], "dann", run, preset="paper", seeds=[seed], guard=True)
  name, baseline, unguarded_words = PAIRS[args.pair]
  source, target = args.pair.split("->")
  table = {"pair": args.pair, "seeds": [], "dann_guarded": [], "collapsed": [], "diverged": [], "guard_events": []}
  for seed in args.seeds:
    path = folder(args.runs, args.pair, seed) / "summary.json"
    if not path.exists():
      continue
    s = json.loads(path.read_text())
    table["seeds"].append(seed)
    table["dann_guarded"].append(s["target_accuracy"]["mean"])
    table["collapsed"].append(s["collapsed_at_step"][0] is not None)
    table["diverged"].append(False)  # a guarded run that finished has no non-finite loss left
    table["guard_events"].append(s["guard"]["events"])
    table.setdefault("machine", s.get("machine"))
  table["source_only"] = baseline()
  RESULTS.mkdir(parents=True, exist_ok=True)
  write_text_atomic(RESULTS / f"guard_paper_{name}.json", json.dumps(table, indent=2))
  lines = [
    f"# The guard on {args.pair}, paper preset",
    "",
    f"Command: `python experiments/selection/guard_paper.py --pair {args.pair} --seeds 0 1 2` (each seed is "
    f"`dann-jax train --source {source} --target {target} --preset paper --guard --seed S`). Guarded runs "
    f"trained on: {table.get('machine')}.",
    "",
    "| seed | DANN, guarded | guard events | source only | unguarded DANN |",
    "|---|---|---|---|---|",
  ]
  for i, seed in enumerate(table["seeds"]):
    events = "; ".join(
      f"{e['reason']} at {e['step']:,}, back to {e['restored_step']:,}, λ x {e['lam_scale']:g}"
      for e in table["guard_events"][i]
    )
    lines.append(
      f"| {seed} | {table['dann_guarded'][i]:.4f} | {events or '-'} | {table['source_only'][seed]:.4f} | "
      f"{unguarded_words.get(seed, '-')} |"
    )
  if table["seeds"]:
    lines += [
      "",
      f"Mean over seeds {table['seeds']}: guarded DANN {np.mean(table['dann_guarded']):.4f}, source only "
      f"{np.mean([table['source_only'][s] for s in table['seeds']]):.4f} (three seeds: "
      f"{np.mean(table['source_only']):.4f}). No guarded seed collapsed: {not any(table['collapsed'])}.",
    ]
  write_text_atomic(RESULTS / f"guard_paper_{name}.md", "\n".join(lines) + "\n")
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
