"""Out-of-sample check of `dann-jax adapt` on pairs the validator benchmark never measured.

The default validator and the class-share check of `adapt` were chosen on the
benchmark's five pairs (`validator_bench.py`), whose target accuracies have
been read. This script measures them on new pairs built from cached domains
used as a user's own data (`npz:` exports of the built source domains),
so that their target accuracies enter no choice. The plans, each fixed before
its runs: `experiments/results/selection/fresh_pairs_plan.md` (first round) and
`fresh_pairs_plan_2.md` (second round: the remaining ordered pairs of the four
MNIST-net domains).

  python experiments/selection/fresh_pairs.py export   # npz copies of the cached source domains
  python experiments/selection/fresh_pairs.py train    # `adapt` per pair and seed (resumes)
  python experiments/selection/fresh_pairs.py score    # every output validator on every checkpoint
  python experiments/selection/fresh_pairs.py report

Runs go to runs/fresh/<pair>/ (an `adapt` output folder per pair, seeds side by
side); each run's scores are copied to experiments/results/selection/fresh_scores/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

EXPORTS = Path("runs/fresh_data")
RUNS = Path("runs/fresh")
RESULTS = Path(__file__).resolve().parents[1] / "results" / "selection"
ARCHIVE = RESULTS / "fresh_scores"
# (source domain exported as npz, target domain), in the order they run; each round fixed before its runs.
ROUND_1 = (("mnist-m", "mnist"), ("mnist-max-bg", "mnist-m"), ("mnist-m", "mnist-dilated"))
ROUND_2 = (
  ("mnist-dilated", "mnist"),
  ("mnist-dilated", "mnist-m"),
  ("mnist-dilated", "mnist-max-bg"),
  ("mnist-m", "mnist-max-bg"),
  ("mnist-max-bg", "mnist"),
  ("mnist-max-bg", "mnist-dilated"),
)
PAIRS = ROUND_1 + ROUND_2
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
  from dann_jax.runner.candidates import default_candidates
  from dann_jax.runner.choice import score_checkpoints
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


MARGIN = 0.05  # the class-share check's margin, fixed in the plan


def report(args) -> None:
  """Per pair: each validator's weighted Spearman and choice (as the benchmark reports them), and `adapt`'s
  choice under the default validator with and without the class-share check. Over these pairs and the
  benchmark's together: leave-one-pair-out (`lopo_all_pairs`: each pair's choice, its weighted Spearman, the
  mean over all pairs and over the benchmark's alone) and each validator's mean over all pairs
  (`mean_over_all_pairs`, the default's rule in fresh_pairs_plan_2.md)."""
  from dann_jax.io import write_text_atomic
  from dann_jax.names import DEFAULT_CRITERION
  from dann_jax.runner.candidates import default_candidates
  from dann_jax.runner.choice import adapt_choice

  sys.path.insert(0, str(Path(__file__).resolve().parent))
  from validator_bench import MEASURES, correlations, summarize

  rows, names = [], []
  for src, tgt in PAIRS:
    for seed in args.seeds:
      for cand in default_candidates():
        f = ARCHIVE / folder(src, tgt).name / f"{cand.name}_s{seed}.json"
        if f.exists():
          for step, r in json.loads(f.read_text()).items():
            rows.append({"pair": pair_name(src, tgt), "seed": seed, "candidate": cand.name, "step": int(step), **r})
    names.append(pair_name(src, tgt))
  if not rows:
    raise SystemExit("nothing scored yet: run `train` and `score` first")
  out = summarize(rows, names, args.seeds)
  for name, entry in out["pairs"].items():
    checked = []
    for seed in entry["seeds"]:
      scored = {}
      for r in rows:
        if r["pair"] == name and r["seed"] == seed:
          scored.setdefault(r["candidate"], {})[str(r["step"])] = r
      c, _ = adapt_choice(scored, DEFAULT_CRITERION, default_candidates(), share_margin=MARGIN)
      checked.append({"accuracy": c.target_accuracy, "chosen": f"{c.candidate}@{c.step}"})
    entry["adapt_checked"] = checked
  out["default"], out["margin"] = DEFAULT_CRITERION, MARGIN
  # Leave-one-pair-out over the benchmark's pairs and these together (each pair's choice reads only the others').
  from dann_jax.validation.selection import leave_one_out_choice

  bench = json.loads((RESULTS / "validators.json").read_text())["pairs"]
  pairs = [*bench.items(), *out["pairs"].items()]
  per_measure = {suffix: correlations(pairs, key) for key, suffix in MEASURES}  # suffix -> pair -> validator -> value
  for suffix, corr in per_measure.items():
    if not all(corr.values()):  # a benchmark report from before the measure existed
      continue
    lopo = leave_one_out_choice(corr)
    chosen = {name: corr[name][lopo[name]] for name in corr}
    out["lopo_all_pairs" + suffix] = {
      "choice": lopo,
      "weighted_spearman": chosen,
      "mean": float(np.mean(list(chosen.values()))),
      # the benchmark's pairs only (the bar there is >= 0.5), each with the validator chosen on every other pair
      "benchmark_mean": float(np.mean([chosen[name] for name in bench])),
    }
  # fresh_pairs_plan_2.md's rule for the library's default: the best mean weighted Spearman over every pair
  corr = per_measure[""]
  pooled = {c: float(np.mean([corr[name][c] for name in corr])) for c in next(iter(corr.values()))}
  out["mean_over_all_pairs"] = dict(sorted(pooled.items(), key=lambda kv: -kv[1]))
  write_text_atomic(RESULTS / "fresh_pairs.json", json.dumps(out, indent=1))
  write_text_atomic(RESULTS / "fresh_pairs.md", markdown(out))
  print((RESULTS / "fresh_pairs.md").read_text())


def markdown(out: dict) -> str:
  default = out["default"]
  lines = [
    "# `adapt` on pairs the validator benchmark never measured",
    "",
    "Plans, each fixed before its runs: [fresh_pairs_plan.md](fresh_pairs_plan.md) (first round), "
    "[fresh_pairs_plan_2.md](fresh_pairs_plan_2.md) (second round). Command: "
    "`python experiments/selection/fresh_pairs.py report` (after `export`, `train` and `score`). Target accuracy "
    "is read only here, for the report.",
    "",
    f"## `adapt` ({default}), per seed",
    "",
    "| pair | seed | source only (final) | adapt | chosen | adapt + class-share check | best checkpoint |",
    "|---|---|---|---|---|---|---|",
  ]
  for name, e in out["pairs"].items():
    v = e["validators"][default]
    for i, seed in enumerate(e["seeds"]):
      ck = e["adapt_checked"][i]
      lines.append(
        f"| {name} | {seed} | {e['source_only'][i]:.4f} | {v['selected'][i]:.4f} | {v['chosen'][i]} | "
        f"{ck['accuracy']:.4f} ({ck['chosen']}) | {e['best_checkpoint'][i]:.4f} |"
      )
  names = list(out["pairs"])
  criteria = list(next(iter(out["pairs"].values()))["validators"])
  lines += [
    "",
    "## Weighted Spearman per validator on these pairs (mean over the seeds measured)",
    "",
    "| validator | " + " | ".join(names) + " | mean |",
    "|---|" + "---|" * (len(names) + 1),
  ]
  for c in sorted(
    criteria, key=lambda c: -np.mean([out["pairs"][n]["validators"][c]["weighted_spearman"] for n in names])
  ):
    w = [out["pairs"][n]["validators"][c]["weighted_spearman"] for n in names]
    lines.append(f"| {c} | " + " | ".join(f"{x:+.2f}" for x in w) + f" | {np.mean(w):+.2f} |")
  lo = out["lopo_all_pairs"]
  lines += [
    "",
    "## Leave-one-pair-out over the benchmark's five pairs and these",
    "",
    "Each pair gets the validator with the best mean weighted Spearman over the other pairs (the benchmark's "
    f"seeds 0-2, these pairs' seeds as above). Mean over all pairs: {lo['mean']:+.3f}; over the benchmark's "
    f"{len(out['lopo_all_pairs']['choice']) - len(out['pairs'])} pairs: {lo['benchmark_mean']:+.3f}.",
    "",
    "| pair | validator chosen without it | its weighted Spearman there |",
    "|---|---|---|",
    *(f"| {name} | {lo['choice'][name]} | {w:+.2f} |" for name, w in lo["weighted_spearman"].items()),
    "",
    *(
      [
        "Measured over the checkpoints `adapt` compares (the learning rate chosen on held-out source images), the "
        f"same leave-one-pair-out gives {out['lopo_all_pairs_adapt_set']['mean']:+.3f} over all pairs and "
        f"{out['lopo_all_pairs_adapt_set']['benchmark_mean']:+.3f} over the benchmark's.",
        "",
      ]
      if "lopo_all_pairs_adapt_set" in out
      else []
    ),
    "Mean weighted Spearman over every pair above (the default's rule in fresh_pairs_plan_2.md): "
    + ", ".join(f"{c} {w:+.3f}" for c, w in out["mean_over_all_pairs"].items())
    + ".",
  ]
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("command", choices=("export", "train", "score", "report"))
  parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
  args = parser.parse_args(argv)
  {"export": export, "train": train, "score": score, "report": report}[args.command](args)
  return 0


if __name__ == "__main__":
  sys.exit(main())
