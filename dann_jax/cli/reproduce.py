"""`dann-jax reproduce table1`: the paper's Table 1 (`dann_jax.tables.reproduce`).

The command's options, `TableArgs` from them (errors name the flags), and `main`, which
`python experiments/paper/table1.py` runs with the same options.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from typing import Sequence

from dann_jax.data.pairs import PAIRS
from dann_jax.tables.records import TRAINED, TableArgs, has_runs

# The description of `python experiments/paper/table1.py --help`: the first line of `dann_jax.tables.reproduce`'s docstring.
SCRIPT_DESCRIPTION = "Table 1 of Ganin & Lempitsky (arXiv 1409.7495): every digit pair, all four methods."


def register(subparsers) -> None:
  p = subparsers.add_parser(
    "reproduce",
    help="reproduce the paper's tables",
    description="Trains (or reuses, or resumes) every run of the paper's "
    "Table 1 and writes table1_<preset>.{json,md} after each "
    "pair, e.g. `dann-jax reproduce table1 --preset paper "
    "--seeds 3`.",
  )
  p.add_argument("table", choices=("table1",))
  add_arguments(p)
  p.set_defaults(func=run)


def run(args) -> int:
  from dann_jax.tables.harness import reproduce_table1

  reproduce_table1(args_from(args), "dann-jax " + shlex.join(sys.argv[1:]))
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """`python experiments/paper/table1.py ...` (the same options as the CLI)."""
  import argparse

  from dann_jax.tables.harness import reproduce_table1

  parser = argparse.ArgumentParser(description=SCRIPT_DESCRIPTION)
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
  parser.add_argument(
    "--results",
    default=None,
    help="folder for the table, its records and figures (default: the --runs folder; this repository's tables: "
    "experiments/results)",
  )
  parser.add_argument("--json", action="store_true", help="one JSON line per pair instead of words")
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
    json=ns.json,
  )
  if ns.pairs is None and ns.table_only:
    # A table of what exists, not a row of "not started" per pair never run.
    begun = [pair for pair in args.pairs if has_runs(args, pair)]
    args = dataclasses.replace(args, pairs=begun or args.pairs)
  return args
