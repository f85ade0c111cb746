"""Out-of-sample check of `dann-jax adapt` on pairs the validator benchmark never measured.

The default validator and the class-share check of `adapt` were chosen on the
benchmark's five pairs (`validator_bench.py`), whose target accuracies have
been read. This script measures them on new pairs built from cached domains
used as a user's own data (`npz:` exports of MNIST-M-like and MNIST(max, BG)),
so that their target accuracies enter no choice. The plan, fixed before any of
these runs: `experiments/results/selection/fresh_pairs_plan.md`.

  python experiments/selection/fresh_pairs.py export   # npz copies of the cached source domains
  python experiments/selection/fresh_pairs.py train    # `adapt` per pair and seed (resumes)
  python experiments/selection/fresh_pairs.py score    # every output validator on every checkpoint
  python experiments/selection/fresh_pairs.py report

Runs go to runs/fresh/<pair>/ (an `adapt` output folder per pair, seeds side by
side); each run's scores are copied to experiments/results/selection/fresh_scores/.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

EXPORTS = Path("runs/fresh_data")
RUNS = Path("runs/fresh")
RESULTS = Path(__file__).resolve().parents[1] / "results" / "selection"
ARCHIVE = RESULTS / "fresh_scores"
# (source domain exported as npz, target domain), in the order they run; fixed before any run.
PAIRS = (("mnist-m", "mnist"), ("mnist-max-bg", "mnist-m"), ("mnist-m", "mnist-dilated"))
SEEDS = (0, 1)


def pair_name(src: str, tgt: str) -> str:
  return f"{src}->{tgt}"


def folder(src: str, tgt: str) -> Path:
  return RUNS / f"{src}_to_{tgt}"


def export(args) -> None:
  """Writes runs/fresh_data/<domain>/{train,test}.npz from the built domain (built or read from the cache)."""
  from dann_jax.data.domains import load_domain

  for src in sorted({s for s, _ in PAIRS}):
    out = EXPORTS / src
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
      d = load_domain(src, split)
      np.savez(out / f"{split}.npz", images=np.asarray(d.images), labels=np.asarray(d.labels, dtype=np.int64))
      print(f"{out / split}.npz: {len(d.labels)} images", flush=True)


def train(args) -> None:
  from dann_jax.data.pairs import get_pair
  from dann_jax.runner.adapt import adapt

  for seed in args.seeds:
    for src, tgt in PAIRS:
      out = folder(src, tgt)
      if (out / f"adapt_s{seed}.json").exists():
        continue
      report = adapt(get_pair(f"npz:{EXPORTS / src}", tgt), out_dir=out, seed=seed, progress=False, log=print)
      print(f"{pair_name(src, tgt)} s{seed}: chose {report['chosen']['candidate']}", flush=True)


def score(args) -> None:
  """Scores every checkpoint of every finished candidate by every output validator; archives the scores."""
  from dann_jax.data.pair_data import load_pair_data
  from dann_jax.data.pairs import get_pair
  from dann_jax.runner.adapt import score_checkpoints
  from dann_jax.runner.candidates import default_candidates
  from dann_jax.validation.selection import OUTPUT_VALIDATORS

  for seed in args.seeds:
    for src, tgt in PAIRS:
      out = folder(src, tgt)
      if not (out / f"adapt_s{seed}.json").exists():
        continue
      data = load_pair_data(get_pair(f"npz:{EXPORTS / src}", tgt))
      for cand in default_candidates():
        run = out / f"{cand.name}_s{seed}"
        if not (run / "summary.json").exists():
          continue
        score_checkpoints(run, data, list(OUTPUT_VALIDATORS))
        dest = ARCHIVE / out.name / f"{cand.name}_s{seed}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run / "scores.json", dest)
        print(f"{run}: scored", flush=True)


def report(args) -> None:
  raise SystemExit("report: not written yet")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("command", choices=("export", "train", "score", "report"))
  parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
  args = parser.parse_args(argv)
  {"export": export, "train": train, "score": score, "report": report}[args.command](args)
  return 0


if __name__ == "__main__":
  sys.exit(main())
