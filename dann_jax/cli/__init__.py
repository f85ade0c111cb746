"""The `dann-jax` command line: a thin layer over library functions.

Each subcommand lives in its own module of this package and exposes
`register(subparsers)`, which adds its parser and sets `func` to a handler
`handler(args) -> int` (the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

# Modules of this package that contribute subcommands, in help order.
_COMMAND_MODULES = ("demo", "adapt", "train", "predict", "select", "reproduce", "plot", "data")


def build_parser() -> argparse.ArgumentParser:
  from dann_jax import __version__

  parser = argparse.ArgumentParser(
    prog="dann-jax", description="Domain-adversarial training of neural networks (DANN) in JAX."
  )
  parser.add_argument("--version", action="version", version=f"dann-jax {__version__}")
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
    print(f"dann-jax: error: {as_flags(str(e))}", file=sys.stderr)
    return 2
  except FloatingPointError as e:  # a run diverged: not a usage error
    print(f"dann-jax: error: {e} (--set learning_rate=... / --set lam_max=...)", file=sys.stderr)
    return 1


# Library arguments named in error messages, as the flags that set them.
ARGUMENT_FLAGS = {
  "method": "--method",
  "steps": "--steps",
  "total_steps": "--steps",
  "seed": "--seed",
  "resume": "--resume",
  "tensorboard": "--tensorboard",
  "out_dir": "--out",
  "num_devices": "--devices",
  "seeds": "--seeds",
  "idx_dir": "--idx-dir",
  "data_dir": "--data-dir",
  "parallel": "--parallel",
  "coordinator": "--coordinator",
  "num_processes": "--num-processes",
  "process_id": "--process-id",
  "topology_timeout": "--topology-timeout",
}


def as_flags(message: str) -> str:
  """Rewrites the library's `name=value` and `name` mentions as CLI flags."""

  def assignment(m):
    flag = ARGUMENT_FLAGS.get(m.group(1))
    if flag is None:
      return m.group(0)
    return flag if m.group(2) == "True" else f"{flag} {m.group(2)}"

  message = re.sub(r"`(\w+)=([^`]*)`", assignment, message)
  return re.sub(r"`(\w+)`", lambda m: ARGUMENT_FLAGS.get(m.group(1), m.group(0)), message)


# XLA:CPU allocates a step's tens to hundreds of MB of temporaries per
# execution, above glibc's default mmap threshold (32 MB at most), so every step
# would page-fault fresh memory; these thresholds keep freed memory in the heap
# instead. XLA allocates from its worker threads, and a thread's own arena
# cannot hold a block over 64 MB (glibc maps each one afresh whatever the
# threshold: the SVHN net's step faulted in 210 MB per step); one arena, the
# main heap, can.
MALLOC_TUNING = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296:glibc.malloc.arena_max=1"
MALLOC_OPT_OUT = "DANN_JAX_MALLOC_TUNING"


def wants_malloc_tuning(env) -> bool:
  """True on glibc Linux unless the user set GLIBC_TUNABLES or opted out."""
  if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in env:
    return False
  if env.get(MALLOC_OPT_OUT, "1") == "0":
    return False
  try:
    return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
  except (ValueError, OSError):
    return False


def entry() -> None:
  """The `dann-jax` console script: `main`, in a process with the allocator tuned.

  glibc reads GLIBC_TUNABLES only at process start, so the command re-executes
  itself once with it set (opt out with DANN_JAX_MALLOC_TUNING=0).
  """
  if wants_malloc_tuning(os.environ):
    env = dict(os.environ, GLIBC_TUNABLES=MALLOC_TUNING)
    try:
      os.execve(sys.executable, [sys.executable, "-m", "dann_jax.cli", *sys.argv[1:]], env)
    except OSError:
      pass  # run untuned rather than not at all
  sys.exit(main())


if __name__ == "__main__":
  sys.exit(main())
