"""Run presets as code: the paper's protocol, and a quick one for a 2-core CPU.

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
and scored by reverse validation (`dann_jax.selection`), the criterion fixed
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

from flax import nnx

from dann_jax import nnx as dann_nnx
from dann_jax.config import TrainConfig
from dann_jax.models import DANN, mnist_dann, svhn_dann
from dann_jax.xla_cpu import tuned
from dann_jax.pairs import PairSpec

PRESETS = ("quick", "paper")
# The paper's nets with the CPU-fast layers (the same functions; off CPU the
# layers are the stock ones).
NETWORKS = {"mnist": tuned(mnist_dann), "svhn": tuned(svhn_dann)}
# Their NNX twins (`dann_jax.nnx`), with the same layers.
NNX_NETWORKS = {"mnist": tuned(dann_nnx.mnist_dann), "svhn": tuned(dann_nnx.svhn_dann)}
PAPER_STEPS = 20_000

QUICK_STEPS = 3_000
QUICK_LEARNING_RATE = 1e-3
QUICK_ADAM_B1 = 0.5
# Labelled source images kept out of quick training for label-free selection.
QUICK_SOURCE_HOLDOUT = 5_000
QUICK_NOTE = (
  "quick preset, departing from the paper to fit minutes on a CPU: {steps} "
  "steps, Adam (b1 = 0.5) with mu_0 = 1e-3 under the paper's annealing "
  "formula instead of SGD momentum 0.9 with mu_0 = 0.01, the paper's lambda "
  "ramp compressed into the budget, the MNIST net for every pair, and up to "
  "5,000 source train images held out for label-free selection."
)


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """How to run one method on one pair.

  Attributes:
    config: the optimisation hyper-parameters.
    network: "mnist" or "svhn".
    eval_every: steps between evaluations (and checkpoints) while training.
    eval_size: test images per domain evaluated while training (the final
      evaluation uses the whole test sets).
    note: what departs from the paper's protocol, in words ("" for none).
    source_holdout: source *train* images held out of training as a labelled
      validation split for label-free model selection (`dann_jax.selection`),
      at most a tenth of them; 0 trains on all of them, as the paper does.
  """

  config: TrainConfig
  network: str
  eval_every: int
  eval_size: int
  note: str = ""
  source_holdout: int = 0

  def make_model(self, num_classes: int = 10) -> DANN:
    """The network this plan trains (`network`), untrained."""
    return NETWORKS[self.network](num_classes)

  def make_nnx_model(
    self, num_classes: int = 10, input_shape: tuple[int, int, int] = (32, 32, 3), seed: int = 0
  ) -> dann_nnx.DANN:
    """The NNX twin of `make_model()`, initialised from `seed` (its weights
    are not those of the Linen network; `dann_jax.nnx.from_linen` copies
    them in)."""
    return NNX_NETWORKS[self.network](num_classes, rngs=nnx.Rngs(seed), input_shape=tuple(input_shape))


def make_plan(
  pair: PairSpec,
  method: str,
  preset: str = "quick",
  *,
  steps: int | None = None,
  batch_size: int | None = None,
  seed: int = 0,
  overrides: dict | None = None,
  source_holdout: int | None = None,
) -> RunPlan:
  """The run plan of `method` on `pair` under `preset`.

  Args:
    pair: the adaptation pair.
    method: "dann", "source_only" or "target_only".
    preset: "quick" or "paper".
    steps: overrides the preset's step count (the schedules follow it).
    batch_size: overrides the batch of 128 (half source, half target).
    seed: the run's seed.
    overrides: `TrainConfig` fields to set on top of the preset's values.
    source_holdout: overrides the preset's held-out source validation size.

  Raises:
    ValueError: unknown preset, method or override, or steps <= 0.
  """
  plan = _preset_plan(pair, method, preset, steps=steps, batch_size=batch_size, seed=seed)
  changes = {}
  if overrides:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
      raise ValueError(f"unknown config fields {unknown}; known: {sorted(fields)}")
    changes["config"] = plan.config.replace(**overrides)
  if source_holdout is not None:
    if source_holdout < 0:
      raise ValueError(f"{source_holdout=} must be >= 0")
    changes["source_holdout"] = int(source_holdout)
  return dataclasses.replace(plan, **changes) if changes else plan


def _preset_plan(
  pair: PairSpec, method: str, preset: str, *, steps: int | None, batch_size: int | None, seed: int
) -> RunPlan:
  if preset not in PRESETS:
    raise ValueError(f"unknown {preset=}; choose one of {PRESETS}")
  if steps is not None and steps <= 0:
    raise ValueError(f"{steps=} must be positive")
  overrides = {} if batch_size is None else {"batch_size": batch_size}
  if preset == "paper":
    total = steps or PAPER_STEPS
    config = TrainConfig(
      method=method, total_steps=total, anneal_learning_rate=pair.anneal_learning_rate, seed=seed, **overrides
    )
    return RunPlan(config, pair.network, eval_every=1000, eval_size=5000)
  total = steps or QUICK_STEPS
  config = TrainConfig(
    method=method,
    total_steps=total,
    seed=seed,
    optimizer="adam",
    learning_rate=QUICK_LEARNING_RATE,
    adam_b1=QUICK_ADAM_B1,
    **overrides,
  )
  return RunPlan(
    config,
    "mnist",
    eval_every=_eval_every(total),
    eval_size=2000,
    note=QUICK_NOTE.format(steps=total),
    source_holdout=QUICK_SOURCE_HOLDOUT,
  )


def _eval_every(total: int) -> int:
  """About ten evaluations per run, at multiples of 100 steps (chunk ends)."""
  if total < 1000:
    return total
  return max(100, total // 1000 * 100)
