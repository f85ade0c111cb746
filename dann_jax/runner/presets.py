"""One run's configuration as code: `RunConfig`, built once by `make_config` from a preset.

A run is described by one `RunConfig` (pair, method, seeds, the optimisation
hyper-parameters, network, evaluation cadence, source hold-out, front door);
`make_config` builds it from a preset and the caller's overrides and checks
every argument there, and the run folder's run.json records it. The presets:

`paper` is the paper's protocol and may not depart from it: batches of 128
(64 + 64), SGD with momentum 0.9, μ_p = 0.01 / (1 + 10 p)^0.75 (constant 0.01 for
MNIST <-> SVHN), λ_p = 2 / (1 + exp(-10 p)) - 1, the MNIST net for MNIST sources
and the SVHN net otherwise. The paper gives no iteration count; 20,000 steps
(about 21 epochs of MNIST's 60,000 source images) is the budget; results in
docs/reproduction.md.

`quick` departs from the paper to fit minutes on a CPU (see `QUICK_NOTE`):
3,000 steps of Adam (μ_0 = 1e-3 under the paper's annealing formula, first-moment
decay b1 = 0.5) with the paper's λ ramp compressed into the budget, and 5,000
source train images held out for label-free selection. How it was chosen:
candidates (`experiments/quick/quick_sweep.py`) were trained on MNIST -> MNIST-M-like
and scored by reverse validation (`dann_jax.validation.selection`), the criterion fixed
before the sweep; target labels were not used to choose. The adaptation
strength (λ_max, a λ warm-up) is kept at the paper's values rather than chosen
by the criterion, since every criterion computed on source labels favours
weaker adaptation by construction (its limit is source-only training); among
the remaining candidates (optimizer, learning rate, b1) reverse validation
ranked Adam with b1 = 0.5 first. The whole table, with target accuracy reported
beside each score: experiments/results/quick/quick_sweep.md.

Command of the quick preset: `dann-jax train --source mnist --target mnist-m
--preset quick --out runs/quick`; of the paper preset: the same with
`--preset paper`.

References: Sec. 5 of Ganin & Lempitsky, arXiv 1409.7495.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from dann_jax.core.config import TrainConfig
from dann_jax.data.pair_data import SplitOptions, is_custom, split_options
from dann_jax.data.pairs import PAIRS, PairSpec, get_pair
from dann_jax.names import APIS, OWN_ARGUMENTS, PRESETS, RUN_FIELDS
from dann_jax.training.guard import GuardConfig
from dann_jax.validation import selection

# Labelled source images kept out of quick training for label-free selection.
QUICK_SOURCE_HOLDOUT = 5_000
QUICK_NOTE = (
  "quick preset, departing from the paper to fit minutes on a CPU: {steps} "
  "steps, Adam (b1 = 0.5) with mu_0 = 1e-3 under the paper's annealing "
  "formula instead of SGD momentum 0.9 with mu_0 = 0.01, the paper's lambda "
  "ramp compressed into the budget, the MNIST net for every pair, and up to "
  "5,000 source train images held out for label-free selection."
)

# Each preset as data: its step budget, the `TrainConfig` values it sets over the defaults (the paper's values),
# and the run's own values. `network` None: the pair's own network; `pair_schedule`: the pair decides whether the
# learning rate is annealed (the paper's MNIST <-> SVHN runs are not); `eval_every` None: about ten evaluations.
PRESET_VALUES = {
  "paper": dict(
    steps=20_000,
    train={},
    pair_schedule=True,
    network=None,
    eval_every=1000,
    eval_size=5000,
    source_holdout=0,
    note="",
  ),
  "quick": dict(
    steps=3_000,
    train=dict(optimizer="adam", learning_rate=1e-3, adam_b1=0.5),
    pair_schedule=False,
    network="mnist",
    eval_every=None,
    eval_size=2000,
    source_holdout=QUICK_SOURCE_HOLDOUT,
    note=QUICK_NOTE,
  ),
}


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything that defines one run: built once by `make_config`, handed down.

  Build it with `make_config` (or `config_of`), which checks every value and
  normalises `splits`; a `RunConfig` made by hand is not checked.

  Attributes:
    pair: the adaptation pair.
    preset: the preset the values start from, "quick" or "paper".
    train: the method and the optimisation hyper-parameters; `train.seed` is
      the first seed.
    network: "mnist" or "svhn".
    eval_every: steps between evaluations (and checkpoints) while training.
    eval_size: test images per domain evaluated while training, a fixed
      seeded sample (the final evaluation uses the whole test sets).
    note: what departs from the paper's protocol, in words ("" for none).
    source_holdout: source *train* images held out of training as a labelled
      validation split for label-free model selection (`dann_jax.validation.selection`),
      at most a tenth of them; 0 trains on all of them, as the paper does.
    num_seeds: how many consecutive seeds from `train.seed` are trained, held
      as one state with a seeds axis (`dann_jax.training.loop.default_runner`).
    overrides: the fields set on top of the preset's values (already
      applied; kept to name the run).
    keep_best: a `dann_jax.validation.selection` criterion whose best-scoring state is
      kept beside the final one, or None.
    api: the front door that takes the steps, "linen" or "nnx".
    splits: per role ("source", "target"), the `SplitOptions` of a user's
      domain (defaults for a built-in one).
    guard: the label-free guard against a collapse or divergence
      (`dann_jax.training.guard`), or None (off).
  """

  pair: PairSpec
  preset: str
  train: TrainConfig
  network: str
  eval_every: int
  eval_size: int
  note: str = ""
  source_holdout: int = 0
  num_seeds: int = 1
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  keep_best: str | None = None
  api: str = "linen"
  splits: Mapping[str, SplitOptions] = dataclasses.field(default_factory=dict)
  guard: GuardConfig | None = None

  @property
  def seeds(self) -> tuple[int, ...]:
    """The seeds, one run each: `train.seed` and the `num_seeds - 1` after it."""
    return tuple(range(self.train.seed, self.train.seed + self.num_seeds))

  @property
  def method(self) -> str:
    """The method's name or spec (`train.method`; `dann_jax.core.methods.get` resolves it)."""
    return self.train.method

  def identity(self) -> dict[str, Any]:
    """What names the run in its folder's run.json: the arguments of
    `make_config` that made it (with them, `config_of` rebuilds it)."""
    identity = {
      "pair": self.pair.name,
      "method": self.method,
      "preset": self.preset,
      "steps": self.train.total_steps,
      "batch_size": self.train.batch_size,
      "seeds": list(self.seeds),
      "overrides": dict(self.overrides),
      "source_holdout": self.source_holdout,
    }
    if is_custom(self.pair):  # what `config_of` needs to read the same data again
      identity.update(
        source=self.pair.source,
        target=self.pair.target,
        network=self.pair.network,
        splits={role: dataclasses.asdict(o) for role, o in self.splits.items()},
      )
    if self.keep_best is not None:
      identity["keep_best"] = self.keep_best
    if self.guard is not None:
      identity["guard"] = dataclasses.asdict(self.guard)
    identity["api"] = self.api
    return identity

  def resolved(self) -> dict[str, Any]:
    """With `identity()`, every value the run uses, as JSON (run.json keeps
    it under "config")."""
    return {
      "train": dataclasses.asdict(self.train),
      "network": self.network,
      "eval_every": self.eval_every,
      "eval_size": self.eval_size,
      "source_holdout": self.source_holdout,
      "note": self.note,
      "guard": None if self.guard is None else dataclasses.asdict(self.guard),
    }


def make_config(
  pair: PairSpec,
  method: str,
  preset: str = "quick",
  *,
  steps: int | None = None,
  batch_size: int | None = None,
  seeds: Sequence[int] = (0,),
  overrides: Mapping[str, Any] | None = None,
  source_holdout: int | None = None,
  keep_best: str | None = None,
  api: str = "linen",
  splits: Mapping[str, Any] | None = None,
  guard: bool | GuardConfig | Mapping[str, Any] | None = None,
) -> RunConfig:
  """The configuration of `method` on `pair`: `preset`'s values, then the
  arguments given. Every argument is checked here, once.

  Args:
    pair: the adaptation pair.
    method: a `dann_jax.core.methods` name or "package.module:ATTRIBUTE" spec.
    preset: "quick" or "paper".
    steps: overrides the preset's step count (the schedules follow it).
    batch_size: overrides the batch of 128 (half source, half target).
    seeds: one run per seed, consecutive (`[s, s + 1, ...]`); the first is
      `train.seed`.
    overrides: fields to set on top of the preset's values: any
      `TrainConfig` field, and the `RUN_FIELDS` of `RunConfig`.
    source_holdout: overrides the preset's held-out source validation size.
    keep_best: a `dann_jax.validation.selection` criterion (needs one seed and a
      source hold-out).
    api: "linen" or "nnx" (one seed).
    splits: per role, the `SplitOptions` (or their dicts) of a user's domain.
    guard: True (the default `GuardConfig`), a `GuardConfig` or its dict to
      guard the run against a collapse or divergence; None or False: off.

  Raises:
    ValueError: unknown preset, method, api, criterion or override field,
      an override of `method` / `total_steps` / `seed`, steps <= 0, no
      seeds or seeds that are not consecutive, a negative source_holdout,
      eval_every / eval_size <= 0, split options for a built-in domain, a
      bad `TrainConfig` value, or options that do not go together.
  """
  seeds = tuple(int(s) for s in seeds)
  if not seeds:
    raise ValueError("`seeds` is empty; give at least one seed")
  if seeds != tuple(range(seeds[0], seeds[0] + len(seeds))):
    raise ValueError(
      f"`seeds` {list(seeds)} are not consecutive: one run trains seeds s, s+1, ...; train the others as separate runs"
    )
  if api not in APIS:
    raise ValueError(f"unknown {api=}; choose one of {APIS}")
  if api == "nnx" and len(seeds) != 1:
    raise ValueError(
      f"api='nnx' trains one seed; got {len(seeds)} `seeds`. Train each seed as its own run, or use api='linen'"
    )
  config = _preset_config(pair, method, preset, steps=steps, batch_size=batch_size, seed=seeds[0])
  changes: dict[str, Any] = {
    "num_seeds": len(seeds),
    "api": api,
    "keep_best": keep_best,
    "splits": split_options(pair, splits),
  }
  if guard is True:
    guard = GuardConfig()
  elif isinstance(guard, Mapping):
    guard = GuardConfig(**guard)
  if guard:
    if len(seeds) != 1 or api != "linen":
      raise ValueError(
        f"the guard recovers one run at a time through the Linen front door; got {len(seeds)} seeds and {api=}. "
        "Train each seed as its own run with api='linen'"
      )
    changes["guard"] = guard
  if overrides:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - fields - set(RUN_FIELDS))
    if unknown:
      known = sorted((fields | set(RUN_FIELDS)) - set(OWN_ARGUMENTS))
      raise ValueError(f"`overrides` names unknown config fields {unknown}; known: {known}")
    own = sorted(set(overrides) & set(OWN_ARGUMENTS))
    if own:
      raise ValueError(
        f"`overrides` sets {own}: give {', '.join(f'{OWN_ARGUMENTS[f]!r}' for f in own)} as their own arguments"
      )
    for name in RUN_FIELDS:
      if name in overrides:
        value = overrides[name]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
          raise ValueError(f"overrides[{name!r}]={value!r} must be a positive integer")
        changes[name] = value
    changes["train"] = config.train.replace(**{k: v for k, v in overrides.items() if k not in RUN_FIELDS})
    changes["overrides"] = dict(overrides)
  if source_holdout is not None:
    if source_holdout < 0:
      raise ValueError(f"{source_holdout=} must be >= 0")
    changes["source_holdout"] = int(source_holdout)
  config = dataclasses.replace(config, **changes)
  if keep_best is not None:
    selection.check_criterion(keep_best)
    if len(seeds) != 1:
      raise ValueError(f"keep_best selects within one run: train the {len(seeds)} seeds as separate runs")
    if not config.source_holdout:
      raise ValueError(
        "keep_best needs labelled source images held out of training: set "
        f"source_holdout > 0 (the quick preset holds out {QUICK_SOURCE_HOLDOUT})"
      )
  return config


def config_of(identity: Mapping[str, Any]) -> RunConfig:
  """The configuration of the run that `identity` (a run folder's run.json) names."""
  if "source" in identity:
    pair = get_pair(identity["source"], identity["target"], network=identity["network"])
  else:
    pair = PAIRS[identity["pair"]]
  return make_config(
    pair,
    identity["method"],
    identity["preset"],
    steps=identity["steps"],
    batch_size=identity["batch_size"],
    seeds=identity["seeds"],
    overrides=identity.get("overrides"),
    source_holdout=identity.get("source_holdout", 0),
    keep_best=identity.get("keep_best"),
    api=identity.get("api", "linen"),
    splits=identity.get("splits"),
    guard=identity.get("guard"),
  )


def _preset_config(
  pair: PairSpec, method: str, preset: str, *, steps: int | None, batch_size: int | None, seed: int
) -> RunConfig:
  if preset not in PRESETS:
    raise ValueError(f"unknown {preset=}; choose one of {PRESETS}")
  if steps is not None and steps <= 0:
    raise ValueError(f"{steps=} must be positive")
  values = PRESET_VALUES[preset]
  total = steps or values["steps"]
  train = dict(values["train"])
  if values["pair_schedule"]:
    train["anneal_learning_rate"] = pair.anneal_learning_rate
  if batch_size is not None:
    train["batch_size"] = batch_size
  return RunConfig(
    pair,
    preset,
    TrainConfig(method=method, total_steps=total, seed=seed, **train),
    values["network"] or pair.network,
    eval_every=values["eval_every"] or _eval_every(total),
    eval_size=values["eval_size"],
    note=values["note"].format(steps=total),
    source_holdout=values["source_holdout"],
  )


def _eval_every(total: int) -> int:
  """About ten evaluations per run, at multiples of 100 steps (chunk ends)."""
  if total < 1000:
    return total
  return max(100, total // 1000 * 100)
