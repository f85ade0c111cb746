"""Adaptation a user can trust without target labels: train candidates, let a validator choose.

`adapt` trains every candidate of `dann_jax.runner.candidates` (source only and DANN at
several adaptation strengths) with the guard on (`dann_jax.training.guard`), scores
every evaluation checkpoint of every candidate with one label-free validator
(`dann_jax.validation.selection`), and keeps the checkpoint with the lowest risk. Source
only is a candidate, so a DANN is chosen only when the validator ranks it
above every source-only checkpoint. Target labels, where the data have them,
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

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from dann_jax.io import write_text_atomic
from dann_jax.runner.candidates import Candidate, default_candidates
from dann_jax.training import checkpoint
from dann_jax.validation import selection

# The label-free view every checkpoint is scored on: seeded subsamples of the
# source train, held-out source and target train images (the sizes the
# validator benchmark measured).
VIEW_SIZES = {"max_train": 2000, "max_target": 3000, "max_val": 2000}
SCORES = "scores.json"  # per run folder: {step: {"scores": {name: risk}, "target_accuracy": x | None, ...}}
DRIFT = "class_share_drift"  # per checkpoint: `selection.class_share_drift` on the view


def score_checkpoints(folder: Path, data, criteria: Sequence[str], *, progress: Callable | None = None) -> dict:
  """Scores every checkpoint of the run in `folder` by `criteria` (no reverse validation).

  Scores already in `folder/scores.json` are reused; new ones are added to it
  atomically after each checkpoint, so an interrupted call resumes. Each
  entry also holds the checkpoint's accuracy on the held-out source images, its
  class-share drift (`selection.class_share_drift`: target predictions against
  held-out source labels) and, for the report only, its accuracy on the labelled
  target test images (None without any).

  Returns:
    {step (str): {"scores": {...}, "source_val_accuracy": x, "class_share_drift": x, "target_accuracy": x | None}}
  """
  from dann_jax.runner.runs import load_run
  from dann_jax.training.evaluation import accuracy

  criteria = list(criteria)
  cache = folder / SCORES
  done = json.loads(cache.read_text()) if cache.exists() else {}
  steps = [
    s
    for s in checkpoint.all_steps(folder / "checkpoint")
    if not set(criteria) <= set(done.get(str(s), {}).get("scores", {})) or DRIFT not in done.get(str(s), {})
  ]
  if not steps:
    return done
  result = load_run(folder, data=data)
  view = selection.selection_set(result.data, result.mean, **VIEW_SIZES)
  test = result.data.target_test
  known = np.asarray(test.labels) >= 0
  for step in steps:
    state = checkpoint.restore_checkpoint(folder / "checkpoint", result.state, step)
    # source-risk's outputs and the target logits too: the held-out source accuracy and the class-share drift
    # go into the report beside every risk.
    outputs = selection.model_outputs(state, view, [*criteria, "source-risk", selection.CLASS_SHARES])
    entry = done.setdefault(str(step), {"scores": {}})
    entry["scores"].update(selection.score_outputs(outputs, criteria))
    entry["source_val_accuracy"] = 1.0 - selection.source_risk(outputs.source_val_logits, outputs.source_val_labels)
    entry[DRIFT] = selection.class_share_drift(outputs.target_logits, outputs.source_val_labels)
    if "target_accuracy" not in entry:  # read after scoring, for the report only
      entry["target_accuracy"] = (
        float(accuracy(state, test.images[known], test.labels[known], result.mean)) if known.any() else None
      )
    write_text_atomic(cache, json.dumps(done, indent=1))
    if progress is not None:
      progress()
  return done


@dataclasses.dataclass(frozen=True)
class Choice:
  """The checkpoint a validator chose."""

  candidate: str
  step: int
  score: float
  target_accuracy: float | None  # reported only


def choose(
  scored: dict[str, dict], validator: str, *, share_margin: float | None = None, source_only: Sequence[str] = ()
) -> Choice:
  """The (candidate, step) with the lowest risk; NaN risks rank last, ties go to the earlier candidate.

  With `share_margin`, the class-share check: a checkpoint of an adapting
  candidate (not in `source_only`) is eligible only if its class-share drift is
  at most the drift of the best source-only checkpoint plus `share_margin`.
  Every source-only checkpoint stays eligible.

  Args:
    scored: candidate name -> `score_checkpoints` output.
    validator: the criterion to rank by.
    share_margin: the class-share check's margin (None: no check).
    source_only: the names of the candidates that do not adapt.

  Raises:
    ValueError: nothing scored, or the check without a scored source-only candidate.
  """
  entries = [(name, int(step), e) for name, steps in scored.items() for step, e in steps.items()]
  if not entries:
    raise ValueError("no scored checkpoint to choose from; train at least one candidate first")
  if share_margin is not None:
    bound = share_bound(scored, validator, share_margin, source_only)
    entries = [e for e in entries if e[0] in source_only or e[2][DRIFT] <= bound]  # a NaN drift is not <= bound
  order = {name: i for i, name in enumerate(scored)}
  risk = lambda e: e[2]["scores"][validator]
  name, step, e = min(entries, key=lambda e: (np.isnan(risk(e)), risk(e), order[e[0]], e[1]))
  return Choice(name, step, float(risk((name, step, e))), e.get("target_accuracy"))


def share_bound(scored: dict[str, dict], validator: str, share_margin: float, source_only: Sequence[str]) -> float:
  """The class-share check's bound: the drift of the source-only checkpoint `choose` ranks first, plus `share_margin`."""
  check_share_margin(share_margin)
  so = {name: scored[name] for name in source_only if scored.get(name)}
  if not so:
    raise ValueError(
      "the class-share check compares against a source-only checkpoint, and none was scored; include a source-only "
      "candidate or turn the check off (share_margin=None)"
    )
  best = choose(so, validator)
  return so[best.candidate][str(best.step)][DRIFT] + share_margin


def check_share_margin(share_margin: float | None) -> None:
  if share_margin is not None and not share_margin >= 0:
    raise ValueError(f"{share_margin=} must be a number >= 0 (the tolerated rise of the class-share drift), or None")


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
  progress: bool = True,
  log: Callable[[str], None] = print,
) -> dict[str, Any]:
  """Trains the candidates on `pair`, chooses a checkpoint without target labels, and reports.

  Finished candidates in `out_dir` are reused and interrupted ones resumed,
  so a repeated call only does what is left.

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
  trained, failed = {}, {}
  for i, cand in enumerate(candidates, 1):
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
      log(f"[{i}/{len(candidates)}] {cand.name}: failed, left out ({e})")
      continue
    trained[cand.name] = (folder, result.summary)
    events = len(result.summary.get("guard", {}).get("events", []))
    log(
      f"[{i}/{len(candidates)}] {cand.name}: trained in {time.perf_counter() - t0:.0f} s"
      + (f", {events} guard recoveries" if events else "")
    )
  scored = {}
  bar = _bar(sum(len(checkpoint.all_steps(f / "checkpoint")) for f, _ in trained.values()), progress, validator)
  for name, (folder, _) in trained.items():
    scored[name] = score_checkpoints(folder, data, [validator], progress=bar.update if bar else None)
  if bar:
    bar.close()
  source_only = [c.name for c in candidates if not c.adapts]
  choice = choose(scored, validator, share_margin=share_margin, source_only=source_only)
  chosen_dir = out / f"chosen_s{seed}"
  _keep(run_folder(out, choice.candidate, seed), choice.step, chosen_dir)
  report = _report(pair, seed, validator, share_margin, candidates, scored, trained, failed, choice, chosen_dir)
  write_text_atomic(out / f"adapt_s{seed}.json", json.dumps(report, indent=2))
  write_text_atomic(chosen_dir / "summary.json", json.dumps(report["chosen"], indent=2))
  from dann_jax.plots import validator_curves

  validator_curves(report, out / f"scores_s{seed}.png")
  write_text_atomic(out / f"report_s{seed}.md", markdown(report, out, seed))
  return report


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


def _report(pair, seed, validator, share_margin, candidates, scored, trained, failed, choice, chosen_dir) -> dict:
  by_name = {c.name: c for c in candidates}
  best_so = min(
    (
      e["scores"][validator]
      for name, steps in scored.items()
      if not by_name[name].adapts
      for e in steps.values()
      if not np.isnan(e["scores"][validator])
    ),
    default=None,
  )
  rows = {}
  for name, steps in scored.items():
    summary = trained[name][1]
    rows[name] = {
      "method": by_name[name].method,
      "lam_max": by_name[name].lam_max,
      "overrides": dict(by_name[name].overrides),
      "guard_events": summary.get("guard", {}).get("events", []),
      "checkpoints": {
        step: {
          "risk": e["scores"][validator],
          "source_val_accuracy": e.get("source_val_accuracy"),
          DRIFT: e.get(DRIFT),
          "target_accuracy": e.get("target_accuracy"),
        }
        for step, e in sorted(steps.items(), key=lambda kv: int(kv[0]))
      },
    }
  source_only_rows = [n for n in scored if not by_name[n].adapts]
  final_so = final_so_source = None
  if source_only_rows:
    steps = scored[source_only_rows[0]]
    last = steps[str(max(map(int, steps)))]
    final_so, final_so_source = last.get("target_accuracy"), last.get("source_val_accuracy")
  method, adapts = by_name[choice.candidate].method, by_name[choice.candidate].adapts
  why = (
    f"lowest {validator} risk ({choice.score:.4f}) of the {sum(len(s) for s in scored.values())} checkpoints of "
    f"{len(scored)} candidates"
  )
  if adapts and best_so is not None:
    why += f"; the best source-only checkpoint scored {best_so:.4f}, so the validator ranks this DANN above source only"
  elif not adapts:
    why += "; no DANN checkpoint scored better, so no adaptation is the choice"
  check = None
  if share_margin is not None:
    bound = share_bound(scored, validator, share_margin, [n for n in scored if not by_name[n].adapts])
    # Whatever outscored the choice was left out by the check (source-only checkpoints never are).
    left_out = sorted(
      (name, int(step))
      for name, steps in scored.items()
      for step, e in steps.items()
      if e["scores"][validator] < choice.score
    )
    check = {"margin": share_margin, "bound": bound, "left_out": left_out}
    if left_out:
      why = (
        f"lowest {validator} risk ({choice.score:.4f}) among the checkpoints the class-share check keeps; "
        f"{len(left_out)} DANN checkpoints scored better but predict target classes in shares farther from the "
        f"source's (drift above {bound:.3f}: the best source-only checkpoint's plus {share_margin:g})"
      )
  return {
    "pair": pair.name,
    "seed": seed,
    "validator": validator,
    "lower_is_better": True,
    "chosen": {
      "candidate": choice.candidate,
      "method": method,
      "step": choice.step,
      "risk": choice.score,
      "why": why,
      "folder": str(chosen_dir),
      "source_val_accuracy": scored[choice.candidate][str(choice.step)].get("source_val_accuracy"),
      DRIFT: scored[choice.candidate][str(choice.step)].get(DRIFT),
      "target_accuracy": choice.target_accuracy,
    },
    "class_share_check": check,
    "source_only_source_val_accuracy": final_so_source,
    "source_only_target_accuracy": final_so,
    "candidates": rows,
    "failed": failed,
    "target_accuracy_note": "measured on labelled target test images after the choice, for reporting only; "
    "None where the target has no labels",
  }


def _acc(x) -> str:
  return "-" if x is None else f"{x:.4f}"


def markdown(report: dict, out: Path, seed: int) -> str:
  c = report["chosen"]
  lines = [
    f"# dann-jax adapt: {report['pair']}, seed {seed}",
    "",
    f"**Chosen: {c['candidate']} at step {c['step']}** ({c['method']}), kept in `{c['folder']}`.",
    "",
    f"Why: {c['why']}. Validator: {report['validator']} (a risk, lower is better), computed from source labels "
    "and unlabelled target images only.",
    "",
    f"Held-out source accuracy (label-free: source labels only): chosen {_acc(c.get('source_val_accuracy'))}, "
    f"source only (final checkpoint) {_acc(report.get('source_only_source_val_accuracy'))}.",
    "",
    f"Target accuracy (reported, never used to choose): chosen {_acc(c['target_accuracy'])}, source only "
    f"(final checkpoint) {_acc(report['source_only_target_accuracy'])}.",
    "",
    f"Class-share drift (label-free: predicted target class shares against source label shares, total "
    f"variation): chosen {_acc(c.get(DRIFT))}"
    + (
      ""
      if report.get("class_share_check") is None
      else f"; the class-share check kept DANN checkpoints up to {report['class_share_check']['bound']:.4f}"
    )
    + ".",
    "",
    f"![risk per checkpoint](scores_s{seed}.png)",
    "",
    "| candidate | lam_max | best risk (step) | final risk | source acc at best risk | class-share drift at best "
    "risk | target acc at best risk | final target acc | guard |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for name, r in report["candidates"].items():
    cps = r["checkpoints"]
    best = min(cps, key=lambda s: (np.isnan(cps[s]["risk"]), cps[s]["risk"]))
    last = max(cps, key=int)
    guard_words = ", ".join(f"{e['reason']}@{e['step']}" for e in r["guard_events"]) or "-"
    lines.append(
      f"| {name} | {r['lam_max']:g} | {cps[best]['risk']:.4f} ({best}) | {cps[last]['risk']:.4f} | "
      f"{_acc(cps[best].get('source_val_accuracy'))} | {_acc(cps[best].get(DRIFT))} | "
      f"{_acc(cps[best]['target_accuracy'])} | "
      f"{_acc(cps[last]['target_accuracy'])} | {guard_words} |"
    )
  for name, why in report["failed"].items():
    lines.append(f"| {name} | - | failed: {why} | | | | | | |")
  return "\n".join(lines) + "\n"
