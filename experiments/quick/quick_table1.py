"""Table 1 under the quick preset: source-only vs DANN on every offline pair, three seeds.

Each (pair, method, seed) is its own run (on a CPU, one program over three
vmapped seeds ran about 2.7x slower than three separate runs); finished runs
are reused and interrupted ones resume from their checkpoints, so the command
can be repeated until the table is complete. Target accuracy is measured on
each pair's whole target test set.

Run:
  python experiments/quick/quick_table1.py --seeds 0 1 2

Writes experiments/results/quick/quick_table1_3seeds.{json,md} (and each pair's DANN
curves as quick_table1_curves_<pair>.png); runs go to runs/quick_table1/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from dann_jax.data.pairs import PAIRS
from dann_jax.io import write_text_atomic

OFFLINE_PAIRS = (
  "mnist->mnist-m",
  "mnist->mnist-dilated",
  "mnist->mnist-max-bg",
  "syn-digits->mnist",
  "mnist->optdigits",
)
METHODS = ("source_only", "dann")
RESULTS = Path(__file__).resolve().parents[1] / "results" / "quick"
STEM = "quick_table1_3seeds"


def _folder(runs: Path, pair: str, method: str, seed: int) -> Path:
  return runs / pair.replace("->", "_to_") / f"{method}_s{seed}"


def train(args) -> None:
  from dann_jax.data.pair_data import load_pair_data
  from dann_jax.runner.runs import train_or_reuse

  for name in args.pairs:
    data = load_pair_data(PAIRS[name])
    for seed in args.seeds:
      for method in METHODS:
        result = train_or_reuse(
          PAIRS[name],
          method,
          _folder(args.runs, name, method, seed),
          preset="quick",
          seeds=[seed],
          data=data,
          progress=not args.no_progress,
        )
        print(f"{name} {method} seed {seed}: {result.summary['target_accuracy']['mean']:.4f}", flush=True)
        write(args)


def write(args) -> None:
  table = {"preset": "quick", "seeds": args.seeds, "pairs": {}}
  lines = [
    "# Table 1, quick preset, three seeds",
    "",
    f"Command: `python experiments/quick/quick_table1.py --seeds {' '.join(map(str, args.seeds))}`",
    "",
    "Target accuracy on each pair's whole target test set, per seed "
    "and mean ± std; `bar` checks DANN ≥ source only on the mean and "
    "no seed more than .01 below its own source-only run.",
    "",
    "| pair | source only | DANN | DANN - source only | bar | paper v1 (SO / DANN) |",
    "|---|---|---|---|---|---|",
  ]
  for name in args.pairs:
    cells = {}
    for method in METHODS:
      for seed in args.seeds:
        summary = _folder(args.runs, name, method, seed) / "summary.json"
        if summary.exists():
          s = json.loads(summary.read_text())
          cells.setdefault(method, []).append(s["target_accuracy"]["mean"])
          table.setdefault("steps", s["steps"])
          table.setdefault("note", s["note"])
    complete = {m: v for m, v in cells.items() if len(v) == len(args.seeds)}
    table["pairs"][name] = cells
    fmt = lambda v: f"{np.mean(v):.4f} ± {np.std(v):.4f} (" + "/".join(f"{x:.3f}" for x in v) + ")"
    so, dann = complete.get("source_only"), complete.get("dann")
    paper = PAIRS[name].paper
    ref = f"{paper['source_only']:.4f} / {paper['dann']:.4f}" if paper else "-"
    if so is None or dann is None:
      done = lambda m: f"{len(cells.get(m, []))} of {len(args.seeds)} seeds"
      lines.append(
        f"| {name} | {fmt(so) if so else done('source_only')} | {fmt(dann) if dann else done('dann')} | - | - | {ref} |"
      )
      continue
    diff = np.asarray(dann) - np.asarray(so)
    ok = diff.mean() >= 0 and diff.min() >= -0.01
    lines.append(
      f"| {name} | {fmt(so)} | {fmt(dann)} | {diff.mean():+.4f} "
      f"(min {diff.min():+.4f}) | {'met' if ok else 'NOT met'} | "
      f"{ref} |"
    )
    curves = _folder(args.runs, name, "dann", args.seeds[0]) / "curves.png"
    if curves.exists():
      target = RESULTS / f"quick_table1_curves_{name.replace('->', '_to_')}.png"
      shutil.copy(curves, target)
  if "note" in table:
    lines += ["", f"Preset: {table['note']}", ""]
  RESULTS.mkdir(parents=True, exist_ok=True)
  write_text_atomic(RESULTS / f"{STEM}.json", json.dumps(table, indent=2))
  write_text_atomic(RESULTS / f"{STEM}.md", "\n".join(lines) + "\n")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
  parser.add_argument("--pairs", nargs="+", default=list(OFFLINE_PAIRS), choices=OFFLINE_PAIRS)
  parser.add_argument("--runs", type=Path, default=Path("runs/quick_table1"))
  parser.add_argument("--table-only", action="store_true", help="rewrite the table from finished runs only")
  parser.add_argument("--no-progress", action="store_true")
  args = parser.parse_args(argv)
  if args.table_only:
    write(args)
  else:
    train(args)
  return 0


if __name__ == "__main__":
  sys.exit(main())
