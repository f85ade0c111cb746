"""Table 1's rows and how they read: per-run records aggregated per pair, the markdown table, its JSON summary.

A row holds, per pair, the mean ± std over the finished seeds of each method (network head and linear-SVM head), the
fraction of the source-only -> train-on-target gap that SA and DANN cover, the seeds that collapsed or diverged, the
feature analysis, and the training time; `to_markdown` and `summary_json` write the rows of every pair as
`table1_<preset>.{md,json}`.
"""

from __future__ import annotations

import numpy as np

from dann_jax.data.pairs import METHOD_COLUMNS
from dann_jax.tables.records import SA_RUN, TRAINED

LABELS = {"source_only": "source only", "sa": "SA (Fernando et al.)", "dann": "DANN", "target_only": "train on target"}


def pair_row(spec, records: dict, status: dict, analysis: dict | None, why_not: str) -> dict:
  """The row of one pair for the results table.

  Args:
    spec: the pair (`dann_jax.data.pairs.PairSpec`).
    records: per trained method, the records of its finished seeds.
    status: per trained method, how far its unfinished seeds got.
    analysis: the kept feature analysis (`dann_jax.tables.measurements.feature_analysis`), or None.
    why_not: why there is no analysis, or "".
  """
  from dann_jax.runner.log import accuracy_stats

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
  if analysis is not None:
    row["proxy_a_distance"] = analysis["proxy_a_distance"]
    row["tsne"] = analysis["tsne"]
    row["analysis_seed"] = analysis["seed"]
  elif why_not:
    row["analysis_missing"] = why_not
  row["train_seconds"] = {m: float(np.mean([_whole_run_seconds(r) for r in rs])) for m, rs in scored.items()}
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
      "no target label (`dann_jax.training.health`). Its accuracy counts in the mean as trained; the proxy A-distance "
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


def summary_json(table: dict) -> dict:
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
