"""The report of `dann-jax adapt`: the choice and why, every candidate's scores, as JSON and markdown.

`build_report` gathers what `dann_jax.runner.adapt.adapt` decided into the
dictionary written to `adapt_s<seed>.json`; `markdown` renders it as
`report_s<seed>.md`. Target accuracies appear only where the target has
labels, and are marked as reported, never used.
"""

from __future__ import annotations

import numpy as np

from dann_jax.runner.choice import DRIFT, share_bound, source_error_words


def build_report(
  pair,
  seed,
  validator,
  share_margin,
  candidates,
  scored,
  trained,
  failed,
  choice,
  chosen_dir,
  setting=None,
  skipped=None,
) -> dict:
  """The report `adapt` writes to `adapt_s<seed>.json`.

  Args:
    pair: the adaptation pair.
    seed: the candidates' seed.
    validator: the criterion that chose.
    share_margin: the class-share check's margin, or None.
    candidates: the candidates asked for (`Candidate`s).
    scored: candidate name -> `choice.score_checkpoints` output, for those trained.
    trained: candidate name -> (run folder, run summary).
    failed: candidate name -> why it was left out.
    choice: the `choice.Choice` made.
    chosen_dir: where the chosen checkpoint was kept.
    setting: the `choice.SettingChoice` made on held-out source images, or None (every candidate compared).
    skipped: candidate name -> why it was not trained (its training setting lost on held-out source images).

  Returns:
    The choice and why, every checkpoint's risk, drift and (reported only) target accuracy, and the candidates
    left out.
  """
  by_name = {c.name: c for c in candidates}
  compared = {n: s for n, s in scored.items() if setting is None or n in setting.kept}
  best_so = min(
    (
      e["scores"][validator]
      for name, steps in compared.items()
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
      "compared": name in compared,  # False: its training setting lost on held-out source images
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
    f"lowest {validator} risk ({choice.score:.4f}) of the {sum(len(s) for s in compared.values())} checkpoints of "
    f"{len(compared)} candidates"
  )
  if adapts and best_so is not None:
    why += f"; the best source-only checkpoint scored {best_so:.4f}, so the validator ranks this DANN above source only"
  elif not adapts:
    why += "; no DANN checkpoint scored better, so no adaptation is the choice"
  check = None
  if share_margin is not None:
    bound = share_bound(compared, validator, share_margin, [n for n in compared if not by_name[n].adapts])
    # Whatever outscored the choice was left out by the check (source-only checkpoints never are).
    left_out = sorted(
      (name, int(step))
      for name, steps in compared.items()
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
  setting_check = None
  if setting is not None and setting.left_out:
    why = (
      "training setting chosen on held-out source images (lowest source-only error: "
      f"{source_error_words(setting.source_error)}), leaving out "
      f"{', '.join(setting.left_out)}; then " + why
    )
  if setting is not None:
    setting_check = {
      "source_error": setting.source_error,
      "kept": list(setting.kept),
      "left_out": list(setting.left_out),
    }
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
    "setting_check": setting_check,
    "source_only_source_val_accuracy": final_so_source,
    "source_only_target_accuracy": final_so,
    "candidates": rows,
    "failed": failed,
    "not_trained": dict(skipped or {}),
    "target_accuracy_note": "measured on labelled target test images after the choice, for reporting only; "
    "None where the target has no labels",
  }


def _acc(x) -> str:
  return "-" if x is None else f"{x:.4f}"


def markdown(report: dict, seed: int) -> str:
  """`report` (from `build_report`) as the page `adapt` writes to `report_s<seed>.md`."""
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
    *_setting_lines(report.get("setting_check")),
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
    name = name if r.get("compared", True) else f"{name} (setting left out)"
    lines.append(
      f"| {name} | {r['lam_max']:g} | {cps[best]['risk']:.4f} ({best}) | {cps[last]['risk']:.4f} | "
      f"{_acc(cps[best].get('source_val_accuracy'))} | {_acc(cps[best].get(DRIFT))} | "
      f"{_acc(cps[best]['target_accuracy'])} | "
      f"{_acc(cps[last]['target_accuracy'])} | {guard_words} |"
    )
  for name, why in report["failed"].items():
    lines.append(f"| {name} | - | failed: {why} | | | | | | |")
  for name, why in report.get("not_trained", {}).items():
    lines.append(f"| {name} | - | not trained: {why} | | | | | | |")
  return "\n".join(lines) + "\n"


def _setting_lines(check: dict | None) -> list[str]:
  if check is None:
    return []
  left = ", ".join(check["left_out"]) or "none"
  return [
    "Training setting (chosen on held-out source images, by each setting's source-only error: "
    f"{source_error_words(check['source_error'])}): "
    f"compared {', '.join(check['kept'])}; left out {left}.",
    "",
  ]
