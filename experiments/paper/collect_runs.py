"""Collects finished `dann-jax train` runs into one results JSON and Markdown.

Runs of the same pair, method, preset and step count (e.g. one per seed,
trained one after the other) are grouped: final target accuracy per seed on
the whole target test set, mean +- std, the paper's number beside it, wall
times, and the target accuracy at every evaluation while training (on the
`eval_size` test images of the preset), so seeds can be compared step by
step.

    python experiments/paper/collect_runs.py runs/paper_mnist-m_dann_s0 \\
        runs/paper_mnist-m_dann_s1 --out experiments/results/paper/paper_mnist-m \\
        --command "dann-jax train ... --seed {0,1}"

Writes OUT.json and OUT.md; the curves of the first run of each group are
copied next to them as OUT_<method>_curves.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from dann_jax.runner.log import accuracy_stats


def read_run(run_dir: Path) -> dict:
  """The summary of one finished run and its evaluation trajectory."""
  summary_path = run_dir / "summary.json"
  if not summary_path.exists():
    raise SystemExit(
      f"{run_dir} has no summary.json: the run has not finished (resume it with `dann-jax train ... --resume`)"
    )
  summary = json.loads(summary_path.read_text())
  trajectory = {}
  with open(run_dir / "metrics.jsonl") as f:
    for line in f:
      row = json.loads(line)
      if "target_accuracy" in row:
        trajectory[row["step"]] = row["target_accuracy"]
  return {"dir": str(run_dir), "summary": summary, "trajectory": trajectory}


def group_runs(runs: list[dict]) -> dict[tuple, list[dict]]:
  groups = defaultdict(list)
  for run in runs:
    s = run["summary"]
    groups[(s["pair"], s["method"], s["preset"], s["steps"])].append(run)
  return groups


def summarise(group: list[dict]) -> dict:
  first = group[0]["summary"]
  per_seed = [a for run in group for a in run["summary"]["target_accuracy"]["per_seed"]]
  seeds = [s for run in group for s in run["summary"]["seeds"]]
  steps = sorted(set.intersection(*(set(r["trajectory"]) for r in group)))
  # One value per seed, in the order of `seeds` (a run may hold several).
  trajectory = {str(k): [float(a) for r in group for a in np.atleast_1d(r["trajectory"][k])] for k in steps}
  return {
    "pair": first["pair"],
    "method": first["method"],
    "preset": first["preset"],
    "steps": first["steps"],
    "seeds": seeds,
    "target_accuracy": accuracy_stats(np.array(per_seed)),
    "source_accuracy_mean": float(np.mean([run["summary"]["source_accuracy"]["mean"] for run in group])),
    "target_test_size": first["target_test_size"],
    "paper_v1": first.get("paper_v1"),
    "paper_icml": first.get("paper_icml"),
    "train_seconds": [run["summary"]["train_seconds"] for run in group],
    "machine": first["machine"],
    "note": first.get("note", ""),
    "config": first["config"],
    "provenance": first.get("provenance"),
    "trajectory": trajectory,
    "runs": [run["dir"] for run in group],
  }


def to_markdown(rows: list[dict], command: str) -> str:
  lines = [
    f"# Runs: {', '.join(sorted({r['preset'] for r in rows}))} preset",
    "",
    f"Command: `{command}`" if command else "",
    f"Machine: {rows[0]['machine']}",
    "",
    "| pair | method | steps | seeds | target accuracy (mean +- std) "
    "| per seed | paper v1 / ICML | train time per run |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    acc = r["target_accuracy"]
    times = ", ".join(f"{t / 60:.1f} min" for t in r["train_seconds"])
    per_seed = " / ".join(f"{a:.4f}" for a in np.atleast_1d(acc["per_seed"]))
    lines.append(
      f"| {r['pair']} | {r['method']} | {r['steps']} | "
      f"{', '.join(map(str, r['seeds']))} | {acc['mean']:.4f} +- "
      f"{acc['std']:.4f} | {per_seed} | {r['paper_v1']} / "
      f"{r['paper_icml']} | {times} |"
    )
  lines += [
    "",
    f"Target accuracy on all {rows[0]['target_test_size']} target "
    "test images at the end of training. While training (first "
    "`eval_size` target test images, per seed):",
    "",
  ]
  for r in rows:
    lines.append(
      f"- {r['pair']} {r['method']}: "
      + "; ".join(f"{int(k) / 1000:g}k " + "/".join(f"{a:.3f}" for a in v) for k, v in r["trajectory"].items())
    )
  notes = sorted({r["note"] for r in rows if r["note"]})
  if notes:
    lines += ["", *notes]
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs", nargs="+", help="run folders of dann-jax train")
  parser.add_argument("--out", required=True, help="output path without extension")
  parser.add_argument("--command", default="", help="the command that made the runs, for the record")
  args = parser.parse_args(argv)
  runs = [read_run(Path(d)) for d in args.runs]
  rows = [summarise(g) for g in group_runs(runs).values()]
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix(".json").write_text(json.dumps({"command": args.command, "rows": rows}, indent=1) + "\n")
  out.with_suffix(".md").write_text(to_markdown(rows, args.command))
  for r in rows:
    curves = Path(r["runs"][0]) / "curves.png"
    if curves.exists():
      shutil.copyfile(curves, f"{out}_{r['method']}_curves.png")
  print(out.with_suffix(".md").read_text())
  return 0


if __name__ == "__main__":
  sys.exit(main())
