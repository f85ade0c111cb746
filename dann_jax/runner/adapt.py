"""Adaptation a user can trust without target labels: train candidates, let a validator choose.

`adapt` trains every candidate of `dann_jax.runner.candidates` (source only and DANN at
several adaptation strengths, at two learning rates) with the guard on
(`dann_jax.training.guard`), chooses the learning rate on held-out source images
(the one whose source-only candidate fits them best), scores every evaluation
checkpoint of that learning rate's candidates with one label-free validator
(`dann_jax.validation.selection`), and keeps the checkpoint with the lowest risk. Source
only is a candidate, so a DANN is chosen only when the validator ranks it
above every source-only checkpoint of its learning rate. Target labels, where the data have them,
are read after the choice, to report accuracy; they never enter it.

The folder it writes:
  OUT/<candidate>_s<seed>/   each candidate's run folder (`dann-jax train`'s
                             layout) and its scores.json (risk per checkpoint)
  OUT/chosen_s<seed>/        the chosen checkpoint as a run folder (`dann-jax
                             predict`, `select`, `load_run` read it)
  OUT/adapt_s<seed>.json     the choice, why, and every candidate's scores
  OUT/report_s<seed>.md, OUT/scores_s<seed>.png

Command: `dann-jax adapt --source mnist --target mnist-m --out runs/adapt`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from dann_jax.io import write_text_atomic
from dann_jax.runner.adapt_report import build_report, markdown
from dann_jax.runner.candidates import Candidate, default_candidates
from dann_jax.runner.choice import (  # noqa: F401  (re-exported: `adapt.choose` and friends)
  DRIFT,
  SCORES,
  VIEW_SIZES,
  Choice,
  adapt_choice,
  check_share_margin,
  choose,
  score_checkpoints,
  settings_on_source,
  share_bound,
  source_error_words,
)
from dann_jax.training import checkpoint
from dann_jax.validation import selection


def run_folder(out: Path, candidate: str, seed: int) -> Path:
  return Path(out) / f"{candidate}_s{seed}"


def adapt(
  pair,
  *,
  out_dir: str | os.PathLike,
  seed: int = 0,
  validator: str = selection.DEFAULT_CRITERION,
  candidates: Sequence[Candidate] | None = None,
  steps: int | None = None,
  batch_size: int | None = None,
  splits=None,
  data=None,
  data_dir=None,
  guard: bool = True,
  share_margin: float | None = None,
  source_setting: bool = True,
  progress: bool = True,
  log: Callable[[str], None] = print,
) -> dict[str, Any]:
  """Trains the candidates on `pair`, chooses a checkpoint without target labels, and reports.

  Finished candidates in `out_dir` are reused and interrupted ones resumed,
  so a repeated call only does what is left. With `source_setting`, the
  source-only candidates train first, and the other candidates of a training
  setting whose source-only candidate errs more on held-out source images are
  not trained at all (the choice could not keep them); the report lists them.

  Args:
    pair: the adaptation pair (`dann_jax.data.pairs.get_pair`; a user's
      `folder:` / `npz:` domains too).
    out_dir: the folder to write (see the module docstring).
    seed: the seed of every candidate.
    validator: the label-free criterion (`dann_jax.validation.selection.CRITERIA`, not
      reverse validation).
    candidates: what to train (default `default_candidates()`).
    steps: training steps per candidate (default: the quick preset's).
    batch_size: samples per step, half source and half target (default 128).
    splits: per role, the split options of a user's domain.
    data: the pair's splits, if already loaded.
    data_dir: the data cache folder.
    guard: train each candidate with the guard (`dann_jax.training.guard`).
    share_margin: with a value, the class-share check (`choose`): a DANN
      checkpoint is kept only if the shares of its predicted target classes are
      no farther (total variation) from the source's label shares than the best
      source-only checkpoint's, plus this margin. It assumes both domains have
      about the same class shares. None: no check.
    source_setting: choose the training setting (the learning rate) on
      held-out source images first (`choice.settings_on_source`); False
      compares every candidate's checkpoints by the validator alone.
    progress: show progress bars.
    log: called with one line per finished stage.

  Returns:
    The report (also written to `out_dir/adapt_s<seed>.json`).

  Raises:
    ValueError: an unknown validator, reverse validation, or bad data.
  """
  from dann_jax.data.pair_data import load_pair_data
  from dann_jax.runner.runs import train_or_reuse
  from dann_jax.training.guard import Unrecoverable
  from dann_jax.training.loop import Diverged

  selection.check_criterion(validator)
  check_share_margin(share_margin)  # before any training
  if validator not in selection.OUTPUT_VALIDATORS:
    raise ValueError(f"{validator=} trains a model per checkpoint; choose one of {tuple(selection.OUTPUT_VALIDATORS)}")
  candidates = tuple(candidates or default_candidates())
  names = [c.name for c in candidates]
  if len(set(names)) != len(names):
    twice = sorted({n for n in names if names.count(n) > 1})
    raise ValueError(f"candidates share the names {twice}: each needs its own name (its run folder's)")
  out = Path(out_dir)
  data = data or load_pair_data(pair, data_dir=data_dir, splits=splits)
  trained, failed, skipped, scored = {}, {}, {}, {}
  # Source-only candidates first: with `source_setting`, their held-out source error chooses the training
  # setting before any other candidate trains, and the candidates of a setting that lost are not trained.
  order = sorted(candidates, key=lambda c: c.adapts)
  winners, judged = None, not source_setting
  for i, cand in enumerate(order, 1):
    if cand.adapts and not judged:
      for name, (folder, _) in trained.items():
        scored[name] = score_checkpoints(folder, data, [validator])
      winners, why_not = _winning_settings(scored, candidates)
      judged = True
    if cand.adapts and winners is not None and cand.setting not in winners:
      judgeable = any(c.setting == cand.setting for c in candidates if not c.adapts)
      skipped[cand.name] = why_not if judgeable else "no source-only candidate at its training setting to judge it by"
      log(f"[{i}/{len(order)}] {cand.name}: not trained ({skipped[cand.name]})")
      continue
    folder = run_folder(out, cand.name, seed)
    t0 = time.perf_counter()
    try:
      result = train_or_reuse(
        pair,
        cand.method,
        folder,
        preset="quick",
        steps=steps,
        batch_size=batch_size,
        seeds=[seed],
        overrides=dict(cand.overrides),
        splits=splits,
        data=data,
        guard=guard or None,
        progress=progress,
      )
    except (Diverged, Unrecoverable) as e:  # even where the guard could not help: the candidate is left out
      failed[cand.name] = str(e)
      log(f"[{i}/{len(order)}] {cand.name}: failed, left out ({e})")
      continue
    trained[cand.name] = (folder, result.summary)
    events = len(result.summary.get("guard", {}).get("events", []))
    log(
      f"[{i}/{len(order)}] {cand.name}: trained in {time.perf_counter() - t0:.0f} s"
      + (f", {events} guard recoveries" if events else "")
    )
  left = {name: folder for name, (folder, _) in trained.items() if name not in scored}
  bar = _bar(sum(len(checkpoint.all_steps(f / "checkpoint")) for f in left.values()), progress, validator)
  for name, folder in left.items():
    scored[name] = score_checkpoints(folder, data, [validator], progress=bar.update if bar else None)
  if bar:
    bar.close()
  scored = {c.name: scored[c.name] for c in candidates if c.name in scored}  # in the order given
  choice, setting = adapt_choice(
    scored, validator, candidates, source_setting=source_setting, share_margin=share_margin
  )
  chosen_dir = out / f"chosen_s{seed}"
  _keep(run_folder(out, choice.candidate, seed), choice.step, chosen_dir)
  report = build_report(
    pair, seed, validator, share_margin, candidates, scored, trained, failed, choice, chosen_dir, setting, skipped
  )
  write_text_atomic(out / f"adapt_s{seed}.json", json.dumps(report, indent=2))
  write_text_atomic(chosen_dir / "summary.json", json.dumps(report["chosen"], indent=2))
  from dann_jax.plots import validator_curves

  validator_curves(report, out / f"scores_s{seed}.png")
  write_text_atomic(out / f"report_s{seed}.md", markdown(report, seed))
  return report


def _winning_settings(scored: dict[str, dict], candidates: Sequence[Candidate]) -> tuple[set | None, str]:
  """The training settings `choice.settings_on_source` keeps, judged from the scored source-only candidates
  (None when none of them has a source measure: then every candidate is trained), and why the others lose."""
  setting = settings_on_source(scored, candidates)
  if not setting.source_error:
    return None, ""
  return {c.setting for c in candidates if c.name in setting.kept}, (
    f"its training setting lost on held-out source images; source-only error {source_error_words(setting.source_error)}"
  )


def _bar(total: int, progress: bool, validator: str):
  if not progress or not total:
    return None
  from tqdm.auto import tqdm

  return tqdm(total=total, unit="checkpoint", desc=f"scoring ({validator})", dynamic_ncols=True)


def _keep(run_dir: Path, step: int, chosen: Path) -> None:
  """Copies the run's checkpoint at `step` (and its run.json) into `chosen`, replacing what was there."""
  tmp = chosen.with_name(chosen.name + ".tmp")
  shutil.rmtree(tmp, ignore_errors=True)
  checkpoint.copy_step(run_dir / "checkpoint", step, tmp / "checkpoint")
  shutil.copy2(run_dir / "run.json", tmp / "run.json")
  shutil.rmtree(chosen, ignore_errors=True)
  os.replace(tmp, chosen)
