"""`dann-jax reproduce table1`: the paper's Table 1 (harness in experiments/table1.py)."""

from __future__ import annotations

import runpy
from pathlib import Path

# The harness is an experiment script, not library code: it lives in the
# source checkout next to the package.
HARNESS = Path(__file__).resolve().parents[2] / "experiments" / "table1.py"


def register(subparsers) -> None:
  p = subparsers.add_parser(
      "reproduce", help="reproduce the paper's tables",
      description="Runs experiments/table1.py; pass its options after the "
                  "table name, e.g. `dann-jax reproduce table1 --preset quick "
                  "--seeds 2`.")
  p.add_argument("table", choices=("table1",))
  p.add_argument("options", nargs="...", help="options of the harness "
                 "(--preset, --seeds, --seed, --steps, --pairs, --runs)")
  p.set_defaults(func=run)


def run(args) -> int:
  if not HARNESS.exists():
    raise FileNotFoundError(
        f"{HARNESS} not found: `reproduce` needs a source checkout of "
        "dann-jax (pip install -e .)")
  module = runpy.run_path(str(HARNESS))
  return module["main"](args.options)
