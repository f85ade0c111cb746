"""The per-run records of the Table 1 harness: what a table asks for, where its runs and records are.

What the table needs of each finished run is a small JSON record under
`<results>/table1/records/<preset>[_<steps>steps]/<pair>/<method>_s<seed>.json`, so the table can be rebuilt, and
extended with runs done elsewhere, without the run folders. This file owns the table's options (`TableArgs`), the
paths of runs and records, reading and writing records, the record of a run that diverged, how far an unfinished run
got, and which seeds finished cleanly. The record of a finished run is measured from its state
(`dann_jax.tables.measurements.run_record`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

from dann_jax.data.pairs import PAIRS
from dann_jax.io import write_text_atomic

TRAINED = ("source_only", "dann", "target_only")
SA_RUN = "source_only"  # the trained column whose features subspace alignment adapts


def is_sa_run(method: str) -> bool:
  """Whether `method`'s runs are the ones subspace alignment adapts: trained on source labels, without adaptation."""
  from dann_jax.core.methods import get

  found = get(method)
  return not found.adversarial and found.labelled == "source"


@dataclasses.dataclass
class TableArgs:
  """What to reproduce.

  Attributes:
    preset: "quick" or "paper".
    seeds: the seeds of every trained method.
    pairs: pair names (`dann_jax.data.pairs.PAIRS` keys).
    methods: the trained methods to run, in order (SA follows source-only).
    steps: overrides the preset's step count.
    runs: folder of the runs (default `runs/table1_<preset>`).
    results: folder for `table1_<preset>.{json,md}`; the figures and the
      per-run records go to its `table1/` subfolder (default: `runs`, so
      that nothing tracked is written unless asked; this repository's
      tables are `experiments/results`).
    table_only: train nothing; tabulate the finished runs.
    progress: show progress bars.
  """

  preset: str = "quick"
  seeds: Sequence[int] = (0,)
  pairs: Sequence[str] = tuple(PAIRS)
  methods: Sequence[str] = TRAINED
  steps: int | None = None
  runs: str | None = None
  results: str | None = None
  table_only: bool = False
  progress: bool = True
  json: bool = False  # print one JSON line per pair instead of words

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
    self.results = self.results or self.runs


def run_folder(args: TableArgs, pair: str, method: str, seed: int) -> Path:
  """Where one run of the table trains."""
  return Path(args.runs) / pair.replace("->", "_to_") / f"{method}_s{seed}"


def records_folder(args: TableArgs, pair: str) -> Path:
  """Where the pair's per-run records and feature analysis are kept."""
  plan_steps = "" if args.steps is None else f"_{args.steps}steps"
  return Path(args.results) / "table1" / "records" / f"{args.preset}{plan_steps}" / pair.replace("->", "_to_")


def read_json(path: Path) -> dict | None:
  """A kept record (or analysis), or None if there is none."""
  return json.loads(path.read_text()) if path.exists() else None


def write_json(path: Path, record: dict) -> None:
  """Keeps a record (or analysis) as indented JSON, written atomically."""
  write_text_atomic(path, json.dumps(record, indent=2))


def progress_of(folder: Path) -> str:
  """How far an unfinished run got, in words."""
  metrics = folder / "metrics.jsonl"
  if not metrics.exists():
    return "not started"
  lines = metrics.read_text().splitlines()
  step = json.loads(lines[-1])["step"] if lines else 0
  steps = json.loads((folder / "run.json").read_text())["steps"]
  return f"running: step {step:,} of {steps:,}"


def diverged_record(pair: str, args: TableArgs, method: str, seed: int, step: int) -> dict:
  """The record of a run whose loss became non-finite at `step`: it has no
  accuracy, and the table names it instead of counting it."""
  from dann_jax.runner.presets import make_config
  from dann_jax.runner.summary import machine_description

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
  if is_sa_run(method):
    record["sa"] = None
  return record


def failed(record: dict) -> bool:
  """The run collapsed or diverged."""
  return record.get("collapsed_at_step") is not None or record.get("diverged_at_step") is not None


def clean_seeds(args: TableArgs, records: dict) -> list[int]:
  """The seeds whose source-only and DANN runs both finished without
  collapsing or diverging: such a run's features are not those of a trained
  model."""
  clean = []
  for seed in args.seeds:
    pair = [next((r for r in records.get(m, []) if r["seed"] == seed), None) for m in ("source_only", "dann")]
    if all(r is not None and not failed(r) for r in pair):
      clean.append(seed)
  return clean


def has_runs(args: TableArgs, pair: str) -> bool:
  """Whether the pair has a run folder or a kept record to tabulate."""
  return any(
    folder.is_dir() and any(folder.iterdir())
    for folder in (records_folder(args, pair), run_folder(args, pair, "", 0).parent)
  )
