"""The `dann-jax` command line: a thin layer over library functions.

Each subcommand lives in its own module of this package and exposes
`register(subparsers)`, which adds its parser and sets `func` to a handler
`handler(args) -> int` (the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules of this package that contribute subcommands, in help order.
_COMMAND_MODULES = ("demo", "train", "select", "reproduce", "plot", "data")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="dann-jax",
      description="Domain-adversarial training of neural networks (DANN) in JAX.")
  subparsers = parser.add_subparsers(dest="command", required=True)
  for name in _COMMAND_MODULES:
    importlib.import_module(f"dann_jax.cli.{name}").register(subparsers)
  return parser


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    return int(args.func(args) or 0)
  except (ValueError, FileNotFoundError) as e:
    print(f"dann-jax: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
