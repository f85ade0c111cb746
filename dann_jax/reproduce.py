"""Table 1 of Ganin & Lempitsky (arXiv 1409.7495): every digit pair, all four methods.

For each pair: source-only, DANN and train-on-target networks (one run per
seed), subspace alignment on the
source-only network's last hidden layer, linear-SVM heads retrained on that
layer for every method (as the paper did), the fraction of the
source-only -> train-on-target gap that SA and DANN cover, proxy A-distances
and a t-SNE of source-only vs DANN features (the paper's Figure 4).

Runs go to `<runs>/<pair>/<method>_s<seed>/`: a finished run is reused, an unfinished
one continues from its last checkpoint, so an interrupted table resumes where
it stopped. What the table needs of each finished run (accuracies, SVM head,
SA) is kept as a small JSON record under `<results>/table1/records/`, and the
t-SNE figures beside them, so the table can be rebuilt, and extended with runs
done elsewhere (e.g. on a GPU machine), without the run folders.
`table_only=True` trains nothing and writes the table from the finished runs
and records; the other cells say how far their runs got. A pair
whose data is missing on this machine is reported as "not run: <reason>".

Command: `dann-jax reproduce table1 --preset paper --seeds 3` (see
`dann-jax reproduce table1 --help`).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from dann_jax.io import write_text_atomic
from dann_jax.pairs import METHOD_COLUMNS, PAIRS

TRAINED = ("source_only", "dann", "target_only")
SA_RUN = "source_only"  # the trained column whose features subspace alignment adapts
LABELS = {"source_only": "source only", "sa": "SA (Fernando et al.)", "dann": "DANN", "target_only": "train on target"}
SVM_TRAIN = 10_000  # labelled images the SVM heads are fitted on
SA_SOURCE = 5_000  # source images for subspace alignment
# Figures like the paper's Fig. 4: MNIST-M on G_f's output, Syn -> SVHN on the
# label predictor's last hidden layer.
TSNE_LAYERS = {"mnist->mnist-m": "features", "syn-digits->svhn": "hidden"}


@dataclasses.dataclass
class TableArgs:
  """What to reproduce.

  Attributes:
    preset: "quick" or "paper".
    seeds: the seeds of every trained method.
    pairs: pair names (`dann_jax.pairs.PAIRS` keys).
    methods: the trained methods to run, in order (SA follows source-only).
    steps: overrides the preset's step count.
    runs: folder of the runs (default `runs/table1_<preset>`).
    results: folder for `table1_<preset>.{json,md}`; the figures and the
      per-run records go to its `table1/` subfolder.
    table_only: train nothing; tabulate the finished runs.
    progress: show progress bars.
  """

  preset: str = "quick"
  seeds: Sequence[int] = (0,)
  pairs: Sequence[str] = tuple(PAIRS)
  methods: Sequence[str] = TRAINED
  steps: int | None = None
  runs: str | None = None
  results: str = "experiments/results"
  table_only: bool = False
  progress: bool = True

  def __post_init__(self):
    if not self.seeds:
      raise ValueError("seeds is empty; give at least one seed")
    unknown = [p for p in self.pairs if p not in PAIRS]
    if unknown:
      raise ValueError(f"unknown pairs {unknown}; known: {', '.join(PAIRS)}")
    bad = [m for m in self.methods if m not in TRAINED]
    if bad:
      raise ValueError(f"unknown methods {bad}; choose from {TRAINED}")
    self.runs = self.runs or f"runs/table1_{self.preset}"


def _subsample(n: int, k: int, seed: int) -> np.ndarray:
  return np.sort(np.random.default_rng(seed).permutation(n)[:k])


def _folder(args: TableArgs, pair: str, method: str, seed: int) -> Path:
  return Path(args.runs) / pair.replace("->", "_to_") / f"{method}_s{seed}"


def _records(args: TableArgs, pair: str) -> Path:
  """Where the pair's per-run records and feature analysis are kept."""
  plan_steps = "" if args.steps is None else f"_{args.steps}steps"
  return Path(args.results) / "table1" / "records" / f"{args.preset}{plan_steps}" / pair.replace("->", "_to_")


def _progress_of(folder: Path) -> str:
  """How far an unfinished run got, in words."""
  metrics = folder / "metrics.jsonl"
  if not metrics.exists():
    return "not started"
  lines = metrics.read_text().splitlines()
  step = json.loads(lines[-1])["step"] if lines else 0
  steps = json.loads((folder / "run.json").read_text())["steps"]
  return f"running: step {step:,} of {steps:,}"


def run_record(result, method: str, seed: int) -> dict:
  """What the table needs of one finished run, computed once from its state.

  The network head's target accuracy (from the run's summary), a linear-SVM
  head retrained on the label predictor's last hidden layer (on target train
  images for train-on-target, else source train images), the step the run
  collapsed at if it did (`dann_jax.health`), and for source-only subspace
  alignment on that layer. Kept as JSON beside the table, so the
  table can be rebuilt on a machine that no longer has the run folders.
  """
  from dann_jax.baselines import linear_svm_accuracy, subspace_alignment
  from dann_jax.evaluation import features
  from dann_jax.loop import seed_states
  from dann_jax.methods import get

  data = result.data
  tgt = data.target_test
  labelled = data.target_train if get(method).labelled == "target" else data.source_train
  idx = _subsample(len(labelled), SVM_TRAIN, 0)
  state = seed_states(result.state)[0]
  train_x = features(state, labelled.images[idx], result.mean, "hidden")
  test_x = features(state, tgt.images, result.mean, "hidden")
  summary = result.summary
  record = {
    "pair": summary["pair"],
    "method": method,
    "seed": seed,
    "preset": summary["preset"],
    "steps": summary["steps"],
    "target_accuracy": summary["target_accuracy"]["mean"],
    "source_accuracy": summary["source_accuracy"]["mean"],
    "svm_accuracy": linear_svm_accuracy(train_x, labelled.labels[idx], test_x, tgt.labels),
    "train_seconds": summary.get("train_seconds"),
    "steps_run": summary.get("steps_run"),
    "machine": summary.get("machine"),
    "collapsed_at_step": summary["collapsed_at_step"][0],
  }
  if method == SA_RUN:
    keep = np.isin(idx, _subsample(len(data.source_train), SA_SOURCE, 1))
    sa = subspace_alignment(train_x[keep], labelled.labels[idx][keep], test_x, tgt.labels)
    record["sa"] = {"accuracy": sa.accuracy, "d": sa.d}
  return record


def diverged_record(pair: str, args: TableArgs, method: str, seed: int, step: int) -> dict:
  """The record of a run whose loss became non-finite at `step`: it has no
  accuracy, and the table names it instead of counting it."""
  from dann_jax.presets import make_config
  from dann_jax.runs import machine_description

  record = {
    "pair": pair,
    "method": method,
    "seed": seed,
    "preset": args.preset,
    "steps": make_config(PAIRS[pair], method, args.preset, steps=args.steps).train.total_steps,
    "target_accuracy": None,
    "source_accuracy": None,
    "svm_accuracy": None,
    "train_seconds": None,
    "machine": machine_description(),
    "collapsed_at_step": None,
    "diverged_at_step": step,
  }
  if method == SA_RUN:
    record["sa"] = None
  return record


def _read_json(path: Path) -> dict | None:
  return json.loads(path.read_text()) if path.exists() else None


def _records_of_pair(spec, args: TableArgs, data_of) -> tuple[dict, dict, dict]:
  """Per method, the records of its finished seeds (training the asked-for
  methods first); the seeds not finished yet are described in `status`.

  A finished run folder gives its record once (kept under `_records`); a
  record without its run folder (a run done by an earlier invocation or on another
  machine) counts as finished. Each seed is its own run: on a CPU, one
  program over vmapped seeds ran about 2.7x slower than separate runs.

  Returns:
    `(records, status, results)`: `results` holds the runs loaded by this
    call (for the feature analysis), by method and seed.
  """
  from dann_jax.loop import Diverged
  from dann_jax.runs import DIVERGED, collapsed_at_steps, load_run, read_metrics, train_or_reuse

  records, status, results = {}, {}, {}
  folder_of_records = _records(args, spec.name)
  for method in TRAINED:
    done, states = [], []
    for seed in args.seeds:
      folder = _folder(args, spec.name, method, seed)
      record_path = folder_of_records / f"{method}_s{seed}.json"
      record = _read_json(record_path)
      result = None
      diverged = _read_json(folder / DIVERGED)
      if record is None and diverged is None and not args.table_only and method in args.methods:
        try:
          result = train_or_reuse(
            spec,
            method,
            folder,
            preset=args.preset,
            steps=args.steps,
            seeds=[seed],
            data=data_of(),
            progress=args.progress,
          )
        except Diverged as e:  # deterministic: a rerun would diverge at the same step
          diverged = {"step": e.step}
      elif record is None and diverged is None and (folder / "summary.json").exists():
        result = load_run(folder, data=data_of())
      if record is None and diverged is not None:
        record = diverged_record(spec.name, args, method, seed, diverged["step"])
        write_text_atomic(record_path, json.dumps(record, indent=2))
      if result is not None:
        summary = result.summary
        if "collapsed_at_step" not in summary:  # a summary written before the key
          rows = read_metrics(folder / "metrics.jsonl")
          summary["collapsed_at_step"] = collapsed_at_steps(rows, method, result.data, len(summary["seeds"]))
        record = run_record(result, method, seed)
        write_text_atomic(record_path, json.dumps(record, indent=2))
        results.setdefault(method, {})[seed] = result
      if record is not None:
        done.append(record)
      else:
        states.append(f"seed {seed}: {_progress_of(folder)}")
    if done:
      records[method] = done
    if states:
      status[method] = "; ".join(states)
  return records, status, results


def _failed(record: dict) -> bool:
  """The run collapsed or diverged."""
  return record.get("collapsed_at_step") is not None or record.get("diverged_at_step") is not None


def _clean_seeds(args: TableArgs, records: dict) -> list[int]:
  """The seeds whose source-only and DANN runs both finished without
  collapsing or diverging: such a run's features are not those of a trained
  model."""
  clean = []
  for seed in args.seeds:
    pair = [next((r for r in records.get(m, []) if r["seed"] == seed), None) for m in ("source_only", "dann")]
    if all(r is not None and not _failed(r) for r in pair):
      clean.append(seed)
  return clean


def _feature_analysis(spec, args: TableArgs, records: dict, results: dict, data_of) -> tuple[dict | None, str]:
  """Proxy A-distances and the t-SNE figure of source-only vs DANN on one of
  `_clean_seeds` (the first whose runs are here), computed once and kept
  beside the records.

  Returns:
    `(analysis, why_not)`: the analysis, or None and why there is none where
    a collapse or missing run folders explain it (else "").
  """
  from dann_jax.analysis import compare_features
  from dann_jax.plots import tsne_panels
  from dann_jax.runs import load_run

  clean = _clean_seeds(args, records)
  if not clean:
    failed = any(_failed(r) for m in ("source_only", "dann") for r in records.get(m, []))
    why = "waiting for a seed whose source-only and DANN runs finish without collapsing or diverging"
    return None, why if failed else ""
  path = _records(args, spec.name) / "analysis.json"
  analysis = _read_json(path)
  if analysis is not None and analysis.get("seed") in clean:
    return analysis, ""
  for seed in clean:
    runs = {}
    for method in ("source_only", "dann"):
      folder = _folder(args, spec.name, method, seed)
      if seed in results.get(method, {}):
        runs[method] = results[method][seed]
      elif (folder / "summary.json").exists():
        runs[method] = load_run(folder, data=data_of())
    if len(runs) == 2:
      break
  else:
    return None, f"the run folders of seeds {clean} are not on this machine"
  layer = TSNE_LAYERS.get(spec.name, "features")
  figure = Path(args.results) / "table1" / f"tsne_{spec.name.replace('->', '_to_')}_{args.preset}.png"
  comparison = compare_features([("source only", runs["source_only"]), ("DANN", runs["dann"])], layer=layer)
  tsne_panels(comparison.panels, figure, f"{spec.name}, {layer} (t-SNE)")
  analysis = {
    "seed": seed,
    "layer": layer,
    "proxy_a_distance": comparison.proxy_a_distance,
    "tsne": str(figure.relative_to(args.results)),
  }
  write_text_atomic(path, json.dumps(analysis, indent=2))
  return analysis, ""


def run_pair(spec, args: TableArgs) -> dict:
  """All methods on one pair; a dict for the results table."""
  from dann_jax.pair_data import load_pair_data
  from dann_jax.runs import accuracy_stats

  t0 = time.perf_counter()
  if not any(_records(args, spec.name).glob("*_s*.json")):
    # Domains read from imported official files: say at once which file a
    # pair without any result needs (the caller reports it as "not run").
    from dann_jax.data.domains import IMPORTED, load_domain

    for side in (spec.source, spec.target):
      if side in IMPORTED:
        load_domain(side, "test")
  loaded = []

  def data_of():
    if not loaded:
      loaded.append(load_pair_data(spec))
    return loaded[0]

  records, status, results = _records_of_pair(spec, args, data_of)
  # a diverged run has no accuracy: it is named in its cell, not averaged
  scored = {m: [r for r in rs if r["target_accuracy"] is not None] for m, rs in records.items()}
  scored = {m: rs for m, rs in scored.items() if rs}
  row = {
    "pair": spec.name,
    "paper_v1": spec.paper,
    "paper_icml": spec.paper_icml,
    "note": spec.note,
    "status": status,
    "network_head": {m: accuracy_stats([r["target_accuracy"] for r in rs]) for m, rs in scored.items()},
    "svm_head": {m: accuracy_stats([r["svm_accuracy"] for r in rs]) for m, rs in scored.items()},
  }
  if "source_only" in scored:
    row["network_head"]["sa"] = accuracy_stats([r["sa"]["accuracy"] for r in scored["source_only"]])
    row["sa_dimension"] = [r["sa"]["d"] for r in scored["source_only"]]
  head = row["network_head"]
  row["gap_covered"] = {}
  if "source_only" in head and "target_only" in head:
    so, to = head["source_only"]["mean"], head["target_only"]["mean"]
    for m in ("sa", "dann"):
      if m in head and to != so:
        row["gap_covered"][m] = (head[m]["mean"] - so) / (to - so)
  for event in ("collapsed", "diverged"):
    marked = {
      m: [{"seed": r["seed"], "step": r[f"{event}_at_step"]} for r in rs if r.get(f"{event}_at_step") is not None]
      for m, rs in records.items()
    }
    row[event] = {m: seeds for m, seeds in marked.items() if seeds}
  analysis, why_not = _feature_analysis(spec, args, records, results, data_of)
  if analysis is not None:
    row["proxy_a_distance"] = analysis["proxy_a_distance"]
    row["tsne"] = analysis["tsne"]
    row["analysis_seed"] = analysis["seed"]
  elif why_not:
    row["analysis_missing"] = why_not
  row["train_seconds"] = {m: float(np.mean([_whole_run_seconds(r) for r in rs])) for m, rs in scored.items()}
  row["wall_seconds"] = round(time.perf_counter() - t0, 1)
  return row


def _whole_run_seconds(record: dict) -> float:
  """A run's training time, scaled up from the steps its last command ran
  when it was resumed (0 if unknown)."""
  seconds, ran = record.get("train_seconds") or 0, record.get("steps_run")
  return seconds * record["steps"] / ran if ran else seconds


def _cell(stats, paper) -> str:
  s = f"{stats['mean']:.4f}"
  if len(stats["per_seed"]) > 1:
    s += f" ± {stats['std']:.4f} (" + "/".join(f"{v:.3f}" for v in stats["per_seed"]) + ")"
  if paper is not None:
    s += f" [{paper:.4f}]"
  return s


def _method_cell(row: dict, method: str) -> str:
  """The finished seeds' accuracy [paper], then the seeds still to come."""
  if "not_run" in row:
    return "not run (below)"
  parts = []
  if method in row["network_head"]:
    parts.append(_cell(row["network_head"][method], (row["paper_v1"] or {}).get(method)))
  trained = SA_RUN if method == "sa" else method
  for c in row.get("collapsed", {}).get(trained, []):
    parts.append(f"seed {c['seed']} collapsed at step {c['step']:,}")
  for d in row.get("diverged", {}).get(trained, []):
    parts.append(f"seed {d['seed']} diverged at step {d['step']:,} (not in the mean)")
  pending = row["status"].get(trained)
  if pending:
    parts.append(pending)
  return "; ".join(parts) or "-"


def to_markdown(table: dict) -> str:
  rows = list(table["rows"])
  header = "| method | " + " | ".join(r["pair"] for r in rows) + " |"
  rule = "|" + "---|" * (len(rows) + 1)
  lines = [
    f"# Table 1 reproduction, `{table['preset']}` preset",
    "",
    f"Command: `{table['command']}`  ",
    f"Machine: {table['machine']}  ",
    f"Seeds: {table['seeds']}; steps: {table['steps']:,}; {table['note']}",
    "",
    "Target-domain test accuracy on each pair's whole target test set: mean ± std (per seed) [paper, arXiv v1], "
    "over the seeds finished so far; seeds still running or not started are named after it, and the gap "
    "fractions use the finished seeds' means.",
    "",
    header,
    rule,
  ]

  def line(label, get):
    return f"| {label} | " + " | ".join(get(r) for r in rows) + " |"

  for m in METHOD_COLUMNS:
    lines.append(line(LABELS[m], lambda r, m=m: _method_cell(r, m)))
  for m in ("sa", "dann"):
    lines.append(
      line(
        f"gap covered, {LABELS[m]}",
        lambda r, m=m: f"{100 * r['gap_covered'][m]:.1f}%" if m in r.get("gap_covered", {}) else "-",
      )
    )
  if any(r.get("diverged") for r in rows):
    lines += [
      "",
      "A diverged seed's loss became non-finite at the step named; training stopped there, so it has no "
      "accuracy and is left out of the mean (training is deterministic: a rerun diverges at the same step).",
    ]
  if any(r.get("collapsed") for r in rows):
    lines += [
      "",
      "A collapsed seed's training label loss went back to chance (the entropy of the class frequencies) and "
      "stayed there to the end: its predictions are constant. This is read from the training metrics alone, "
      "no target label (`dann_jax.health`). Its accuracy counts in the mean as trained; the proxy A-distance "
      "and t-SNE use a seed whose source-only and DANN runs both finished without collapsing.",
    ]
  lines += [
    "",
    "Linear-SVM heads retrained on the last hidden layer (the paper reports these stay about the same):",
    "",
    header,
    rule,
  ]
  for m in TRAINED:
    lines.append(line(LABELS[m], lambda r, m=m: _cell(r["svm_head"][m], None) if m in r.get("svm_head", {}) else "-"))
  lines += [
    "",
    "Proxy A-distance between source and target test features (0 = indistinguishable, 2 = separable):",
    "",
    header,
    rule,
  ]
  for name in ("source only", "DANN"):
    lines.append(line(name, lambda r, n=name: f"{r['proxy_a_distance'][n]:.2f}" if "proxy_a_distance" in r else "-"))
  lines += [
    "",
    "SA picks its subspace dimension d in {2..60} by target test "
    "accuracy, i.e. with target labels, as the paper did; it is "
    "labelled so and is not used for any choice here.",
    "",
  ]
  for r in rows:
    if "not_run" in r:
      lines.append(f"- {r['pair']}: {r['not_run']}")
      continue
    trained = ", ".join(f"{m} {t / 60:.1f} min per seed" for m, t in r["train_seconds"].items() if t)
    trained += " (a resumed run's time scaled to all its steps)" if trained else ""
    extra = [f"training {trained}" if trained else "nothing finished yet"]
    if "sa_dimension" in r:
      extra.insert(0, f"SA d = {r['sa_dimension']}")
    if "tsne" in r:
      extra.append(f"t-SNE (seed {r['analysis_seed']}): [{r['tsne']}]({r['tsne']})")
    elif "analysis_missing" in r:
      extra.append(f"proxy A-distance and t-SNE: {r['analysis_missing']}")
    if r["note"]:
      extra.append(f"note: {r['note']}")
    lines.append(f"- {r['pair']}: " + "; ".join(extra))
  return "\n".join(lines) + "\n"


def _summary_json(table: dict) -> dict:
  """The table as `{"steps", "seeds", "pairs": {pair: {method: [acc...]}}}`."""
  pairs = {}
  for r in table["rows"]:
    cells = {m: s["per_seed"] for m, s in r.get("network_head", {}).items()}
    cells["status"] = r.get("status", {})
    for event in ("collapsed", "diverged"):
      if r.get(event):
        cells[event] = r[event]
    if "not_run" in r:
      cells["status"] = {"all": r["not_run"]}
    pairs[r["pair"]] = cells
  return {k: v for k, v in table.items() if k != "rows"} | {"pairs": pairs, "details": table["rows"]}


def reproduce_table1(args: TableArgs, command: str = "") -> dict:
  """Trains (or reuses) every run of the table and writes it after each pair.

  Returns:
    The table: preset, seeds, steps, machine, one row per pair.
  """
  from dann_jax.presets import make_config
  from dann_jax.runs import machine_description

  results = Path(args.results)
  # Checked before anything is written: a refused command leaves no folder behind.
  config = make_config(PAIRS[args.pairs[0]], "dann", args.preset, steps=args.steps)
  results.mkdir(parents=True, exist_ok=True)
  table = {
    "preset": args.preset,
    "seeds": list(args.seeds),
    "steps": config.train.total_steps,
    "command": command,
    "machine": machine_description(),
    "note": config.note or "the paper's protocol",
    "rows": [],
  }
  for name in args.pairs:
    spec = PAIRS[name]
    try:
      row = run_pair(spec, args)
    except (FileNotFoundError, ValueError) as e:
      row = {"pair": name, "paper_v1": spec.paper, "not_run": f"not run: {e}".replace("\n", " ")}
    print(json.dumps({k: row.get(k) for k in ("pair", "not_run", "status", "network_head")}), flush=True)
    table["rows"].append(row)
    stem = results / f"table1_{args.preset}"
    write_text_atomic(stem.with_suffix(".json"), json.dumps(_summary_json(table), indent=2))
    write_text_atomic(stem.with_suffix(".md"), to_markdown(table))
  return table


def main(argv: Sequence[str] | None = None) -> int:
  """`python experiments/paper/table1.py ...` (the same options as the CLI)."""
  import argparse

  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_arguments(parser)
  ns = parser.parse_args(argv)
  reproduce_table1(args_from(ns), "dann-jax reproduce table1 " + shlex.join(sys.argv[1:] if argv is None else argv))
  return 0


def add_arguments(parser) -> None:
  """The harness's options, shared by the CLI and the script."""
  parser.add_argument("--preset", choices=("quick", "paper"), default="quick")
  parser.add_argument("--seeds", type=int, default=1, help="seeds per method, one run each")
  parser.add_argument("--seed", type=int, default=0, help="the first seed")
  parser.add_argument("--steps", type=int, default=None)
  parser.add_argument(
    "--pairs",
    nargs="+",
    help=f"default: all of {', '.join(PAIRS)}; with --table-only, those that have runs or records",
  )
  parser.add_argument(
    "--methods",
    nargs="+",
    default=list(TRAINED),
    choices=TRAINED,
    help="methods to train (default all; finished runs of the others are still tabulated)",
  )
  parser.add_argument("--runs", default=None, help="where the runs go (default runs/table1_<preset>)")
  parser.add_argument("--results", default="experiments/results", help="folder for the table and figures")
  parser.add_argument("--table-only", action="store_true", help="train nothing; tabulate the finished runs")
  parser.add_argument("--no-progress", action="store_true")


def args_from(ns) -> TableArgs:
  """`TableArgs` from parsed options (errors name the flags)."""
  if ns.seeds < 1:
    raise ValueError(f"--seeds {ns.seeds} must be >= 1")
  args = TableArgs(
    preset=ns.preset,
    seeds=list(range(ns.seed, ns.seed + ns.seeds)),
    pairs=ns.pairs or list(PAIRS),
    methods=ns.methods,
    steps=ns.steps,
    runs=ns.runs,
    results=ns.results,
    table_only=ns.table_only,
    progress=not ns.no_progress,
  )
  if ns.pairs is None and ns.table_only:
    # A table of what exists, not a row of "not started" per pair never run.
    begun = [pair for pair in args.pairs if _has_runs(args, pair)]
    args = dataclasses.replace(args, pairs=begun or args.pairs)
  return args


def _has_runs(args: TableArgs, pair: str) -> bool:
  """Whether the pair has a run folder or a kept record to tabulate."""
  return any(
    folder.is_dir() and any(folder.iterdir()) for folder in (_records(args, pair), _folder(args, pair, "", 0).parent)
  )
