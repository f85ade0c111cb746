"""The quick Table 1 through `dann-jax adapt`: per pair and seed, the checkpoint the default validator keeps.

`dann_jax.runner.adapt.adapt` runs on the validator benchmark's run folders
(runs/selection/<pair>/, the same candidates, trained with the guard), so it
reuses their runs and cached scores and trains nothing new. The validator is
the default of experiments/results/selection/validators.json; beside it, the
table gives the accuracy under each pair's leave-one-pair-out validator (the
choice made without that pair's target labels).

Where a seed's run folders are gone but the benchmark kept their scores
(experiments/results/selection/scores/), the choice is made from those scores
with the same rule (`dann_jax.runner.choice.adapt_choice`, the source-only baseline
being the first source-only candidate's final checkpoint).

Run (after validator_bench.py train/score/report):
  python experiments/selection/adapt_table.py
Writes experiments/results/quick/adapt_table_3seeds.{json,md}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validator_bench import PAIR_NAMES, RESULTS, RUNS, SEEDS, archive_file, finished, run_dir  # noqa: E402

from dann_jax.data.pairs import PAIRS  # noqa: E402
from dann_jax.io import write_text_atomic  # noqa: E402
from dann_jax.runner.adapt import adapt  # noqa: E402
from dann_jax.runner.candidates import default_candidates  # noqa: E402
from dann_jax.runner.choice import adapt_choice  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "results" / "quick"


def main() -> int:
  from dann_jax.data.pair_data import load_pair_data

  bench = json.loads((RESULTS / "validators.json").read_text())
  default = bench["default"]
  earlier = OUT / "adapt_table_3seeds.json"
  kept = json.loads(earlier.read_text())["pairs"] if earlier.exists() else {}
  table = {"validator": default, "seeds": [], "pairs": {}}
  seeds_done = set()
  for name in PAIR_NAMES:
    # the validator chosen without this pair, on the measure of the checkpoints adapt compares
    measured = bench["pairs"].get(name, {})
    lopo = measured.get("lopo_validator_adapt_set", measured.get("lopo_validator"))
    data, entry = (
      None,
      {"source_only": [], "adapt": [], "chosen": [], "seeds": [], "lopo_validator": lopo, "adapt_lopo": []},
    )
    for seed in SEEDS:
      if all(finished(run_dir(name, c.name, seed)) for c in default_candidates()):
        data = data or load_pair_data(PAIRS[name])
        out = RUNS / name.replace("->", "_to_")
        quiet = dict(out_dir=out, seed=seed, data=data, progress=False, log=lambda line: None)
        report = adapt(PAIRS[name], validator=default, **quiet)
        so, chosen = report["source_only_target_accuracy"], report["chosen"]
        picked = (chosen["target_accuracy"], f"{chosen['candidate']}@{chosen['step']}")
        if lopo is not None:
          entry["adapt_lopo"].append(adapt(PAIRS[name], validator=lopo, **quiet)["chosen"]["target_accuracy"])
          if lopo != default:  # leave the folder's report on the default validator
            adapt(PAIRS[name], validator=default, **quiet)
      elif all(archive_file(name, c.name, seed).exists() for c in default_candidates()):
        scored = {c.name: json.loads(archive_file(name, c.name, seed).read_text()) for c in default_candidates()}
        so = final_source_only(scored)
        choice, _ = adapt_choice(scored, default, default_candidates())
        picked = (choice.target_accuracy, f"{choice.candidate}@{choice.step}")
        if lopo is not None:
          entry["adapt_lopo"].append(adapt_choice(scored, lopo, default_candidates())[0].target_accuracy)
      else:
        continue
      entry["seeds"].append(seed)
      entry["source_only"].append(so)
      entry["adapt"].append(picked[0])
      entry["chosen"].append(picked[1])
      seeds_done.add(seed)
    if not entry["seeds"] and name in kept:
      # Neither run folders nor archived scores here: the earlier table's entry stands (same code, same seeds).
      entry = {**kept[name], "from_earlier_table": True}
      seeds_done.update(entry["seeds"])
    if entry["seeds"]:
      so, ad = np.array(entry["source_only"]), np.array(entry["adapt"])
      entry["bar_met"] = bool(ad.mean() >= so.mean() and np.all(ad >= so - 0.01))
      table["pairs"][name] = entry
  table["seeds"] = sorted(seeds_done)
  OUT.mkdir(parents=True, exist_ok=True)
  write_text_atomic(OUT / "adapt_table_3seeds.json", json.dumps(table, indent=2))
  write_text_atomic(OUT / "adapt_table_3seeds.md", markdown(table))
  print(markdown(table))
  return 0


def final_source_only(scored: dict[str, dict]) -> float:
  """The target accuracy of the first source-only candidate's final checkpoint (as `adapt` reports it)."""
  first = next(c.name for c in default_candidates() if not c.adapts)
  steps = scored[first]
  return steps[str(max(map(int, steps)))]["target_accuracy"]


def _cell(xs) -> str:
  xs = np.asarray(xs, np.float64)
  return f"{xs.mean():.4f} ± {xs.std():.4f} ({'/'.join(f'{x:.3f}' for x in xs)})"


def markdown(table: dict) -> str:
  lines = [
    "# Quick Table 1 through `dann-jax adapt`",
    "",
    "Command: `python experiments/selection/adapt_table.py` (after `experiments/selection/validator_bench.py`).",
    "",
    f"Per pair and seed, `dann-jax adapt` trains the eight candidates (source only and DANN at lam_max 0.1 / 0.3 / "
    f"1, learning rates 1e-3 and 3e-4, quick preset, guard on), chooses the learning rate on held-out source "
    "images (the one whose source-only candidate errs least there) and keeps the checkpoint of its candidates "
    f"with the lowest **{table['validator']}** risk. Target test accuracy is read after the choice. Source only is the quick "
    "preset's source-only run (final checkpoint). `bar`: adapt mean ≥ source-only mean and no seed more than .01 "
    "below its own source-only run. `leave-one-pair-out`: the same with the validator the benchmark picks "
    "without this pair (on the checkpoints adapt compares). A pair marked (earlier table) keeps the previous table's entry: its run folders and "
    "scores were not kept here (retraining it, same seeds, gives the same numbers).",
    "",
    "| pair | seeds | source only | adapt | chosen | bar | leave-one-pair-out validator: adapt |",
    "|---|---|---|---|---|---|---|",
  ]
  for name, e in table["pairs"].items():
    lopo = "-" if not e["adapt_lopo"] else f"{e['lopo_validator']}: {_cell(e['adapt_lopo'])}"
    earlier = " (earlier table)" if e.get("from_earlier_table") else ""
    lines.append(
      f"| {name}{earlier} | {e['seeds']} | {_cell(e['source_only'])} | {_cell(e['adapt'])} | {', '.join(e['chosen'])} | "
      f"{'met' if e['bar_met'] else 'NOT met'} | {lopo} |"
    )
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  sys.exit(main())
