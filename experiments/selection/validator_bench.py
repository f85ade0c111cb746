"""Validator benchmark: how well does each label-free validator track target accuracy?

Every candidate of `dann_jax.runner.candidates.default_candidates()` (source only and
DANN at λ_max 0.1 / 0.3 / 1, two learning rates, quick preset budget) is
trained on each offline pair and seed; every evaluation checkpoint is then
scored by every validator of `dann_jax.validation.selection` and its target test
accuracy is measured beside the scores (for the report only). The report
gives, per pair and validator, the Spearman and weighted Spearman correlation
between -risk and target accuracy (over every checkpoint, and over the
checkpoints `dann-jax adapt` compares: those of the learning rate chosen on
held-out source images), the accuracy of the checkpoint adapt keeps with that
validator per seed, its gain over source only and its regret against the best
checkpoint; the default validator is chosen leave-one-pair-out.

Run (each step resumes where it stopped; run.json / checkpoints / scores.json
are reused):
  python experiments/selection/validator_bench.py train --score   # or train, then score
  python experiments/selection/validator_bench.py score
  python experiments/selection/validator_bench.py report

Runs go to runs/selection/<pair>/<candidate>_s<seed>/; each run's scores are
also kept in experiments/results/selection/scores/<pair>/<candidate>_s<seed>.json
(small, tracked), so the report can be rebuilt without the run folders. The
report goes to experiments/results/selection/validators.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from dann_jax.data.pairs import PAIRS
from dann_jax.runner.candidates import default_candidates
from dann_jax.runner.choice import VIEW_SIZES, adapt_choice, settings_on_source

PAIR_NAMES = (
  "mnist->mnist-m",
  "syn-digits->mnist",
  "mnist->optdigits",
  "mnist->mnist-max-bg",
  "mnist->mnist-dilated",
)
SEEDS = (0, 1, 2)
REVERSE = "reverse-validation"  # scored on each run's final checkpoint only: it trains a model per score
RUNS = Path("runs/selection")
RESULTS = Path(__file__).resolve().parents[1] / "results" / "selection"
ARCHIVE = RESULTS / "scores"


def run_dir(pair: str, candidate: str, seed: int) -> Path:
  return RUNS / pair.replace("->", "_to_") / f"{candidate}_s{seed}"


def archive_file(pair: str, candidate: str, seed: int) -> Path:
  return ARCHIVE / pair.replace("->", "_to_") / f"{candidate}_s{seed}.json"


def read_scores(pair: str, candidate: str, seed: int) -> dict | None:
  """A run's scores: its folder's scores.json once the run is finished, else the archived copy, else None."""
  folder = run_dir(pair, candidate, seed)
  for f in (folder / "scores.json", archive_file(pair, candidate, seed)):
    if f.exists() and (f.parent != folder or finished(folder)):
      return json.loads(f.read_text())
  return None


def finished(folder: Path) -> bool:
  return (folder / "summary.json").exists() or (folder / "diverged.json").exists()


def train(args) -> None:
  """Trains every (seed, pair, candidate) run not yet finished, seed by seed; with
  `args.score`, scores each run's checkpoints right after it is trained."""
  from dann_jax.data.pair_data import load_pair_data
  from dann_jax.runner.runs import train_or_reuse

  for seed in args.seeds:
    for name in args.pairs:
      data = None  # one pair's images in memory at a time
      for cand in default_candidates():
        folder = run_dir(name, cand.name, seed)
        if not finished(folder) and archive_file(name, cand.name, seed).exists():
          continue  # scored in an earlier session whose run folder is gone
        if not finished(folder):
          data = data or load_pair_data(PAIRS[name])
          t0 = time.perf_counter()
          try:
            train_or_reuse(
              PAIRS[name],
              cand.method,
              folder,
              preset="quick",
              seeds=[seed],
              overrides=dict(cand.overrides),
              data=data,
              progress=False,
            )
            status = "trained"
          except FloatingPointError as e:  # dann_jax.training.loop.Diverged: its checkpoints stay to be scored
            status = f"diverged ({e})"
          print(f"{name} {cand.name} s{seed}: {status} in {time.perf_counter() - t0:.0f} s", flush=True)
        data = data or load_pair_data(PAIRS[name])
        trip = unguarded_trips(folder, data) if finished(folder) else None
        if trip is not None:
          print(f"warning: {folder} was trained without the guard, which would have tripped at step {trip}", flush=True)
        if args.score:
          score_run(folder, data, archive_file(name, cand.name, seed))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("command", choices=("train", "score", "report"))
  parser.add_argument("--pairs", nargs="+", default=list(PAIR_NAMES), choices=list(PAIR_NAMES))
  parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
  parser.add_argument("--score", action="store_true", help="train: score each run right after training it")
  args = parser.parse_args(argv)
  {"train": train, "score": score, "report": report}[args.command](args)
  return 0


def score_run(folder: Path, data, archive: Path) -> None:
  """Scores every checkpoint of a finished run by every validator but reverse validation, and its final
  checkpoint by reverse validation too (cached in scores.json); keeps a copy of the scores in `archive`."""
  from dann_jax.io import write_text_atomic
  from dann_jax.runner.choice import score_checkpoints
  from dann_jax.validation.selection import OUTPUT_VALIDATORS

  if finished(folder):
    t0 = time.perf_counter()
    scores = score_checkpoints(folder, data, list(OUTPUT_VALIDATORS))
    if add_reverse_validation(folder, data, scores):
      write_text_atomic(folder / "scores.json", json.dumps(scores, indent=1))
    archive.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(archive, json.dumps(scores, indent=1))
    print(f"{folder}: scored in {time.perf_counter() - t0:.0f} s", flush=True)


def add_reverse_validation(folder: Path, data, scores: dict) -> bool:
  """Adds reverse validation's risk of the run's final checkpoint to `scores` (in place), training its reverse
  model for `REVERSE_STEPS` steps as `dann-jax select` does; False when it was already there."""
  from dann_jax.core import networks
  from dann_jax.runner.presets import config_of
  from dann_jax.runner.ranking import REVERSE_STEPS
  from dann_jax.runner.runs import load_run
  from dann_jax.training import checkpoint
  from dann_jax.validation import selection

  last = max(scores, key=int)
  entry = scores[last]["scores"]
  if REVERSE in entry:
    return False
  result = load_run(folder, data=data)
  config = config_of(result.identity)
  state = checkpoint.restore_checkpoint(folder / "checkpoint", result.state, int(last))
  entry[REVERSE] = selection.score_state(
    state,
    selection.selection_set(result.data, result.mean, **VIEW_SIZES),
    REVERSE,
    reverse_config=config.train,
    reverse_model=networks.build(config.network, result.data.source_train.num_classes),
    reverse_steps=REVERSE_STEPS,
    seed=config.train.seed,
  )
  return True


def unguarded_trips(folder: Path, data) -> int | None:
  """For a run trained without the guard: the step at which the guard would have tripped, or None.

  A guarded run that never trips takes exactly the unguarded run's steps, so
  such a run stands for the guarded one."""
  from dann_jax.runner.folder import read_metrics
  from dann_jax.training.guard import GuardConfig, collapse_start
  from dann_jax.training.health import chance_loss

  if "guard" in json.loads((folder / "run.json").read_text()):
    return None
  rows = read_metrics(folder / "metrics.jsonl")
  return collapse_start(
    [r["step"] for r in rows],
    [r["label_loss"] for r in rows],
    chance_loss(data.source_train.labels),
    GuardConfig().patience,
  )


def score(args) -> None:
  """Scores every finished run's checkpoints (resumes from each run's scores.json)."""
  from dann_jax.data.pair_data import load_pair_data

  for name in args.pairs:
    data = None
    for seed in args.seeds:
      for cand in default_candidates():
        folder = run_dir(name, cand.name, seed)
        if finished(folder):
          data = data or load_pair_data(PAIRS[name])
          score_run(folder, data, archive_file(name, cand.name, seed))


def load_rows(pairs, seeds) -> list[dict]:
  """One row per scored checkpoint: pair, seed, candidate, lam_max, step, scores, accuracies."""
  rows = []
  for name in pairs:
    for seed in seeds:
      for cand in default_candidates():
        scores = read_scores(name, cand.name, seed)
        if scores is None:
          continue
        for step, r in scores.items():
          rows.append(
            {"pair": name, "seed": seed, "candidate": cand.name, "lam_max": cand.lam_max, "step": int(step), **r}
          )
  return rows


SOURCE_ONLY = "so_lr1e-3"  # the quick preset's own source-only run, the baseline


# The report's two correlation measures: (the key in each validator's entry, the suffix of the summary keys
# computed from it): over every checkpoint, and over the checkpoints `dann-jax adapt` compares.
MEASURES = (("weighted_spearman", ""), ("weighted_spearman_adapt_set", "_adapt_set"))


def correlations(entries, key: str) -> dict[str, dict[str, float]]:
  """Pair -> validator -> its `key` measure, from (pair, entry) items; a validator without that measure is left out."""
  return {name: {c: v[key] for c, v in e["validators"].items() if key in v} for name, e in entries}


def final_row(rows: list[dict], candidate: str) -> dict | None:
  mine = [r for r in rows if r["candidate"] == candidate]
  return max(mine, key=lambda r: r["step"], default=None)


def summarize(rows: list[dict], pairs, seeds, kept: dict | None = None) -> dict:
  """Per pair and validator, the measures of the report; the default validator and each pair's
  leave-one-pair-out choice over every measured pair.

  `kept`: pair entries of an earlier report, used for pairs that have no scored row here (their run
  folders and scores were not kept); they are marked `"from_earlier_report": true`.
  """
  from dann_jax.validation.selection import leave_one_out_choice, weighted_spearman

  criteria = [c for c in dict.fromkeys(c for r in rows for c in r["scores"]) if c != REVERSE]
  out = {"pairs": {}}
  for name in pairs:
    per_seed = {s: [r for r in rows if r["pair"] == name and r["seed"] == s] for s in seeds}
    # A seed counts once all its candidates are scored; one with some but not all is named in the report.
    wanted = [c.name for c in default_candidates()]
    have_scored = {s: {r["candidate"] for r in rs} for s, rs in per_seed.items() if rs}
    missing = {s: [c for c in wanted if c not in have] for s, have in have_scored.items()}
    complete = [s for s in missing if not missing[s]]
    incomplete = {str(s): m for s, m in missing.items() if m}
    if not complete:
      if incomplete:
        out.setdefault("incomplete", {})[name] = incomplete
      continue
    so = [final_row(per_seed[s], SOURCE_ONLY)["target_accuracy"] for s in complete]
    best = [max(r["target_accuracy"] for r in per_seed[s]) for s in complete]
    entry = {
      "seeds": complete,
      "checkpoints_per_seed": len(per_seed[complete[0]]),
      "source_only": so,
      "best_checkpoint": best,
      "validators": {},
    }
    if incomplete:
      entry["incomplete_seeds"] = incomplete  # candidates not scored, per seed left out
    # The checkpoints `dann-jax adapt` compares: those of the training setting (learning rate) chosen on held-out
    # source images.
    scored, compared = {}, {}
    for s in complete:
      for r in per_seed[s]:
        scored.setdefault(s, {}).setdefault(r["candidate"], {})[str(r["step"])] = r
      names = settings_on_source(scored[s], default_candidates()).kept
      compared[s] = [r for r in per_seed[s] if r["candidate"] in names]
    entry["adapt_set"] = {str(s): sorted({r["candidate"] for r in compared[s]}) for s in complete}
    for c in criteria:
      sp, wsp, wsp_set, selected, chosen = [], [], [], [], []
      for s in complete:
        rs = per_seed[s]
        risk = np.array([r["scores"][c] for r in rs])
        acc = np.array([r["target_accuracy"] for r in rs])
        sp.append(weighted_spearman(risk, acc, power=0))
        wsp.append(weighted_spearman(risk, acc))
        risk = np.array([r["scores"][c] for r in compared[s]])
        wsp_set.append(weighted_spearman(risk, np.array([r["target_accuracy"] for r in compared[s]])))
        p, _ = adapt_choice(scored[s], c, default_candidates())  # the checkpoint adapt would keep with c
        selected.append(p.target_accuracy)
        chosen.append(f"{p.candidate}@{p.step}")
      entry["validators"][c] = {
        "spearman": float(np.nanmean(sp)),
        "weighted_spearman": float(np.nanmean(wsp)),
        "weighted_spearman_adapt_set": float(np.nanmean(wsp_set)),
        "selected": selected,
        "chosen": chosen,
        "gain_over_source_only": float(np.mean(np.array(selected) - np.array(so))),
        "regret": float(np.mean(np.array(best) - np.array(selected))),
      }
    entry["final_checkpoints"] = final_checkpoints(per_seed, complete, [*criteria, REVERSE])
    out["pairs"][name] = entry
  for name, entry in (kept or {}).items():
    if name not in out["pairs"] and name in pairs:
      out["pairs"][name] = {**entry, "from_earlier_report": True}
  measured = out["pairs"]
  if len(measured) >= 2:
    from dann_jax.names import DEFAULT_CRITERION

    for key, suffix in MEASURES:
      # (a pair kept from an earlier report may lack the measure)
      corr = {p: v for p, v in correlations(measured.items(), key).items() if v}
      if len(corr) < 2:
        continue
      lopo = leave_one_out_choice(corr)
      for p in corr:
        measured[p]["lopo_validator" + suffix] = lopo[p]
      out["mean_weighted_spearman" + suffix] = {c: float(np.mean([corr[p][c] for p in corr])) for c in criteria}
      out["lopo_weighted_spearman" + suffix] = float(np.mean([corr[p][lopo[p]] for p in corr]))
    out["best"] = max(criteria, key=lambda c: out["mean_weighted_spearman"][c])
    out["default"] = DEFAULT_CRITERION  # what `dann-jax adapt` and `select` use
  return out


def final_checkpoints(per_seed: dict, seeds, criteria) -> dict:
  """Per validator, measured over each candidate's final checkpoint only (one per candidate), on the seeds
  whose every final checkpoint it scored (reverse validation scores only those): weighted Spearman against
  target accuracy and the accuracy of the candidate it picks."""
  from dann_jax.validation.selection import weighted_spearman

  out = {}
  for c in criteria:
    wsp, selected, used = [], [], []
    for s in seeds:
      finals = [final_row(per_seed[s], cand.name) for cand in default_candidates()]
      if not all(c in f["scores"] for f in finals):
        continue
      risk = np.array([f["scores"][c] for f in finals], np.float64)
      acc = np.array([f["target_accuracy"] for f in finals])
      wsp.append(weighted_spearman(risk, acc))
      # the candidate `dann-jax adapt` would keep among these checkpoints
      p, _ = adapt_choice({f["candidate"]: {str(f["step"]): f} for f in finals}, c, default_candidates())
      selected.append(p.target_accuracy)
      used.append(s)
    if used:
      out[c] = {"seeds": used, "weighted_spearman": float(np.nanmean(wsp)), "selected": selected}
  return out


def report(args) -> None:
  from dann_jax.io import write_text_atomic

  rows = load_rows(args.pairs, args.seeds)
  if not rows:
    raise SystemExit("no scored checkpoints yet: run `train` and `score` first")
  earlier = RESULTS / "validators.json"
  kept = json.loads(earlier.read_text())["pairs"] if earlier.exists() else {}
  table = summarize(rows, args.pairs, args.seeds, kept)
  table["protocol"] = {
    "candidates": {c.name: {"method": c.method, **c.overrides} for c in default_candidates()},
    "preset": "quick (3,000 steps, Adam b1 = 0.5, 5,000 source images held out), checkpoints every 300 steps",
    "view": VIEW_SIZES,
    "guard": "every candidate trained with dann_jax.training.guard on, as dann-jax adapt trains them",
    "reverse_validation": "scored on each candidate's final checkpoint only (it trains a reverse model, 1,000 steps, per score), so it appears in final_checkpoints (one checkpoint per candidate), beside every other validator measured the same way; not in the per-checkpoint tables",
    "weighted_spearman": "weighted Pearson correlation of the ranks of -risk and target accuracy, weights (accuracy rank / N)^2, per seed over its checkpoints, averaged over seeds",
    "default": "the library's default validator (dann_jax.names.DEFAULT_CRITERION), which dann-jax adapt uses; best: the validator with the best weighted Spearman averaged over the measured pairs; per pair, lopo_validator is the choice made without that pair. The default was set to the best once every pair had three seeds measured",
    "earlier_report": "pairs marked from_earlier_report keep the entry of the previous report: their scores were measured by the same code but neither their run folders nor their per-checkpoint scores were kept; retraining them (same seeds, same numbers) replaces the entry",
  }
  RESULTS.mkdir(parents=True, exist_ok=True)
  write_text_atomic(RESULTS / "validators.json", json.dumps(table, indent=2))
  write_text_atomic(RESULTS / "validators.md", markdown(table))
  print(markdown(table))


def _accs(xs) -> str:
  return f"{np.mean(xs):.4f} ({'/'.join(f'{x:.3f}' for x in xs)})"


def _sets(adapt_set: dict) -> str:
  """Per seed, the learning rates of the candidates adapt compared, e.g. "lr1e-3 (seeds 0, 1, 2)"."""
  by_rate = {}
  for seed, names in adapt_set.items():
    rates = ", ".join(sorted({n.rsplit("_", 1)[-1] for n in names}))
    by_rate.setdefault(rates, []).append(seed)
  return "; ".join(f"{r} (seeds {', '.join(s)})" for r, s in by_rate.items()) or "-"


def markdown(table: dict) -> str:
  lines = [
    "# Label-free validators against target accuracy",
    "",
    "Command: `python experiments/selection/validator_bench.py train && python experiments/selection/validator_bench.py score && python experiments/selection/validator_bench.py report`",
    "",
    f"Candidates (quick preset budget): {', '.join(table['protocol']['candidates'])}; every evaluation checkpoint "
    "(every 300 steps) of every candidate is scored. Risks are label-free; target test accuracy is measured beside "
    "them for this report only. `selected` is the target accuracy, per seed, of the checkpoint `dann-jax adapt` "
    "keeps with that validator: the learning rate is chosen first on held-out source images (the one whose "
    "source-only candidate errs least there), then the checkpoint with the lowest risk among that learning rate's "
    "candidates (its *set*). Gain is over the quick preset's source-only run (final checkpoint); regret is against "
    "the best checkpoint. Weighted Spearman is measured over every checkpoint and over the set alone. "
    "Reverse validation trains a model per score, so it scores each candidate's final checkpoint only: it is "
    "compared with the others on those checkpoints in the last table.",
    "",
  ]
  if "default" in table:
    mean_all, mean_set = table["mean_weighted_spearman"], table.get("mean_weighted_spearman_adapt_set", {})
    lines += [
      f"**Best validator: {table['best']}** (weighted Spearman averaged over the measured pairs, "
      f"{mean_all[table['best']]:.3f}); the library's default, used by `dann-jax adapt`: "
      f"**{table['default']}** ({mean_all[table['default']]:.3f} over every checkpoint"
      + (f", {mean_set[table['default']]:.3f} over adapt's set" if mean_set else "")
      + "), set to the best once every pair had three seeds. "
      f"Leave-one-pair-out (each pair's validator chosen from the other pairs, without its own target labels): "
      f"mean weighted Spearman {table['lopo_weighted_spearman']:.3f} over every checkpoint"
      + (
        f", {table['lopo_weighted_spearman_adapt_set']:.3f} over adapt's set"
        if "lopo_weighted_spearman_adapt_set" in table
        else ""
      )
      + ".",
      "",
      "| validator | mean weighted Spearman, every checkpoint | over adapt's set |",
      "|---|---|---|",
      *[
        f"| {c} | {v:.3f} | {mean_set[c]:.3f} |" if c in mean_set else f"| {c} | {v:.3f} | - |"
        for c, v in sorted(mean_all.items(), key=lambda kv: -kv[1])
      ],
      "",
    ]
  for name, e in table["pairs"].items():
    lines += [
      f"## {name}",
      "",
      (
        "(Kept from the previous report: its per-checkpoint scores were not archived.) "
        if e.get("from_earlier_report")
        else ""
      )
      + f"Seeds {e['seeds']}, {e['checkpoints_per_seed']} checkpoints per seed. Source only {_accs(e['source_only'])}; "
      f"best checkpoint (oracle) {_accs(e['best_checkpoint'])}; chosen without this pair: "
      f"**{e.get('lopo_validator', '-')}** (every checkpoint), **{e.get('lopo_validator_adapt_set', '-')}** "
      f"(adapt's set). Adapt's set: {_sets(e.get('adapt_set', {}))}."
      + "".join(f" Seed {s} left out: {', '.join(m)} not scored." for s, m in e.get("incomplete_seeds", {}).items()),
      "",
      "| validator | Spearman | weighted Spearman | weighted Spearman, adapt's set | selected | gain | regret | "
      "chosen |",
      "|---|---|---|---|---|---|---|---|",
    ]
    for c, v in e["validators"].items():
      in_set = f"{v['weighted_spearman_adapt_set']:+.3f}" if "weighted_spearman_adapt_set" in v else "-"
      lines.append(
        f"| {c} | {v['spearman']:+.3f} | {v['weighted_spearman']:+.3f} | {in_set} | {_accs(v['selected'])} | "
        f"{v['gain_over_source_only']:+.4f} | {v['regret']:.4f} | {', '.join(v['chosen'])} |"
      )
    lines.append("")
  for name, seeds in table.get("incomplete", {}).items():
    lines += [
      f"## {name}",
      "",
      "No seed has every candidate scored yet: "
      + "; ".join(f"seed {s} lacks {', '.join(m)}" for s, m in seeds.items())
      + ".",
      "",
    ]
  finals = {n: e["final_checkpoints"] for n, e in table["pairs"].items() if e.get("final_checkpoints")}
  if finals:
    names = list(dict.fromkeys(c for f in finals.values() for c in f))
    lines += [
      "## Final checkpoints only (one per candidate; reverse validation included)",
      "",
      "Weighted Spearman over the eight final checkpoints, and the target accuracy of the candidate picked, "
      "averaged over the seeds shown.",
      "",
      "| validator | " + " | ".join(finals) + " |",
      "|---|" + "---|" * len(finals),
    ]
    for c in names:
      cells = [
        f"{f[c]['weighted_spearman']:+.3f} / {np.mean(f[c]['selected']):.3f} (seeds {f[c]['seeds']})" if c in f else "-"
        for f in finals.values()
      ]
      lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


if __name__ == "__main__":
  sys.exit(main())
