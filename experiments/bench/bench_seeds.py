"""`--seeds K` against K separate runs: the wall time of whole `dann-jax train` commands.

Each command trains the quick preset's DANN on MNIST -> MNIST-M-like for `--steps` steps (evaluation only at
the end) from a fresh process, so compilation, data loading and evaluation count as a user sees them. The
K-seed command is timed against the sum of K single-seed commands (seeds 0 .. K-1), and the two are checked
to reach the same target accuracies. Prints one JSON line:
{"seeds": K, "steps": N, "batched_s": x, "separate_s": y, "ratio": x / y, "backend": ..., "cpu": ...}.

Run (quiet machine; MNIST and MNIST-M fetched):
  python experiments/bench/bench_seeds.py --seeds 3 --steps 300
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cpu_model() -> str:
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def train(out: Path, steps: int, seed: int, seeds: int) -> tuple[float, list[float]]:
  """Wall seconds of one `dann-jax train` command, and its per-seed target accuracies."""
  command = ["dann-jax", "train", "--source", "mnist", "--target", "mnist-m", "--steps", str(steps)]
  command += ["--seed", str(seed), "--seeds", str(seeds), "--set", f"eval_every={steps}", "--no-progress"]
  command += ["--out", str(out)]
  start = time.perf_counter()
  subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
  wall = time.perf_counter() - start
  per_seed = json.loads((out / "summary.json").read_text())["target_accuracy"]["per_seed"]
  return wall, [float(a) for a in per_seed]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=300)
  args = parser.parse_args(argv)
  work = Path(tempfile.mkdtemp(prefix="bench_seeds_"))
  try:
    batched_s, batched_acc = train(work / "batched", args.steps, 0, args.seeds)
    separate_s, separate_acc = 0.0, []
    for seed in range(args.seeds):
      wall, acc = train(work / f"seed{seed}", args.steps, seed, 1)
      separate_s += wall
      separate_acc += acc
  finally:
    shutil.rmtree(work, ignore_errors=True)
  import jax

  row = {
    "seeds": args.seeds,
    "steps": args.steps,
    "batched_s": round(batched_s, 1),
    "separate_s": round(separate_s, 1),
    "ratio": round(batched_s / separate_s, 3),
    "same_accuracies": max(abs(a - b) for a, b in zip(batched_acc, separate_acc)) < 1e-3,
    "backend": jax.default_backend(),
    "cpu": cpu_model(),
  }
  print(json.dumps(row))
  return 0


if __name__ == "__main__":
  sys.exit(main())
