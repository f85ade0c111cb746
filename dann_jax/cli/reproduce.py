"""`dann-jax reproduce table1`: the paper's Table 1 (`dann_jax.reproduce`)."""

from __future__ import annotations

import shlex
import sys


def register(subparsers) -> None:
  from dann_jax.reproduce import add_arguments

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
  from dann_jax.reproduce import args_from, reproduce_table1

  reproduce_table1(args_from(args), "dann-jax " + shlex.join(sys.argv[1:]))
  return 0
