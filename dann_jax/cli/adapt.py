"""`dann-jax adapt --source S --target T`: train the candidates, choose one without target labels, report."""

from __future__ import annotations

from dann_jax.cli.domains import add_domain_arguments, split_flags
from dann_jax.data.pairs import get_pair
from dann_jax.names import CRITERIA, DEFAULT_CRITERION

# Validators adapt can rank by: every one but reverse validation, which
# trains a model per checkpoint.
VALIDATORS = tuple(c for c in CRITERIA if c != "reverse-validation")


def register(subparsers) -> None:
  p = subparsers.add_parser(
    "adapt",
    help="adapt to an unlabelled target: train candidates, choose one without target labels",
    description="Train source only at learning rates 1e-3 and 3e-4 (quick preset, --steps each, guard on), keep "
    "the learning rate whose source-only run errs least on held-out source images, train DANN there at lam_max "
    "0.1, 0.3 and 1, score every evaluation checkpoint of those four candidates with a label-free validator, and "
    "keep the one with the lowest risk. Source only is a candidate: a DANN is kept only if the validator ranks it "
    "above source only. Writes OUT/chosen_s<seed>/ (a run folder), OUT/report_s<seed>.md, OUT/adapt_s<seed>.json "
    "and OUT/scores_s<seed>.png; target accuracy is reported only where the target has labels, and never used. A "
    "repeated command reuses finished candidates.",
  )
  add_domain_arguments(p)
  p.add_argument("--out", default="runs/adapt", help="folder to write (default runs/adapt)")
  p.add_argument("--seed", type=int, default=0, help="seed of every candidate (default 0)")
  p.add_argument(
    "--validator",
    choices=VALIDATORS,
    default=DEFAULT_CRITERION,
    help=f"label-free validator (default {DEFAULT_CRITERION}, chosen by the validator benchmark: "
    "experiments/results/selection/validators.md)",
  )
  p.add_argument(
    "--steps", type=int, default=None, help="training steps per candidate (default 3000, the quick preset's)"
  )
  p.add_argument(
    "--batch-size", type=int, default=None, help="samples per step, half source and half target (default 128)"
  )
  p.add_argument("--no-guard", action="store_true", help="train the candidates without the guard")
  p.add_argument(
    "--class-share-margin",
    type=float,
    default=None,
    metavar="M",
    help="the class-share check: keep a DANN checkpoint only if the shares of its predicted target classes are "
    "no farther (total variation) from the source's label shares than the best source-only checkpoint's, plus M "
    "(e.g. 0.05); assumes both domains have about the same class shares (default: no check)",
  )
  p.add_argument(
    "--all-settings",
    action="store_true",
    help="train DANN at every learning rate and let the validator compare all eight candidates' checkpoints "
    "(default: the learning rate is chosen first on held-out source images, by its source-only run's error)",
  )
  p.add_argument("--data-dir", default=None, help="data cache (default $DANN_JAX_DATA or ~/.cache/dann_jax)")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")
  p.set_defaults(func=run, network=None)


def run(args) -> int:
  from dann_jax.runner.adapt import adapt
  from dann_jax.runner.candidates import default_candidates

  if args.steps is not None and args.steps <= 0:
    raise ValueError(f"--steps {args.steps} must be positive")
  splits = split_flags(args)
  pair = get_pair(args.source, args.target)
  candidates = default_candidates()
  steps = args.steps or 3000
  print(
    f"dann-jax adapt {pair.name}: up to {len(candidates)} candidates x {steps:,} steps, source only first"
    + (
      ""
      if args.all_settings
      else "; a learning rate whose source-only run errs more on held-out source images trains no DANN"
    )
    + f" (finished runs in {args.out} are reused)",
    flush=True,
  )
  report = adapt(
    pair,
    out_dir=args.out,
    seed=args.seed,
    validator=args.validator,
    candidates=candidates,
    steps=args.steps,
    batch_size=args.batch_size,
    splits=splits or None,
    data_dir=args.data_dir,
    guard=not args.no_guard,
    share_margin=args.class_share_margin,
    source_setting=not args.all_settings,
    progress=not args.no_progress,
  )
  c = report["chosen"]
  print(f"chosen: {c['candidate']} at step {c['step']} ({c['why']})")
  if c.get("source_val_accuracy") is not None:
    so = report.get("source_only_source_val_accuracy")
    so_words = "" if so is None else f"; source only {so:.4f}"
    print(f"held-out source accuracy (label-free): {c['source_val_accuracy']:.4f}{so_words}")
  if c["target_accuracy"] is not None:
    so = report["source_only_target_accuracy"]
    so_words = "" if so is None else f"; source only {so:.4f}"
    print(f"target accuracy (reported, not used to choose): {c['target_accuracy']:.4f}{so_words}")
  print(f"model: {c['folder']}\nreport: {args.out}/report_s{args.seed}.md")
  return 0
