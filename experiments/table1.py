"""Table 1 of Ganin & Lempitsky (arXiv 1409.7495): every digit pair, all four methods.

For each pair: source-only, DANN and train-on-target networks (each over
`--seeds` seeds trained together in one compiled program), subspace alignment
on the source-only network's last hidden layer, linear-SVM heads retrained on
that layer for every method (as the paper did), the fraction of the
source-only -> train-on-target gap covered, and proxy A-distances. A pair
whose data is missing on this machine is reported as "not run: <reason>".

Run (from a source checkout):
  dann-jax reproduce table1 --preset quick --seeds 1
  python experiments/table1.py --preset paper --seeds 3 --pairs mnist->mnist-m

Writes experiments/results/table1_<preset>.json and .md (and t-SNE figures);
the runs themselves go under runs/table1_<preset>/ and are reused when the
command is run again, so an interrupted table resumes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from dann_jax.baselines import linear_svm_accuracy, subspace_alignment
from dann_jax.evaluation import features
from dann_jax.pairs import METHOD_COLUMNS, PAIRS
from dann_jax.analysis import compare_features
from dann_jax.plots import tsne_panels
from dann_jax.runs import (accuracy_stats, load_pair_data,
                           machine_description, train_or_reuse)
from dann_jax.train import seed_states

RESULTS = Path(__file__).resolve().parent / "results"
TRAINED = ("source_only", "dann", "target_only")
LABELS = {"source_only": "source only", "sa": "SA (Fernando et al.)",
          "dann": "DANN", "target_only": "train on target"}
SVM_TRAIN = 10_000   # labelled images the SVM heads are fitted on
SA_SOURCE = 5_000    # source images for subspace alignment
# Figures like the paper's Fig. 4: MNIST-M on G_f's output, Syn -> SVHN on the
# label predictor's last hidden layer.
TSNE_LAYERS = {"mnist->mnist-m": "features", "syn-digits->svhn": "hidden"}


def _subsample(n: int, k: int, seed: int) -> np.ndarray:
  return np.sort(np.random.default_rng(seed).permutation(n)[:k])


def _run(spec, method, args, data):
  out = Path(args.runs) / spec.name.replace("->", "_to_") / method
  return train_or_reuse(spec, method, out, preset=args.preset,
                        steps=args.steps, seeds=args.seed_list, data=data,
                        progress=not args.no_progress)


def run_pair(spec, args) -> dict:
  """All methods on one pair; a dict for the results table."""
  t0 = time.perf_counter()
  data = load_pair_data(spec)
  runs = {m: _run(spec, m, args, data) for m in TRAINED}
  row = {"pair": spec.name, "paper_v1": spec.paper,
         "paper_icml": spec.paper_icml, "note": spec.note,
         "network_head": {}, "svm_head": {}}
  for method, result in runs.items():
    row["network_head"][method] = result.summary["target_accuracy"]
  # Linear-SVM heads on the last hidden layer, and SA on the source-only one.
  tgt = data.target_test
  svm, sa, sa_d = {m: [] for m in TRAINED}, [], []
  for method, result in runs.items():
    labelled = data.target_train if method == "target_only" else \
        data.source_train
    idx = _subsample(len(labelled), SVM_TRAIN, 0)
    for state in seed_states(result.state):
      train_x = features(state, labelled.images[idx], result.mean, "hidden")
      test_x = features(state, tgt.images, result.mean, "hidden")
      svm[method].append(linear_svm_accuracy(
          train_x, labelled.labels[idx], test_x, tgt.labels))
      if method == "source_only":
        sidx = _subsample(len(data.source_train), SA_SOURCE, 1)
        sa_result = subspace_alignment(
            train_x[np.isin(idx, sidx)], labelled.labels[idx][np.isin(idx, sidx)],
            test_x, tgt.labels)
        sa.append(sa_result.accuracy)
        sa_d.append(sa_result.d)
  row["svm_head"] = {m: accuracy_stats(v) for m, v in svm.items()}
  row["network_head"]["sa"] = accuracy_stats(sa)
  row["sa_dimension"] = sa_d
  so = row["network_head"]["source_only"]["mean"]
  to = row["network_head"]["target_only"]["mean"]
  row["gap_covered"] = {
      m: (row["network_head"][m]["mean"] - so) / (to - so) if to != so
      else None for m in ("sa", "dann")}
  # Figures and domain distances for source-only vs DANN.
  layer = TSNE_LAYERS.get(spec.name, "features")
  figure = RESULTS / f"tsne_{spec.name.replace('->', '_to_')}_{args.preset}.png"
  comparison = compare_features(
      [("source only", runs["source_only"]), ("DANN", runs["dann"])],
      layer=layer)
  tsne_panels(comparison.panels, figure, f"{spec.name}, {layer} (t-SNE)")
  row["proxy_a_distance"] = comparison.proxy_a_distance
  row["tsne"] = figure.name
  if spec.name == "mnist->mnist-m":
    for method in ("source_only", "dann"):
      src = Path(args.runs) / "mnist_to_mnist-m" / method / "curves.png"
      if src.exists():
        shutil.copy(src, RESULTS / f"curves_mnist-m_{method}_{args.preset}.png")
  row["train_seconds"] = {m: r.summary.get("train_seconds")
                          for m, r in runs.items()}
  row["wall_seconds"] = round(time.perf_counter() - t0, 1)
  return row


def _cell(stats, paper) -> str:
  if stats is None:
    return "-"
  s = f"{stats['mean']:.4f}"
  if len(stats["per_seed"]) > 1:
    s += f" ± {stats['std']:.4f}"
  if paper is not None:
    s += f" ({paper:.4f})"
  return s


def to_markdown(table: dict) -> str:
  rows = table["pairs"]
  header = "| method | " + " | ".join(r["pair"] for r in rows) + " |"
  lines = [f"# Table 1 reproduction, `{table['preset']}` preset", "",
           f"Command: `{table['command']}`  ",
           f"Machine: {table['machine']}  ",
           f"Wall time of this invocation: {table['wall_seconds'] / 60:.1f} "
           "min (runs finished by an earlier one are reused; each pair's "
           "training times are listed below); seeds: "
           f"{table['seeds']}; {table['note']}", "",
           "Target-domain test accuracy, ours (paper, arXiv v1). Mean ± std "
           "over seeds where several.", "", header,
           "|" + "---|" * (len(rows) + 1)]

  def line(label, get):
    return f"| {label} | " + " | ".join(get(r) for r in rows) + " |"

  for m in METHOD_COLUMNS:
    lines.append(line(LABELS[m], lambda r, m=m: "not run (below)"
                      if "status" in r else _cell(r["network_head"].get(m),
                                 (r["paper_v1"] or {}).get(m))))
  for m in ("sa", "dann"):
    lines.append(line(f"gap covered, {LABELS[m]}", lambda r, m=m: "-"
                      if "status" in r or r["gap_covered"][m] is None
                      else f"{100 * r['gap_covered'][m]:.1f}%"))
  lines += ["", "Linear-SVM heads retrained on the last hidden layer (the "
            "paper reports these stay about the same):", "", header,
            "|" + "---|" * (len(rows) + 1)]
  for m in TRAINED:
    lines.append(line(LABELS[m], lambda r, m=m: "-" if "status" in r
                      else _cell(r["svm_head"][m], None)))
  lines += ["", "Proxy A-distance between source and target test features "
            "(0 = indistinguishable, 2 = separable):", "", header,
            "|" + "---|" * (len(rows) + 1)]
  for name in ("source only", "DANN"):
    lines.append(line(name, lambda r, n=name: "-" if "status" in r
                      else f"{r['proxy_a_distance'][n]:.2f}"))
  lines += ["", "SA picks its subspace dimension d in {2..60} by target test "
            "accuracy, i.e. with target labels, as the paper did.", ""]
  for r in rows:
    if "status" in r:
      lines.append(f"- {r['pair']}: {r['status']}")
    else:
      trained = ", ".join(
          f"{m} {t / 60:.1f} min" for m, t in r["train_seconds"].items()
          if t is not None)
      lines.append(f"- {r['pair']}: SA d = {r['sa_dimension']}; training "
                   f"{trained}; wall in this invocation "
                   f"{r['wall_seconds'] / 60:.1f} min; t-SNE: "
                   f"[{r['tsne']}]({r['tsne']})"
                   + (f"; note: {r['note']}" if r["note"] else ""))
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--preset", choices=("quick", "paper"), default="quick")
  parser.add_argument("--seeds", type=int, default=1)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--steps", type=int, default=None)
  parser.add_argument("--pairs", nargs="*", default=list(PAIRS),
                      help=f"default: all of {', '.join(PAIRS)}")
  parser.add_argument("--runs", default=None,
                      help="where the runs go (default runs/table1_<preset>)")
  parser.add_argument("--no-progress", action="store_true")
  args = parser.parse_args(argv)
  if args.seeds < 1:
    raise ValueError(f"--seeds {args.seeds} must be >= 1")
  unknown = [p for p in args.pairs if p not in PAIRS]
  if unknown:
    raise ValueError(f"unknown pairs {unknown}; known: {', '.join(PAIRS)}")
  args.seed_list = list(range(args.seed, args.seed + args.seeds))
  args.runs = args.runs or f"runs/table1_{args.preset}"
  RESULTS.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  table = {"preset": args.preset, "seeds": args.seed_list,
           "command": "dann-jax reproduce table1 " + " ".join(
               sys.argv[1:] if argv is None else argv),
           "machine": machine_description(), "pairs": []}
  from dann_jax.presets import make_plan
  table["note"] = make_plan(PAIRS[args.pairs[0]], "dann", args.preset,
                            steps=args.steps).note or "the paper's protocol"
  for name in args.pairs:
    spec = PAIRS[name]
    try:
      row = run_pair(spec, args)
    except (FileNotFoundError, ValueError) as e:
      row = {"pair": name, "status": f"not run: {e}".replace("\n", " "),
             "paper_v1": spec.paper}
    print(json.dumps({k: row.get(k) for k in ("pair", "status",
                                              "network_head")}), flush=True)
    table["pairs"].append(row)
    table["wall_seconds"] = round(time.perf_counter() - t0, 1)
    stem = RESULTS / f"table1_{args.preset}"
    stem.with_suffix(".json").write_text(json.dumps(table, indent=2))
    stem.with_suffix(".md").write_text(to_markdown(table))
  return 0


if __name__ == "__main__":
  sys.exit(main())
