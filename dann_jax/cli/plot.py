"""`dann-jax plot tsne RUN_DIR...`: t-SNE of features, source blue and target red."""

from __future__ import annotations

import json
import os
import time


def register(subparsers) -> None:
  p = subparsers.add_parser("plot", help="figures from finished runs")
  sub = p.add_subparsers(dest="figure", required=True)
  t = sub.add_parser(
    "tsne",
    help="t-SNE of source and target features of runs side by side (like the paper's Figure 4), with proxy A-distances",
  )
  t.add_argument("runs", nargs="+", help="run folders written by `dann-jax train` on the same pair")
  t.add_argument("--out", required=True, help="PNG to write")
  t.add_argument("-n", type=int, default=500, help="test images per domain (default 500)")
  t.add_argument(
    "--layer",
    choices=("features", "hidden"),
    default="features",
    help="feature extractor output (default) or the label predictor's last hidden layer",
  )
  t.add_argument("--data-dir", default=None)
  t.add_argument("--json", action="store_true", help="end with the figure and distances as one JSON line")
  t.set_defaults(func=run_tsne)


def run_tsne(args) -> int:
  from dann_jax.plots import tsne_panels
  from dann_jax.runner.runs import load_run
  from dann_jax.validation.analysis import compare_features

  pairs = {json.loads(open(f"{d}/run.json").read())["pair"] for d in args.runs if os.path.exists(f"{d}/run.json")}
  if len(pairs) > 1:
    raise ValueError(f"the runs are on different pairs {sorted(pairs)}; compare runs of one pair")
  runs, data = [], None
  for run_dir in args.runs:
    result = load_run(run_dir, data=data, data_dir=args.data_dir)
    data = result.data if data is None else data
    name = result.summary.get("method") or run_dir
    runs.append((name, result))
  started = time.perf_counter()

  def progress(line):
    print(f"[{time.perf_counter() - started:5.1f} s] {line}", flush=True)

  comparison = compare_features(runs, n=args.n, layer=args.layer, progress=progress)
  tsne_panels(comparison.panels, args.out, f"{args.layer} (t-SNE)")
  if args.json:
    print(json.dumps({"figure": args.out, "proxy_a_distance": comparison.proxy_a_distance}))
  else:
    distances = ", ".join(f"{name} {d:.2f}" for name, d in comparison.proxy_a_distance.items())
    print(f"wrote {args.out}; proxy A-distance (source vs target features): {distances}")
  return 0
