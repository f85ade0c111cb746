"""The splits of a domain pair that a run reads: loading, user-domain split options, held-out source validation.

A pair may name a user's own data (`folder:PATH`, `npz:PATH`; see
`dann_jax.data.custom`): `SplitOptions` say how its test split is chosen, and a
user's target is labelled by the source's class names. A run may hold out part
of the source *train* images as a labelled validation split for label-free
model selection (`with_holdout`), the same images for every run of a pair.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Mapping

import numpy as np

from dann_jax.data import Domain, custom, load_domain
from dann_jax.data.domains import IMPORTED
from dann_jax.data.pairs import PairSpec


@dataclasses.dataclass
class PairData:
  """The splits a run needs.

  `source_val`, when present, is a labelled split carved out of the source
  *train* images (never the test set) and kept out of training, for label-free
  model selection.
  """

  source_train: Domain
  source_test: Domain
  target_train: Domain
  target_test: Domain
  source_val: Domain | None = None


# The held-out source split is the same for every run of a pair (whatever the
# run's seed), so that candidates are scored on the same images.
HOLDOUT_SEED = 1234


def split_holdout(domain: Domain, size: int, seed: int = HOLDOUT_SEED) -> tuple[Domain, Domain]:
  """Splits `domain` into (rest, held out) with `size` images held out.

  Args:
    domain: a train split.
    size: how many images to hold out, fewer than half of them.
    seed: the numpy seed of the permutation.

  Returns:
    `(rest, held_out)`, each keeping the order of `domain`.
  """
  if not 0 < size <= len(domain) // 2:
    raise ValueError(
      f"source_holdout={size} must lie in [1, {len(domain) // 2}] for the "
      f"{len(domain)} {domain.name} train images (at most half held out)"
    )
  held = np.zeros(len(domain), bool)
  held[np.random.default_rng(seed).permutation(len(domain))[:size]] = True
  part = lambda m, tag: dataclasses.replace(
    domain, images=domain.images[m], labels=domain.labels[m], provenance=f"{domain.provenance}; {tag}"
  )
  return (part(~held, f"{size} images held out for validation"), part(held, f"{size} held-out validation images"))


ROLES = ("source", "target")


@dataclasses.dataclass(frozen=True)
class SplitOptions:
  """How the test split of a user's domain (`folder:` / `npz:`) is chosen.

  See `dann_jax.data.custom.parse_spec`; a domain whose PATH holds its own
  test split (`test/`, `test.npz`) needs none of them.

  Attributes:
    test: the test split's folder or file.
    test_fraction: instead, the fraction in (0, 1) of each class held out of
      the train images as the test split.
    seed: the seed of that hold-out.
  """

  test: str | None = None
  test_fraction: float | None = None
  seed: int = 0


def is_custom(pair: PairSpec) -> bool:
  """Whether either side of `pair` is a user's `folder:` / `npz:` domain."""
  return custom.is_spec(pair.source) or custom.is_spec(pair.target)


def split_options(pair: PairSpec, splits: Mapping[str, Any] | None) -> dict[str, SplitOptions]:
  """`splits` (role -> `SplitOptions` or its dict, as run.json holds it) for
  both roles, test paths made absolute.

  Raises:
    ValueError: a role other than source / target, or options for a built-in
      domain (its test split is fixed).
  """
  splits = dict(splits or {})
  unknown = sorted(set(splits) - set(ROLES))
  if unknown:
    raise ValueError(f"`splits` names {unknown}; its keys are 'source' and 'target'")
  out = {}
  for role in ROLES:
    opts = splits.get(role) or SplitOptions()
    if not isinstance(opts, SplitOptions):
      opts = SplitOptions(**opts)
    name = getattr(pair, role)
    if opts != SplitOptions() and not custom.is_spec(name):
      raise ValueError(
        f"`splits` gives the {role} {name!r} the split options "
        f"{opts}, but a built-in domain has its own test "
        "split; split options apply to folder:PATH and "
        "npz:PATH domains only"
      )
    if opts.test is not None:
      opts = dataclasses.replace(opts, test=custom.absolute(opts.test))
    out[role] = opts
  return out


def _load_custom(spec: str, opts: SplitOptions) -> tuple[Domain, Domain]:
  """(train, test) of a user's domain; without a test split, its train
  images serve as test images."""
  train, test = custom.load_custom_splits(spec, test=opts.test, test_fraction=opts.test_fraction, seed=opts.seed)
  if test is None:
    test = dataclasses.replace(
      train, provenance=f"{train.provenance}; no test split, so its train images serve as test images"
    )
  return train, test


def _in_source_classes(source: Domain, target: Domain) -> Domain:
  """A user's `target` labelled by the source's class indices, when its
  classes are some of the source's (in any order); otherwise as it is."""
  src, tgt = custom.class_names(source), custom.class_names(target)
  if not isinstance(target, custom.CustomDomain) or tgt == src or not set(tgt) <= set(src):
    return target
  labels = np.asarray(target.labels, np.int32)
  if tgt:
    index = np.asarray([src.index(c) for c in tgt], np.int32)
    labels = np.where(labels >= 0, index[np.clip(labels, 0, None)], labels)
  return dataclasses.replace(target, labels=labels.astype(np.int32), num_classes=len(src), class_names=src)


def load_pair_data(
  pair: PairSpec,
  *,
  data_dir=None,
  seed: int = 0,
  source_holdout: int = 0,
  splits: Mapping[str, Any] | None = None,
  **options,
) -> PairData:
  """Loads (or builds) the train and test splits of both domains of `pair`.

  A `folder:PATH` / `npz:PATH` side is read by
  `dann_jax.data.custom.load_custom_splits` with its `splits` options; a
  user's target is labelled by the source's class names, and
  `custom.check_label_sets` refuses a target with other classes. A user's
  domain without a test split is evaluated on its train images (for the
  target, whose labels training never reads, the transductive protocol).

  With `source_holdout` > 0 up to that many source train images become
  `source_val` and leave `source_train` (see `with_holdout`).

  Args:
    pair: the adaptation pair.
    data_dir: the data cache folder.
    seed: the seed of the built-in domains' random parts (photo patches,
      rendering).
    source_holdout: source train images to hold out for selection.
    splits: per role ('source', 'target'), a `SplitOptions` (or its dict)
      for a user's domain.
    **options: options of `dann_jax.data.load_domain` for built-in domains.

  Raises:
    ValueError: split options for a built-in domain, different label sets,
      an unlabelled source, or bad data.
    FileNotFoundError: missing files (the message says how to supply them).
  """
  splits = split_options(pair, splits)
  loaded = {}
  # Domains read from imported files first, so that a missing file fails
  # before anything slow (rendered digits) is built.
  for role in sorted(ROLES, key=lambda r: getattr(pair, r) not in IMPORTED):
    name = getattr(pair, role)
    if custom.is_spec(name):
      loaded[role] = _load_custom(name, splits[role])
    else:
      loaded[role] = tuple(
        load_domain(name, split, data_dir=data_dir, seed=seed, **options) for split in ("train", "test")
      )
    for split, domain in zip(("train", "test"), loaded[role]):
      if len(domain) == 0:
        raise ValueError(f"the {role} domain {name!r} has no {split} samples; rebuild it (dann-jax data fetch NAME)")
  source_train, source_test = loaded["source"]
  target_train, target_test = (_in_source_classes(source_train, d) for d in loaded["target"])
  if is_custom(pair):
    custom.check_label_sets(source_train, target_train)
    custom.check_label_sets(source_train, target_test)
  data = PairData(source_train, source_test, target_train, target_test)
  return with_holdout(data, source_holdout)


def holdout_size(requested: int, n: int) -> int:
  """Images actually held out: `requested`, at most a tenth of the `n`."""
  if requested <= 0:
    return 0
  return max(1, min(requested, n // 10))


def with_holdout(data: PairData, source_holdout: int) -> PairData:
  """`data` with the source validation split a run asks for.

  `holdout_size(source_holdout, n)` of the n source train images are held
  out, so a small source keeps nine tenths of its images for training.

  Raises:
    ValueError: if `data` already holds out a different number of images.
  """
  have = 0 if data.source_val is None else len(data.source_val)
  n = len(data.source_train) + have
  size = holdout_size(source_holdout, n)
  if have == size:
    return data
  if have:
    raise ValueError(
      f"the loaded data hold out {have} source images, the run asks for "
      f"{size}; load them with load_pair_data(..., "
      f"source_holdout={source_holdout})"
    )
  train, val = split_holdout(data.source_train, size)
  return dataclasses.replace(data, source_train=train, source_val=val)


def data_fingerprint(data: PairData, mean) -> dict[str, Any]:
  """Sizes, label checksums and the training pixel mean of `data`: equal in
  every process of a multi-process run, which all load the data."""
  splits = {
    "source_train": data.source_train,
    "source_test": data.source_test,
    "target_train": data.target_train,
    "target_test": data.target_test,
  }
  if data.source_val is not None:
    splits["source_val"] = data.source_val
  fingerprint = {name: [len(d), zlib.crc32(np.asarray(d.labels).tobytes())] for name, d in splits.items()}
  fingerprint["pixel_mean"] = [float(m) for m in np.asarray(mean)]
  return fingerprint
