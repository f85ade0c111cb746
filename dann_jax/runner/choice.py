"""Scoring every checkpoint of a run with label-free validators, and choosing one.

`score_checkpoints` scores each evaluation checkpoint of a run folder on a
seeded label-free view (source train, held-out source and target train
images) and caches the scores in the folder; `choose` takes the checkpoint
with the lowest risk, optionally under the class-share check;
`settings_on_source` first chooses the candidates' training setting (the
learning rate of the default grid) on held-out source images, and
`adapt_choice` is the two together, the rule of `dann-jax adapt`
(`dann_jax.runner.adapt`). Target labels are read only after scoring, to
report accuracy.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dann_jax.io import write_text_atomic
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


@dataclasses.dataclass(frozen=True)
class SettingChoice:
  """The training setting chosen on held-out source images.

  Attributes:
    source_error: per setting, named by its source-only candidate: that
      candidate's lowest held-out source error over its checkpoints.
    kept: the candidates of the chosen setting, in the order given.
    left_out: the other candidates.
  """

  source_error: dict[str, float]
  kept: tuple[str, ...]
  left_out: tuple[str, ...]


def settings_on_source(scored: dict[str, dict], candidates: Sequence) -> SettingChoice:
  """Chooses the training setting by the source-only candidates' held-out source error.

  A training setting is what a candidate overrides besides its adaptation
  strength (`Candidate.setting`: the learning rate of the default grid). How
  well a setting trains the network is a question the source labels answer,
  so each setting is judged by its own source-only candidate: the lowest
  held-out source error over that candidate's checkpoints. The setting(s)
  with the lowest error are kept; the validator then compares adaptation
  strengths and checkpoints within them. Without this step a confidence-based
  validator may prefer a setting that fits the source worse but predicts the
  target more confidently.

  A setting with no scored source-only candidate (none given, or it failed)
  has no source measure and is left out, unless no setting has one: then
  every candidate is kept.

  Args:
    scored: candidate name -> `score_checkpoints` output (its entries'
      `source_val_accuracy` is read).
    candidates: the `Candidate`s; those not in `scored` are ignored.
  """
  present = [c for c in candidates if c.name in scored]
  judged = {}  # setting -> (its source-only candidate, that candidate's lowest held-out source error)
  for c in present:
    if not c.adapts and c.setting not in judged:
      acc = [e.get("source_val_accuracy") for e in scored[c.name].values()]
      acc = [a for a in acc if a is not None and not np.isnan(a)]
      if acc:
        judged[c.setting] = (c.name, 1.0 - max(acc))
  if not judged:
    return SettingChoice({}, tuple(c.name for c in present), ())
  best = min(e for _, e in judged.values())
  kept = tuple(c.name for c in present if c.setting in judged and judged[c.setting][1] == best)
  left_out = tuple(c.name for c in present if c.name not in kept)
  return SettingChoice(dict(judged.values()), kept, left_out)


def source_error_words(source_error: dict[str, float]) -> str:
  """`SettingChoice.source_error` as words for logs and reports: "so_lr1e-3 0.0105, so_lr3e-4 0.0160"."""
  return ", ".join(f"{name} {error:.4f}" for name, error in source_error.items())


def adapt_choice(
  scored: dict[str, dict],
  validator: str,
  candidates: Sequence,
  *,
  source_setting: bool = True,
  share_margin: float | None = None,
) -> tuple[Choice, SettingChoice | None]:
  """`dann-jax adapt`'s rule: the training setting on held-out source images (`settings_on_source`, unless
  `source_setting` is False), then the checkpoint with the lowest risk among its candidates (`choose`).

  Returns:
    The choice and the setting choice (None when `source_setting` is False).
  """
  setting = settings_on_source(scored, candidates) if source_setting else None
  kept = {n: s for n, s in scored.items() if setting is None or n in setting.kept}
  source_only = [c.name for c in candidates if not c.adapts and c.name in kept]
  return choose(kept, validator, share_margin=share_margin, source_only=source_only), setting


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
  """Raises ValueError unless `share_margin` is None or a number >= 0."""
  if share_margin is not None and not share_margin >= 0:
    raise ValueError(f"{share_margin=} must be a number >= 0 (the tolerated rise of the class-share drift), or None")
