"""The domain flags `train` and `adapt` share: --source, --target, and the test splits of a user's own domains."""

from __future__ import annotations

import os

from dann_jax.data import custom


def add_domain_arguments(p) -> None:
  """--source, --target and the split flags of a user's folder:/npz: domains (`split_flags` reads them)."""
  p.add_argument("--source", required=True, help="source domain, e.g. mnist or folder:PATH / npz:PATH")
  p.add_argument("--target", required=True, help="target domain, e.g. mnist-m or folder:PATH / npz:PATH")
  p.add_argument(
    "--source-test",
    default=None,
    metavar="PATH",
    help="the test split of a folder:/npz: source that has no test/ (test.npz) of its own",
  )
  p.add_argument("--target-test", default=None, metavar="PATH", help="the same for a folder:/npz: target")
  p.add_argument(
    "--test-fraction",
    type=float,
    default=None,
    metavar="F",
    help="hold out this fraction of each class of every "
    "folder:/npz: domain without a test split as its test "
    "split (otherwise such a domain is evaluated on its "
    "train images)",
  )
  p.add_argument(
    "--split-seed", type=int, default=None, metavar="N", help="seed of the --test-fraction hold-out (default 0)"
  )


def split_flags(args) -> dict[str, dict]:
  """The split options of each folder:/npz: side, from --source-test,
  --target-test, --test-fraction and --split-seed (checked here, so that each
  mistake is one error naming its flag)."""
  fraction = args.test_fraction
  if fraction is not None and not 0.0 < fraction < 1.0:
    raise ValueError(
      f"--test-fraction {fraction} must lie strictly between 0 and 1 (e.g. 0.2 holds out a fifth of each class)"
    )
  if args.split_seed is not None and fraction is None:
    raise ValueError(
      "--split-seed seeds the --test-fraction hold-out; give --test-fraction F too, or drop --split-seed"
    )
  customs = [r for r in ("source", "target") if custom.is_spec(getattr(args, r))]
  if args.network is not None and not customs:
    raise ValueError(
      f"--network applies to pairs with a folder:PATH or "
      f"npz:PATH domain; {args.source}->{args.target} has the "
      "paper's network: drop --network"
    )
  splits = {}
  for role in ("source", "target"):
    spec, test = getattr(args, role), getattr(args, f"{role}_test")
    flag = f"--{role}-test"
    if role not in customs:
      if test is not None:
        raise ValueError(
          f"{flag} applies to a folder:PATH or npz:PATH "
          f"{role}; the built-in {spec!r} has its own test "
          f"split: drop {flag}"
        )
      continue
    own = custom.parse_spec(spec).test
    if test is not None and own is not None:
      raise ValueError(
        f"{flag}: {spec} already has a test split of its own "
        f"({own}); drop {flag}, or point --{role} at the train "
        "split alone"
      )
    if test is not None:
      test = custom.absolute(test)
      if not os.path.exists(test.partition(":")[2] if custom.is_spec(test) else test):
        raise FileNotFoundError(
          f"{flag} {getattr(args, f'{role}_test')}: no such folder or file; give the test split of --{role}"
        )
      splits[role] = {"test": test}
    elif fraction is not None and own is None:
      splits[role] = {"test_fraction": fraction, "seed": args.split_seed or 0}
  if fraction is not None and not any("test_fraction" in o for o in splits.values()):
    raise ValueError(
      f"--test-fraction {fraction} holds out test images of a folder:PATH "
      "or npz:PATH domain without a test split, and "
      + ("every such domain here has one" if customs else f"{args.source}->{args.target} has none")
      + ": drop it"
    )
  return splits
