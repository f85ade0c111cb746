"""The Table 1 harness: trains (or reuses, or resumes) each run of a pair, keeps its records, writes the table.

Runs go to `<runs>/<pair>/<method>_s<seed>/`: a finished run is reused, an unfinished one continues from its last
checkpoint, so an interrupted table resumes where it stopped. Each finished run gives its record once
(`dann_jax.tables.records`, measured by `dann_jax.tables.measurements`); the rows and the files they are written to are
`dann_jax.tables.render`'s. `table_only=True` trains nothing and tabulates the finished runs and records.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from dann_jax.data.pairs import PAIRS
from dann_jax.io import write_text_atomic
from dann_jax.tables.measurements import feature_analysis, run_record
from dann_jax.tables.records import (
  TRAINED,
  TableArgs,
  diverged_record,
  progress_of,
  read_json,
  records_folder,
  run_folder,
  write_json,
)
from dann_jax.tables.render import LABELS, pair_row, summary_json, to_markdown


def _records_of_pair(spec, args: TableArgs, data_of) -> tuple[dict, dict, dict]:
  """Per method, the records of its finished seeds (training the asked-for
  methods first); the seeds not finished yet are described in `status`.

  A finished run folder gives its record once (kept under `records_folder`); a
  record without its run folder (a run done by an earlier invocation or on another
  machine) counts as finished. Each seed is its own run: on a CPU, one
  program over vmapped seeds ran about 2.7x slower than separate runs.

  Returns:
    `(records, status, results)`: `results` holds the runs loaded by this
    call (for the feature analysis), by method and seed.
  """
  from dann_jax.runner.folder import DIVERGED, read_metrics
  from dann_jax.runner.runs import load_run, train_or_reuse
  from dann_jax.runner.summary import collapsed_at_steps
  from dann_jax.training.loop import Diverged

  records, status, results = {}, {}, {}
  folder_of_records = records_folder(args, spec.name)
  for method in TRAINED:
    done, states = [], []
    for seed in args.seeds:
      folder = run_folder(args, spec.name, method, seed)
      record_path = folder_of_records / f"{method}_s{seed}.json"
      record = read_json(record_path)
      result = None
      diverged = read_json(folder / DIVERGED)
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
        write_json(record_path, record)
      if result is not None:
        summary = result.summary
        if "collapsed_at_step" not in summary:  # a summary written before the key
          rows = read_metrics(folder / "metrics.jsonl")
          summary["collapsed_at_step"] = collapsed_at_steps(rows, method, result.data, len(summary["seeds"]))
        record = run_record(result, method, seed)
        write_json(record_path, record)
        results.setdefault(method, {})[seed] = result
      if record is not None:
        done.append(record)
      else:
        states.append(f"seed {seed}: {progress_of(folder)}")
    if done:
      records[method] = done
    if states:
      status[method] = "; ".join(states)
  return records, status, results


def run_pair(spec, args: TableArgs) -> dict:
  """All methods on one pair; a dict for the results table."""
  from dann_jax.data.pair_data import load_pair_data

  t0 = time.perf_counter()
  if not any(records_folder(args, spec.name).glob("*_s*.json")):
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
  analysis, why_not = feature_analysis(spec, args, records, results, data_of)
  row = pair_row(spec, records, status, analysis, why_not)
  row["wall_seconds"] = round(time.perf_counter() - t0, 1)
  return row


def reproduce_table1(args: TableArgs, command: str = "") -> dict:
  """Trains (or reuses) every run of the table and writes it after each pair.

  Returns:
    The table: preset, seeds, steps, machine, one row per pair.
  """
  from dann_jax.runner.presets import make_config
  from dann_jax.runner.summary import machine_description

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
    if args.json:
      print(json.dumps({k: row.get(k) for k in ("pair", "not_run", "status", "network_head")}), flush=True)
    else:
      print(_row_words(row), flush=True)
    table["rows"].append(row)
    stem = results / f"table1_{args.preset}"
    write_text_atomic(stem.with_suffix(".json"), json.dumps(summary_json(table), indent=2))
    write_text_atomic(stem.with_suffix(".md"), to_markdown(table))
  if not args.json:
    print(f"\n{to_markdown(table)}\nwrote {stem.with_suffix('.md')} and {stem.with_suffix('.json')}")
  return table


def _row_words(row: dict) -> str:
  """One pair's finished means in words, or why it has none."""
  if row.get("not_run"):
    return f"{row['pair']}: {row['not_run']}"
  done = [f"{LABELS[m]} {s['mean']:.4f}" for m, s in row.get("network_head", {}).items()]
  return f"{row['pair']}: " + (", ".join(done) if done else "no finished run yet")
