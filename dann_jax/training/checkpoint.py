"""Saving and restoring train states with orbax.

Only the pytree part of a `TrainState` is stored (step, params, optimizer
state, model state and the raw bits of the PRNG key); the functions it carries
(model, optimizer, schedules) come from the template the caller builds with
`create_train_state`, so a resumed run continues with identical numbers.

With several processes (`dann_jax.backend.distributed`), every process calls these
functions together, in the same order, on a folder they all reach (a shared
file system): orbax saves collectively (each replicated array is written
once, by the process holding its first copy) and restores into the
template's devices, whatever number of processes wrote it: a run saved by
two processes resumes in one and vice versa (tests/test_distributed.py).
"""

from __future__ import annotations

import os
import shutil
import sys

import jax
import orbax.checkpoint as ocp

from dann_jax.core.train import TrainState


def _to_tree(state: TrainState) -> dict:
  return {
    "step": state.step,
    "params": state.params,
    "opt_state": state.opt_state,
    "model_state": state.model_state,
    "key": jax.random.key_data(state.key),
  }


def _manager(directory: str | os.PathLike, max_to_keep: int | None = 1):
  return ocp.CheckpointManager(
    os.path.abspath(os.fspath(directory)),
    options=ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      create=True,
      # A save killed midway leaves `<step>.orbax-checkpoint-tmp`; the
      # finished steps stay readable, and the next manager removes it.
      cleanup_tmp_directories=True,
    ),
  )


def save_checkpoint(directory: str | os.PathLike, state: TrainState, max_to_keep: int | None = 1) -> int:
  """Writes `state` under `directory/<step>` (atomically) and returns the step.

  `max_to_keep` checkpoints are kept, the newest first (None keeps all).
  """
  step = int(jax.device_get(state.step).reshape(-1)[0])
  with _manager(directory, max_to_keep) as manager:
    manager.save(step, args=ocp.args.StandardSave(_to_tree(state)))
    manager.wait_until_finished()
  return step


def latest_step(directory: str | os.PathLike) -> int | None:
  """The newest checkpointed step in `directory`, or None if there is none."""
  if not os.path.isdir(directory):
    return None
  with _manager(directory) as manager:
    return manager.latest_step()


def all_steps(directory: str | os.PathLike) -> list[int]:
  """Every checkpointed step in `directory`, oldest first."""
  if not os.path.isdir(directory):
    return []
  with _manager(directory, None) as manager:
    return sorted(manager.all_steps())


def delete_after(directory: str | os.PathLike, step: int) -> list[int]:
  """Deletes every checkpoint in `directory` newer than `step`; returns their steps."""
  later = [s for s in all_steps(directory) if s > step]
  if later:
    with _manager(directory, None) as manager:
      for s in later:
        manager.delete(s)
  return later


def copy_step(source: str | os.PathLike, step: int, destination: str | os.PathLike) -> None:
  """Makes `destination` a checkpoint folder holding `source`'s checkpoint at `step` alone, replacing what
  was there. The copy is completed beside it (`destination.tmp`) before the old folder is removed, so a
  checkpoint found there is always whole."""
  source, destination = os.fspath(source), os.fspath(destination)
  tmp = destination + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  shutil.copytree(os.path.join(source, str(step)), os.path.join(tmp, str(step)))
  shutil.rmtree(destination, ignore_errors=True)
  os.replace(tmp, destination)


def _reason(error: BaseException) -> str:
  """The first line of the root cause of an orbax/TensorStore error, short
  enough for one line."""
  while error.__cause__ is not None:
    error = error.__cause__
  lines = str(error).strip().splitlines() or [type(error).__name__]
  first = lines[0]
  return first if len(first) <= 160 else first[:157] + "..."


def _is_orphaned_read(unraisable) -> bool:
  e = unraisable.exc_value
  return isinstance(e, RuntimeError) and str(e) == "Event loop is closed"


def _drop_orphaned_read_reports() -> None:
  """Silences the reports of reads orbax started and abandoned.

  When one read of a damaged checkpoint fails, orbax gives up and closes its
  event loop while TensorStore's other reads are still running on their own
  threads; each one that finishes later tries to wake the closed loop, and
  Python prints it as an ignored `RuntimeError: Event loop is closed`
  traceback. Those say nothing about the run (the failure itself is
  reported), so from the first restore on they are dropped; every other
  unraisable exception still reaches the previous `sys.unraisablehook`.
  """
  previous = sys.unraisablehook
  if getattr(previous, "drops_orphaned_reads", False):
    return

  def hook(unraisable):
    if not _is_orphaned_read(unraisable):
      previous(unraisable)

  hook.drops_orphaned_reads = True
  sys.unraisablehook = hook


def _restore_tree(directory, step: int, template: TrainState) -> dict:
  with _manager(directory) as manager:
    return manager.restore(step, args=ocp.args.StandardRestore(_to_tree(template)))


def restore_checkpoint(directory: str | os.PathLike, template: TrainState, step: int | None = None) -> TrainState:
  """Restores a checkpoint into the structure (and functions) of `template`.

  Without `step`, the newest checkpoint that can be read is restored: a damaged
  or partial newer one (a truncated file, a missing part) is reported in one
  line on stderr, naming the folder, the step skipped and the step used.

  Args:
    directory: where `save_checkpoint` wrote.
    template: a state built like the saved one (same model, config and seeds
      axis); its values are replaced.
    step: the step to restore; the newest readable one if None.

  Returns:
    The restored state.

  Raises:
    FileNotFoundError: if `directory` holds no checkpoint.
    ValueError: if the checkpoint (every one, when `step` is None) cannot be
      read; the message names the folder, the steps and why.
  """
  directory = os.fspath(directory)
  steps = [step] if step is not None else all_steps(directory)[::-1]
  if not steps:
    raise FileNotFoundError(
      f"no checkpoint in {directory!r}; start the run without `resume` first, or point to the run folder that holds one"
    )
  damaged = []
  # Before the first read: a failing read's siblings may report as soon as it fails, before its exception
  # reaches the handler below.
  _drop_orphaned_read_reports()
  for candidate in steps:
    try:
      tree = _restore_tree(directory, candidate, template)
    except Exception as e:  # noqa: BLE001 - orbax and TensorStore raise many types for unreadable data
      damaged.append(f"step {candidate}: {_reason(e)}")
      continue
    if damaged and jax.process_index() == 0:  # one report per run
      print(
        f"dann-jax: checkpoint {directory!r} has damaged steps "
        f"({'; '.join(damaged)}); restored step {candidate}, the newest "
        "readable one",
        file=sys.stderr,
      )
    key_impl = jax.random.key_impl(template.key)
    return template.replace(
      step=tree["step"],
      params=tree["params"],
      opt_state=tree["opt_state"],
      model_state=tree["model_state"],
      key=jax.random.wrap_key_data(tree["key"], impl=key_impl),
    )
  if step is not None:
    others = [s for s in all_steps(directory) if s != step]
    hint = f"other steps there: {others}; pass one of them" if others else "no other step is there"
  else:
    hint = "no readable step is left; delete the folder and start again without `resume`"
  raise ValueError(f"cannot read the checkpoint in {directory!r} ({'; '.join(damaged)}); {hint}")
