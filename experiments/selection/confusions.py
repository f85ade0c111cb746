"""What a validator's choice gets wrong on a pair: the confusions behind a target accuracy.

For each seed, the checkpoint a validator keeps (`dann_jax.runner.choice.choose` on
the validator benchmark's scores, the rule `dann-jax adapt` applies) and the
source-only baseline (the quick preset's source-only run, final checkpoint) are
evaluated on the target test images: accuracy, mean confidence (top softmax
probability) on right and wrong predictions, the predicted class shares beside
the true ones, and the most frequent confusions. Target labels are read here
to explain a result after the fact; nothing is chosen with them.

Needs the benchmark's run folders (runs/selection/<pair>/, written by
`validator_bench.py train`). Run:
  python experiments/selection/confusions.py 'mnist->optdigits' --validator info-max
Prints markdown; --out writes it too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validator_bench import PAIR_NAMES, SEEDS, read_scores, run_dir  # noqa: E402

from dann_jax.data.pairs import PAIRS  # noqa: E402
from dann_jax.io import write_text_atomic  # noqa: E402
from dann_jax.names import DEFAULT_CRITERION  # noqa: E402
from dann_jax.runner.candidates import default_candidates  # noqa: E402
from dann_jax.runner.choice import choose  # noqa: E402

BASELINE = "so_lr1e-3"  # the quick preset's source-only run


def describe(logits: np.ndarray, labels: np.ndarray, num_classes: int, top: int = 4) -> dict:
  """Accuracy, confidence and confusions of `logits` against `labels` (numpy)."""
  shifted = logits - logits.max(-1, keepdims=True)
  prob = np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True)
  pred, conf = prob.argmax(-1), prob.max(-1)
  right = pred == labels
  counts = np.zeros((num_classes, num_classes), int)
  np.add.at(counts, (labels, pred), 1)
  off = counts.copy()
  np.fill_diagonal(off, 0)
  worst = np.argsort(-off.ravel(), kind="stable")[:top]
  return {
    "accuracy": float(right.mean()),
    "confidence_right": float(conf[right].mean()) if right.any() else float("nan"),
    "confidence_wrong": float(conf[~right].mean()) if (~right).any() else float("nan"),
    "predicted_share": np.bincount(pred, minlength=num_classes) / len(pred),
    "true_share": np.bincount(labels, minlength=num_classes) / len(labels),
    "confusions": [(int(i // num_classes), int(i % num_classes), int(off.ravel()[i])) for i in worst],
  }


def evaluate(pair: str, candidate: str, seed: int, step: int, data) -> dict:
  from dann_jax.runner.runs import load_run
  from dann_jax.training import checkpoint
  from dann_jax.training.evaluation import features

  folder = run_dir(pair, candidate, seed)
  if not (folder / "checkpoint").exists():
    raise SystemExit(f"{folder} has no checkpoints; run validator_bench.py train for {pair!r} seed {seed} first")
  run = load_run(folder, data=data)
  state = checkpoint.restore_checkpoint(folder / "checkpoint", run.state, step)
  test = run.data.target_test
  known = np.asarray(test.labels) >= 0
  logits = np.asarray(features(state, test.images[known], run.mean, "logits"))
  return describe(logits, np.asarray(test.labels)[known], logits.shape[-1])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("pair", choices=PAIR_NAMES)
  parser.add_argument("--validator", default=DEFAULT_CRITERION)
  parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
  parser.add_argument("--out", type=Path)
  args = parser.parse_args(argv)
  from dann_jax.data.pair_data import load_pair_data

  data = load_pair_data(PAIRS[args.pair])
  names = [c.name for c in default_candidates()]
  lines = [
    f"# {args.pair}: what the {args.validator} choice gets wrong",
    "",
    f"Command: `python experiments/selection/confusions.py '{args.pair}' --validator {args.validator}`. "
    "Target labels are read to explain the result only.",
    "",
    "| seed | model | target acc | confidence right / wrong | predicted share per class 0-9 (true share) "
    "| top confusions true->predicted (count) |",
    "|---|---|---|---|---|---|",
  ]
  for seed in args.seeds:
    scored = {n: read_scores(args.pair, n, seed) for n in names}
    if any(s is None for s in scored.values()):
      raise SystemExit(f"{args.pair} seed {seed} is not fully scored yet; run validator_bench.py train --score")
    choice = choose(scored, args.validator)
    baseline = (BASELINE, max(map(int, scored[BASELINE])))
    for label, (cand, step) in (
      ("source only", baseline),
      (f"{args.validator} choice", (choice.candidate, choice.step)),
    ):
      d = evaluate(args.pair, cand, seed, step, data)
      shares = " ".join(f"{p:.2f}" for p in d["predicted_share"])
      true = " ".join(f"{p:.2f}" for p in d["true_share"])
      confusions = ", ".join(f"{a}->{b} ({n})" for a, b, n in d["confusions"])
      lines.append(
        f"| {seed} | {label}: {cand}@{step} | {d['accuracy']:.3f} | {d['confidence_right']:.2f} / "
        f"{d['confidence_wrong']:.2f} | {shares} ({true}) | {confusions} |"
      )
  text = "\n".join(lines) + "\n"
  print(text, end="")
  if args.out:
    write_text_atomic(args.out, text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
