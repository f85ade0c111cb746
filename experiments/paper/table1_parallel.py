"""Table 1 with several runs at once on one machine: the harness's runs as concurrent processes, then one table.

On an accelerator one MNIST-net run of batch 128 leaves most of the chip idle, and the host work beside it (data,
compilation, the SVM heads of each record) needs CPU cores. This script trains every (pair, method, seed) of the
table as its own `dann-jax reproduce table1` process, `--workers` of them at a time, each in a folder of its own;
moves each finished run and its record into the one layout the harness keeps (`<runs>/<pair>/<method>_s<seed>/`,
`<results>/table1/records/...`); then runs the harness with `--table-only` per pair (the feature analyses, in
parallel) and once over all pairs, which writes `<results>/table1_<preset>.{json,md}`. The runs and their numbers are
the harness's own; only the scheduling differs. `<results>/parallel_timing.json` keeps the wall time of each phase
and of each run's process.

    python experiments/paper/table1_parallel.py --preset paper --seeds 3 --workers 12 \\
      --pairs 'mnist->mnist-dilated' 'mnist->mnist-max-bg' 'mnist->mnist-m' 'mnist->optdigits' \\
      --runs runs/table1_paper --results runs/table1_paper

Runs already finished in `--runs` (with their records in `--results`) are reused, so an interrupted table resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dann_jax.data.pairs import PAIRS
from dann_jax.tables.records import TRAINED, TableArgs, records_folder, run_folder


def _harness(args, runs: str, results: str, *options: str) -> list[str]:
  """`dann-jax reproduce table1` with this table's preset and steps, over `runs` and `results`."""
  steps = [] if args.steps is None else ["--steps", str(args.steps)]
  return [
    *(sys.executable, "-m", "dann_jax.cli", "reproduce", "table1", "--json", "--no-progress"),
    *("--preset", args.preset, "--runs", runs, "--results", results, *steps, *options),
  ]


def run_job(args, pair: str, method: str, seed: int, deadline: float) -> dict:
  """One run of the table in a folder of its own, moved into the shared layout when it ends."""
  final = TableArgs(
    preset=args.preset, seeds=[seed], pairs=[pair], steps=args.steps, runs=args.runs, results=args.results
  )
  record = records_folder(final, pair) / f"{method}_s{seed}.json"
  job = {"pair": pair, "method": method, "seed": seed}
  if record.exists():
    return job | {"rc": 0, "seconds": 0.0, "reused": True}
  left = deadline - time.monotonic()
  if left < 30:
    return job | {"rc": None, "seconds": 0.0, "skipped": "no time left"}
  own = Path(args.work) / f"{pair.replace('->', '_to_')}_{method}_s{seed}"
  mine = TableArgs(
    preset=args.preset,
    seeds=[seed],
    pairs=[pair],
    steps=args.steps,
    runs=str(own / "runs"),
    results=str(own / "results"),
  )
  folder, own_folder = run_folder(final, pair, method, seed), run_folder(mine, pair, method, seed)
  if folder.exists() and not own_folder.exists():  # resume a run stopped earlier
    own_folder.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(folder, own_folder)
  command = _harness(
    args, mine.runs, mine.results, "--pairs", pair, "--methods", method, "--seeds", "1", "--seed", str(seed)
  )
  own.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  with open(own / "log.txt", "w") as log:
    try:
      rc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=left).returncode
    except subprocess.TimeoutExpired:
      rc = "timeout"
  seconds = round(time.perf_counter() - t0, 1)
  if own_folder.exists():
    folder.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
    shutil.move(own_folder, folder)
  mine_record = records_folder(mine, pair) / record.name
  if mine_record.exists():
    record.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(mine_record, record)
  result = job | {"rc": rc, "seconds": seconds, "recorded": record.exists()}
  print(json.dumps(result), flush=True)
  return result


def table_only(args, pairs) -> tuple[int, float]:
  seeds = ("--seeds", str(args.seeds), "--seed", str(args.seed))
  t0 = time.perf_counter()
  rc = subprocess.run(_harness(args, args.runs, args.results, *seeds, "--pairs", *pairs, "--table-only")).returncode
  return rc, round(time.perf_counter() - t0, 1)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--preset", choices=("quick", "paper"), default="paper")
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--seed", type=int, default=0, help="the first seed")
  p.add_argument("--steps", type=int, default=None)
  p.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS), metavar="PAIR")
  p.add_argument("--methods", nargs="+", default=list(TRAINED), choices=TRAINED)
  p.add_argument("--workers", type=int, default=4, help="runs at once")
  p.add_argument("--budget", type=float, default=None, help="seconds for the training phase; later runs are skipped")
  p.add_argument("--runs", default=None, help="default runs/table1_<preset>")
  p.add_argument("--results", default=None, help="default: the --runs folder")
  args = p.parse_args(argv)
  if args.seeds < 1 or args.workers < 1:
    p.error(f"--seeds {args.seeds} and --workers {args.workers} must be >= 1")
  args.runs = args.runs or f"runs/table1_{args.preset}"
  args.results = args.results or args.runs
  args.work = str(Path(args.runs) / "_jobs")
  # Each process takes the accelerator memory it needs instead of most of the chip.
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

  t0 = time.perf_counter()
  deadline = time.monotonic() + (args.budget if args.budget is not None else float("inf"))
  seeds = range(args.seed, args.seed + args.seeds)
  # Seed-major within each pair: a pair's first seed of every method ends first, so its feature analysis can run.
  jobs = [(pair, method, seed) for pair in args.pairs for seed in seeds for method in args.methods]
  with ThreadPoolExecutor(args.workers) as pool:
    done = list(pool.map(lambda job: run_job(args, *job, deadline), jobs))
  train_wall = round(time.perf_counter() - t0, 1)
  with ThreadPoolExecutor(min(args.workers, len(args.pairs))) as pool:
    analyses = list(pool.map(lambda pair: table_only(args, [pair]), args.pairs))
  rc, table_wall = table_only(args, args.pairs)
  timing = {
    "command": "python experiments/paper/table1_parallel.py " + " ".join(sys.argv[1:] if argv is None else argv),
    "workers": args.workers,
    "machine": f"{platform.machine()} {os.cpu_count()} cores",
    "train_wall_s": train_wall,
    "analysis_wall_s": max((s for _, s in analyses), default=0.0),
    "table_wall_s": table_wall,
    "total_wall_s": round(time.perf_counter() - t0, 1),
    "runs": done,
  }
  Path(args.results).mkdir(parents=True, exist_ok=True)
  (Path(args.results) / "parallel_timing.json").write_text(json.dumps(timing, indent=2))
  print(json.dumps({k: v for k, v in timing.items() if k != "runs"}), flush=True)
  return rc


if __name__ == "__main__":
  sys.exit(main())
