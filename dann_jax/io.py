"""Files written whole or not at all: `.npz` arrays and text, through a temporary file renamed into place.

A reader never sees a half-written file: each writer writes a temporary file beside its target
(`.<name>.<pid>.<random>.tmp`), flushes it to disk and renames it over the target with `os.replace`. A temporary
file left by a writer that was killed is removed by the next write into the same folder. `load_npz_cache` reads
such an `.npz` back and treats a damaged one as absent, so that its caller rebuilds it.

This module depends on numpy and the standard library only, so that anything (data, training, reports) can use it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np


def save_npz_atomic(path: Path, **arrays: Any) -> None:
  """Writes `arrays` to `path` as an uncompressed `.npz`, so that `path` is either complete or absent.

  The data are written to a temporary file in the same directory and renamed over `path`; an interrupted write
  (an exception, KeyboardInterrupt) removes the temporary file.
  """
  _write_atomic(path, lambda f: np.savez(f, **arrays))


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
  """Writes `text` (UTF-8) to `path` so that `path` is either complete or absent (as `save_npz_atomic`)."""
  _write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def _write_atomic(path: str | os.PathLike[str], write: Callable[[Any], Any]) -> None:
  """Calls `write` on a binary temporary file beside `path`, then renames it over `path`."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  remove_stale_temp_files(path.parent)
  fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp makes the file private; a cache is as readable as any file
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp_name, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp_name)
    raise


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, owned by another user
    return True
  return True


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
  """Removes the temporary files of atomic writers in `folder` whose process has ended (killed mid-write).

  Temporary files are named `.<name>.<pid>.<random>.tmp`; a file whose writer is still running is left alone, and
  so is any file not named that way.

  Returns:
    The paths removed.
  """
  removed = []
  folder = Path(folder)
  if not folder.is_dir():
    return removed
  for tmp in folder.glob(".*.tmp"):
    parts = tmp.name.split(".")
    # "", <name parts...>, <pid>, <random>, "tmp"
    if len(parts) < 5 or not parts[-3].isdigit():
      continue
    pid = int(parts[-3])
    if pid != os.getpid() and not _pid_alive(pid):
      with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
        removed.append(tmp)
  return removed


def load_npz_cache(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray] | None:
  """Reads a cache file written by `save_npz_atomic`; returns None when it is absent or corrupt.

  A file that exists but cannot be read, or lacks one of `keys`, is reported on stderr and removed, so the caller
  rebuilds it.
  """
  path = Path(path)
  if not path.exists():
    return None
  try:
    with np.load(path, allow_pickle=False) as f:
      return {key: f[key] for key in keys}
  except Exception as e:  # zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError...
    print(
      f"dann-jax: cache file {path} is corrupt ({type(e).__name__}: {e}); removing and rebuilding it", file=sys.stderr
    )
    with contextlib.suppress(FileNotFoundError):
      path.unlink()
    return None
