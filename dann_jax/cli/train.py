"""`dann-jax train`: one method on one domain pair, with logs, checkpoints and a summary.

dann-jax train --source mnist --target mnist-m --out runs/quick
dann-jax train --source folder:data/product --target folder:data/real --test-fraction 0.2 --out runs/mine
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from dann_jax.cli.domains import add_domain_arguments, split_flags
from dann_jax.cli.select import CRITERIA
from dann_jax.data.pairs import NETWORK_NAMES, PAIRS, get_pair
from dann_jax.names import APIS, BUILTIN_METHODS, OWN_ARGUMENTS, PARALLEL_KINDS, PRESETS, RUN_FIELDS


def method_name(text: str) -> str:
  """--method's value as a `dann_jax.core.methods` name: built-ins may be spelled with '-'."""
  spelled = text.replace("-", "_")
  return spelled if spelled in BUILTIN_METHODS else text


def add_seed_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
  parser.add_argument(
    "--seeds",
    type=int,
    default=1,
    help="number of seeds, one run each with a seeds axis in one state (on CPU trained one after the other "
    "through one compiled step, elsewhere in one vmapped program) (default 1)",
  )


def seed_list(args) -> list[int]:
  if args.seeds < 1:
    raise ValueError(f"--seeds {args.seeds} must be >= 1")
  return list(range(args.seed, args.seed + args.seeds))


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--devices", type=int, default=None, help="devices for data parallelism (default: all local devices)"
  )
  parser.add_argument(
    "--parallel",
    choices=PARALLEL_KINDS,
    default="sharding",
    help="multi-device path: jit over a sharded batch (default) or jax.pmap",
  )


def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--coordinator",
    default=None,
    metavar="HOST:PORT",
    help="several processes (docs/multi-device.md): the address of process 0 and a free port there",
  )
  parser.add_argument("--num-processes", type=int, default=None, metavar="N", help="how many processes train together")
  parser.add_argument(
    "--process-id",
    type=int,
    default=None,
    metavar="I",
    help="this process's number, 0 to N-1 (0 on the coordinator's host)",
  )
  parser.add_argument(
    "--topology-timeout",
    type=float,
    default=None,
    metavar="SECONDS",
    help="how long processes wait for each other (default $DANN_JAX_TOPOLOGY_TIMEOUT or 120)",
  )


# Flags that may differ between the processes of one run.
PER_PROCESS_FLAGS = ("process_id", "data_dir", "no_progress", "topology_timeout")


def join_processes(args):
  """Joins the run's other processes when asked (or in a cluster job).

  Every other flag must be equal in all processes; the rendezvous compares
  them before any of them loads data. Returns the topology, or None.
  """
  from dann_jax.backend import distributed

  config = {
    f"--{name.replace('_', '-')}": value
    for name, value in sorted(vars(args).items())
    if name not in PER_PROCESS_FLAGS and not callable(value)
  }
  return distributed.initialize(
    args.coordinator, args.num_processes, args.process_id, config=config, topology_timeout=args.topology_timeout
  )


def make_runner(args, batch_size: int):
  """The multi-device chunk runner asked for on the command line, or None."""
  import jax

  from dann_jax.training.parallel import make_runner as parallel_runner

  n = jax.local_device_count() if args.devices is None else args.devices
  if n == 1 and jax.process_count() == 1:
    return None  # the plain single-device path
  return parallel_runner(args.parallel, n, batch_size)


def register(subparsers) -> None:
  p = subparsers.add_parser(
    "train",
    help="train one method on one domain pair",
    description="Train DANN, source-only or target-only on a domain pair. "
    f"Known pairs: {', '.join(PAIRS)}. Your own data: "
    "folder:PATH (class subfolders of images, or a flat "
    "folder of unlabelled target images) or npz:PATH on "
    "either side (docs/own-data.md).",
  )
  add_domain_arguments(p)
  p.add_argument(
    "--network",
    choices=NETWORK_NAMES,
    default=None,
    help="network of a pair with a folder:/npz: domain under "
    "--preset paper (default mnist; the quick preset "
    "trains the MNIST net on every pair)",
  )
  p.add_argument(
    "--method",
    type=method_name,
    default="dann",
    metavar="METHOD",
    help="dann, source-only, target-only, or a method of your own as package.module:ATTRIBUTE "
    "(docs/methods.md; default dann)",
  )
  p.add_argument(
    "--preset",
    choices=PRESETS,
    default="quick",
    help="quick: minutes on a CPU; paper: the paper's protocol (default quick)",
  )
  p.add_argument("--steps", type=int, default=None, help="override the preset's number of steps")
  p.add_argument("--batch-size", type=int, default=None, help="override the batch of 128 (half source, half target)")
  add_seed_arguments(p)
  p.add_argument("--out", required=True, help="run folder to write")
  p.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="FIELD=VALUE",
    dest="overrides",
    help="override one value of the preset: a dann_jax.TrainConfig "
    "field, eval_every / eval_size (steps between evaluations, test "
    "images per evaluation) or source_holdout (source train images kept "
    "out for --keep-best), e.g. --set learning_rate=3e-4 --set "
    "optimizer=sgd; repeatable; run.json records every resolved value",
  )
  p.add_argument(
    "--keep-best",
    default=None,
    metavar="CRITERION",
    choices=CRITERIA,
    help="also keep the checkpoint that scores best under this "
    f"label-free validator (one of {', '.join(CRITERIA)}), evaluated at every evaluation step",
  )
  p.add_argument(
    "--guard",
    action="store_true",
    help="watch the run for a collapse (source label loss back at chance) or a non-finite loss and, when the "
    "adversarial game breaks, resume from the last checkpoint before the break with half the adaptation factor "
    "(lambda 0 after three recoveries); off by default (the paper's protocol), on in `dann-jax adapt`; "
    "one seed per run",
  )
  p.add_argument(
    "--api",
    choices=APIS,
    default="linen",
    help="the front door that trains: Flax Linen (default) or "
    "Flax NNX (dann_jax.core.nnx; one seed on one device), with "
    "the same numbers (other dropout masks for the SVHN "
    "net)",
  )
  p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
  p.add_argument("--data-dir", default=None, help="data cache (default $DANN_JAX_DATA or ~/.cache/dann_jax)")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.add_argument("--json", action="store_true", help="end with the summary's main fields as one JSON line")
  p.add_argument(
    "--tensorboard",
    metavar="DIR",
    default=None,
    help="also write TensorBoard event files there, one folder per seed (needs tensorboardX: "
    'pip install -e ".[tensorboard]"); metrics.jsonl stays the record',
  )
  add_device_arguments(p)
  add_distributed_arguments(p)
  p.set_defaults(func=run)


# The library's argument names in its messages, and the flags that set them.
# Library error wording -> this command's flags.
_FLAG_WORDS = (
  (re.compile(r"`overrides` names unknown config fields"), "--set names unknown fields"),
  (re.compile(r"overrides\['(\w+)'\]="), r"--set \1="),
  (re.compile(r"keep_best"), "--keep-best"),
  (re.compile(r"the guard recovers one run at a time"), "--guard trains one run at a time"),
  (re.compile(r"set source_holdout > 0"), "add --set source_holdout=N (N > 0)"),
)


def _collapse_advice(method: str, step: int, seeds: int) -> str:
  """What a collapse at `step` means, and the knobs that may prevent it."""
  from dann_jax.core import methods

  knobs = ["a lower learning rate (--set learning_rate=...)"]
  if methods.get(method).adversarial:
    knobs.append("a lower adaptation factor (--set lam_max=...)")
  knobs.append("a bound on each unit's weight norm (--set max_norm=...)")
  keep = "--keep-best source-risk --set source_holdout=N"
  knobs.append(f"keeping the best label-free checkpoint ({keep}{'' if seeds == 1 else ', one seed per run'})")
  return (
    f"collapsed at step {step:,}: its training label loss went back to chance and stayed there, so its "
    f"predictions are constant. Try {', '.join(knobs[:-1])} or {knobs[-1]}"
  )


def as_flags(message: str) -> str:
  """A `make_config` error in the words of this command's flags."""
  for pattern, flag in _FLAG_WORDS:
    message = pattern.sub(flag, message)
  return message


def parse_overrides(items: list[str]) -> dict:
  """`["FIELD=VALUE", ...]` as config overrides (a TrainConfig field,
  eval_every, eval_size or source_holdout), typed like the fields."""
  import dataclasses

  from dann_jax.core.config import TrainConfig

  defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
  defaults.update({name: 1 for name in (*RUN_FIELDS, "source_holdout")})  # typed as integers
  out = {}
  for item in items:
    field, sep, text = item.partition("=")
    if not sep or field not in defaults:
      raise ValueError(f"--set {item}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(defaults))}")
    if field in OWN_ARGUMENTS:
      from dann_jax.cli import ARGUMENT_FLAGS

      raise ValueError(f"--set {item}: use {ARGUMENT_FLAGS[field]} for that")
    default = defaults[field]
    try:
      if isinstance(default, bool):
        if text.lower() not in ("true", "false"):
          raise ValueError
        value = text.lower() == "true"
      elif isinstance(default, (int, float)) and not isinstance(default, bool):
        value = type(default)(text)
      elif default is None:  # an optional float
        value = None if text.lower() == "none" else float(text)
      else:
        value = text
    except ValueError:
      raise ValueError(
        f"--set {item}: {text!r} is not a valid {type(default).__name__ if default is not None else 'number or none'}"
      ) from None
    out[field] = value
  return out


def _mean(stats) -> str:
  return "none" if stats is None else f"{stats['mean']:.4f}"


def check_api_flags(args) -> None:
  """Refuses, in one error naming them, the flags that `--api nnx` (one seed
  on one device in one process) does not take."""
  if args.api != "nnx":
    return
  refused = []
  if args.seeds != 1:
    refused.append(f"--seeds {args.seeds}")
  if args.devices not in (None, 1):
    refused.append(f"--devices {args.devices}")
  if args.parallel != "sharding":
    refused.append(f"--parallel {args.parallel}")
  for name in ("coordinator", "num_processes"):
    if getattr(args, name, None) is not None:
      refused.append(f"--{name.replace('_', '-')} {getattr(args, name)}")
  if refused:
    raise ValueError(f"--api nnx trains one seed on one device: drop {', '.join(refused)}, or train with --api linen")


def paper_words(pair, paper_v1) -> str:
  """What the paper reports for this pair and method, in words (a pair of
  the user's own data has no paper number; its note says so)."""
  if paper_v1 is None:
    return pair.note or "not in the paper's tables"
  return f"paper v1: {paper_v1}"


def run(args) -> int:
  from dann_jax.backend.distributed import is_primary
  from dann_jax.runner.folder import ApiMismatch
  from dann_jax.runner.presets import make_config
  from dann_jax.runner.runs import train_run

  check_api_flags(args)
  splits = split_flags(args)
  pair = get_pair(args.source, args.target, network=args.network or "mnist")
  method = args.method
  overrides = parse_overrides(args.overrides)
  source_holdout = overrides.pop("source_holdout", None)
  try:
    config = make_config(
      pair,
      method,
      args.preset,
      steps=args.steps,
      batch_size=args.batch_size,
      seeds=seed_list(args),
      overrides=overrides or None,
      source_holdout=source_holdout,
      keep_best=args.keep_best,
      api=args.api,
      splits=splits,
      guard=args.guard or None,
    )
  except ValueError as e:
    raise ValueError(as_flags(str(e))) from None
  join_processes(args)
  try:
    result = train_run(
      config,
      out_dir=args.out,
      resume=args.resume,
      data_dir=args.data_dir,
      progress=not args.no_progress and is_primary(),
      runner=(None if args.api == "nnx" else make_runner(args, config.train.batch_size)),
      tensorboard=args.tensorboard,
    )
  except ApiMismatch as e:
    raise ValueError(f"{e} (dann-jax train ... --api {e.held_api} --resume)") from None
  if not is_primary():
    return 0  # process 0 reports
  s = result.summary
  t, src = s["target_accuracy"], s["source_accuracy"]
  if args.resume and s.get("steps_run") == 0:
    print(
      f"{args.out} was already finished at step {s['steps']:,}: nothing to train; its summary is computed again from the final checkpoint"
    )
  if len(s["seeds"]) == 1:
    target = "none (no target test image has a label)" if t is None else f"{t['mean']:.4f}"
    over = f"seed {s['seeds'][0]}"
  else:
    target = "none (no target test image has a label)" if t is None else f"{t['mean']:.4f} +- {t['std']:.4f}"
    over = f"mean +- std over seeds {', '.join(map(str, s['seeds']))}"
  print(
    f"{method} {pair.name}: target accuracy {target} (source {_mean(src)}), {over}; " + paper_words(pair, s["paper_v1"])
  )
  for seed, step in zip(s["seeds"], s["collapsed_at_step"]):
    if step is not None:
      print(f"dann-jax: warning: seed {seed} {_collapse_advice(method, step, len(s['seeds']))}", file=sys.stderr)
  for event in s.get("guard", {}).get("events", []):
    print(
      f"guard: {event['reason']} at step {event['step']:,}; resumed from step {event['restored_step']:,} "
      f"with lambda x {event['lam_scale']:g}"
    )
  if "best" in s:
    b = s["best"]
    final = "" if t is None else f" (final state: {t['mean']:.4f})"
    print(
      f"label-free best ({b['criterion']} {b['score']:.4f}) at step "
      f"{b['step']}: target accuracy {_mean(b['target_accuracy'])}"
      f"{final}; kept in {args.out}/best"
    )
  print(f"wrote {args.out}: run.json, metrics.jsonl, summary.json, curves.png, checkpoint/")
  if args.tensorboard is not None:
    print(f"wrote TensorBoard event files to {args.tensorboard} (tensorboard --logdir {args.tensorboard})")
  if args.json:
    print(json.dumps({k: s[k] for k in ("pair", "method", "target_accuracy", "train_seconds")}))
  return 0
