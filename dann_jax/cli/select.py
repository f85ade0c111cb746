"""`dann-jax select RUN_DIR...`: rank runs (or their checkpoints) by a label-free criterion."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from dann_jax.io import write_text_atomic
from dann_jax.names import CRITERIA, DEFAULT_CRITERION


def register(subparsers) -> None:
  p = subparsers.add_parser(
    "select",
    help="rank runs or checkpoints without target labels",
    description="Score each run folder (each seed; with --checkpoints, each "
    "saved step) by a label-free criterion computed from the "
    "held-out source images and unlabelled target images, and "
    "print the ranking, best first. Target test accuracy is "
    "shown for reporting only; it never enters the ranking.",
  )
  p.add_argument("runs", nargs="+", help="run folders of one pair, written by `dann-jax train`")
  p.add_argument(
    "--criterion",
    choices=CRITERIA,
    default=DEFAULT_CRITERION,
    help=f"the label-free validator (default {DEFAULT_CRITERION}, the validator benchmark's choice: "
    "experiments/results/selection/validators.md); all are risks, lower is better",
  )
  p.add_argument(
    "--checkpoints", action="store_true", help="score every checkpoint along each run, not only its last state"
  )
  p.add_argument("--reverse-steps", type=int, default=1000, help="training steps of the reverse model (default 1000)")
  p.add_argument(
    "--out",
    default=None,
    help="JSON file for the ranking (default: selection.json in the folder that holds the runs, or in the run)",
  )
  p.add_argument("--data-dir", default=None)
  p.set_defaults(func=run)


def _accuracy(value) -> str:
  return "-" if value is None else f"{value:.4f}"


def _progress_bar(runs, along_run: bool, criterion: str):
  """A progress bar over the candidates `score_runs` will score (each seed, each checkpoint with `along_run`)."""
  from tqdm.auto import tqdm

  from dann_jax.runner.folder import read_run_json
  from dann_jax.training import checkpoint

  total = 0
  for run_dir in map(Path, runs):
    if not (run_dir / "run.json").exists():
      continue  # score_runs names the problem
    seeds = len(read_run_json(run_dir).get("seeds", [0]))  # a damaged run.json: its error, before the bar
    total += seeds * (max(len(checkpoint.all_steps(run_dir / "checkpoint")), 1) if along_run else 1)
  return tqdm(total=total, unit="candidate", desc=f"scoring ({criterion})", dynamic_ncols=True)


def run(args) -> int:
  from dann_jax.runner.ranking import score_runs

  if args.reverse_steps <= 0:
    raise ValueError(f"--reverse-steps {args.reverse_steps} must be positive")
  bar = _progress_bar(args.runs, args.checkpoints, args.criterion)
  try:
    ranked = score_runs(
      args.runs,
      args.criterion,
      along_run=args.checkpoints,
      reverse_steps=args.reverse_steps,
      data_dir=args.data_dir,
      progress=lambda line: (bar.write(line), bar.update(1)),
    )
  finally:
    bar.close()
  width = max(len(c.run) for c in ranked)
  print(
    f"\n{'rank':>4}  {'run':<{width}}  {'seed':>4}  {'step':>6}  {args.criterion:>18}  {'target acc (not used)':>21}"
  )
  for i, c in enumerate(ranked, 1):
    print(f"{i:>4}  {c.run:<{width}}  {c.seed:>4}  {c.step:>6}  {c.score:>18.4f}  {_accuracy(c.target_accuracy):>21}")
  out = Path(args.out) if args.out is not None else default_out(args.runs)
  write_text_atomic(
    out,
    json.dumps(
      {"criterion": args.criterion, "lower_is_better": True, "ranking": [dataclasses.asdict(c) for c in ranked]},
      indent=2,
    ),
  )
  print(f"ranking written to {out}")
  return 0


def default_out(runs) -> Path:
  """selection.json in the runs' common folder: the run's own folder for one run, their parent for several."""
  import os

  folders = [os.path.abspath(r) for r in runs]
  return Path(folders[0] if len(folders) == 1 else os.path.commonpath(folders)) / "selection.json"
