"""A run folder's files: what names the run, its metrics rows, its guard's record, and the refusals that protect them.

A run folder holds `run.json` (the run's identity: what `dann_jax.runner.presets.make_config` was asked, and the values it
resolved), `metrics.jsonl` (one row per chunk of steps), `checkpoint/`, `summary.json`, `curves.png`, and after a
guard's recovery or a divergence `guard.json` or `diverged.json`. Reading a damaged file is one `ValueError` naming
the file and the fix; a torn last metrics line (what a killed writer leaves) is dropped.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

# written into a run folder whose loss became non-finite: {"step": N}
DIVERGED = "diverged.json"
# written into a guarded run folder at each recovery: {"events": [...]}
GUARD = "guard.json"


def remove_run_files(out: Path) -> None:
  """Deletes what a run that failed before its first checkpoint wrote."""
  for name in ("run.json", "metrics.jsonl"):
    (out / name).unlink(missing_ok=True)
  shutil.rmtree(out / "checkpoint", ignore_errors=True)
  if out.is_dir() and not any(out.iterdir()):
    out.rmdir()


class ApiMismatch(ValueError):
  """A run folder to resume was trained through the other front door.

  Attributes:
    held_api: the front door the folder's run was trained with.
  """

  def __init__(self, message: str, held_api: str):
    super().__init__(message)
    self.held_api = held_api


def read_json_file(path: Path, what: str, fix: str) -> Any:
  """The JSON in `path`, or one ValueError naming the file, what is wrong and `fix`.

  Args:
    path: the file.
    what: what the file is, for the message ("the run's identity").
    fix: what to do about a damaged file.
  """
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except UnicodeDecodeError:
    problem = "not text (binary bytes)"
  except json.JSONDecodeError as e:
    problem = f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno}; truncated?)"
  raise ValueError(f"{path} ({what}) is damaged: {problem}; {fix}")


RUN_JSON_FIX = (
  "it names the run, so nothing can resume or score the folder without it: restore the file, or delete the folder "
  "and train the run again"
)


def read_run_json(run_dir: Path) -> dict:
  """A run folder's run.json, or one clear error if it is damaged."""
  held = read_json_file(Path(run_dir) / "run.json", "the run's identity", RUN_JSON_FIX)
  if not isinstance(held, dict) or "pair" not in held or "method" not in held:
    raise ValueError(f"{Path(run_dir) / 'run.json'} (the run's identity) is damaged: it names no pair; {RUN_JSON_FIX}")
  return held


def _held_identity(out: Path) -> dict:
  """The identity in `out`'s run.json, comparable with `RunConfig.identity()`."""
  held = read_run_json(out)
  held.pop("config", None)  # the resolved values follow from the rest
  held.setdefault("api", "linen")  # a run.json without `api` is Linen's
  return held


def _differences(held: dict, identity: dict) -> tuple[list[str], str]:
  """The keys where two identities differ, and those differences in words."""
  differ = sorted(k for k in set(held) | set(identity) if held.get(k) != identity.get(k))
  return differ, ", ".join(f"`{k}={held.get(k)!r}` where this asks for {identity.get(k)!r}" for k in differ)


def check_finished_run(out: Path, identity: dict) -> None:
  """Refuses to reuse the finished run in `out` as another run (another pair, budget, grid point or guard)."""
  held = _held_identity(out)
  if held != identity:
    _, parts = _differences(held, identity)
    raise ValueError(
      f"{out} holds a finished run that is not the one asked for, with {parts}; choose another `out_dir` "
      f"(or delete {out} to train this run there)"
    )


def check_out_dir(out: Path, identity: dict, resume: bool) -> None:
  """Refuses to overwrite another run, or to resume a different one."""
  if out.exists() and not out.is_dir():
    raise ValueError(f"{out} is a file; the run needs a folder there (choose another `out_dir`)")
  run_file = out / "run.json"
  if run_file.exists():
    held = _held_identity(out)
    if not resume:
      raise ValueError(
        f"{out} already holds a run ({held}); pass `resume=True` to continue it or choose another `out_dir`"
      )
    if held["api"] != identity["api"]:
      raise ApiMismatch(
        f"cannot resume: {out} was trained with api={held['api']!r}, not "
        f"api={identity['api']!r}; resume it with api={held['api']!r}",
        held["api"],
      )
    if held != identity:
      differ, parts = _differences(held, identity)
      extend = (
        "; a run cannot be extended (its schedules, lambda_p and mu_p, are fixed by its step count): train the "
        "longer run in another `out_dir`"
        if differ == ["steps"]
        else ""
      )
      raise ValueError(f"cannot resume: {out} holds another run, with {parts}{extend}")
  elif resume:
    raise FileNotFoundError(f"nothing to resume in {out}: no run.json; start the run without `resume=True`")
  elif out.exists() and any(out.iterdir()):
    raise ValueError(f"{out} is not empty and holds no run; choose another `out_dir`")


def read_metrics(path: Path, upto: int | None = None) -> list[dict]:
  """The rows of a run's `metrics.jsonl` (up to step `upto`, if given); [] if it has none."""
  if not path.exists():
    return []
  try:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line]
  except UnicodeDecodeError:
    raise ValueError(
      f"{path} (the run's metrics) is damaged: not text; delete it to resume without past metrics"
    ) from None
  rows = []
  for i, line in enumerate(lines):
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      if i == len(lines) - 1:
        # What a writer killed mid-line leaves: that row's chunk is
        # retrained from the checkpoint before it anyway.
        print(f"dann-jax: {path}: dropped its torn last line (a write was cut off)", file=sys.stderr)
        break
      raise ValueError(
        f"{path} (the run's metrics) is damaged at line {i + 1} of {len(lines)}; delete that line (or the file, "
        "losing the logged curves) to resume"
      ) from None
  return rows if upto is None else [r for r in rows if r["step"] <= upto]


def read_guard_events(out: Path) -> list[dict]:
  """The recoveries a guarded run folder records ([] if none)."""
  path = out / GUARD
  if not path.exists():
    return []
  fix = "delete the run folder and train it again"
  held = read_json_file(path, "the guard's recoveries", fix)
  if not isinstance(held, dict) or not isinstance(held.get("events"), list):
    raise ValueError(f"{path} (the guard's recoveries) is damaged: it holds no list of events; {fix}")
  return held["events"]
