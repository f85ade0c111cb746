"""Training hyper-parameters as code: one frozen dataclass, small overrides per preset.

References: Sec. 5 of Ganin & Lempitsky, arXiv 1409.7495 (batch of 128 = 64
source + 64 target, SGD momentum 0.9, μ_0 = 0.01, α = 10, β = 0.75, γ = 10).
"""

from __future__ import annotations

import dataclasses
import math

from dann_jax.core import methods
from dann_jax.data.batching import half_batch


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Hyper-parameters of one training run (the paper's values by default).

  Attributes:
    method: a `dann_jax.core.methods` name ("dann", "source_only", "target_only",
      or one registered), or a "package.module:ATTRIBUTE" spec.
    total_steps: steps over which progress p goes from 0 to 1.
    batch_size: samples per step, half source and half target.
    learning_rate: μ_0, the initial learning rate.
    anneal_learning_rate: μ_p = μ_0 / (1 + α p)^β if True, constant μ_0 if False
      (the paper does not anneal for MNIST <-> SVHN).
    lr_alpha: α of the learning-rate annealing.
    lr_beta: β of the learning-rate annealing.
    gamma: γ of the adaptation-factor ramp λ_p.
    lam_max: the value λ_p approaches at p = 1 (1 in the paper).
    lam_warmup: fraction of training with λ = 0 before the ramp starts (0 in
      the paper; the ramp then runs over the remaining steps).
    momentum: SGD momentum.
    weight_decay: L2 weight decay added to the gradients (0: none).
    max_norm: if set, the l2 norm of each unit's incoming weights is clipped
      to this after every step (the paper's "l2-norm restriction").
    optimizer: "sgd" (the paper) or "adam" (a faster departure for quick runs).
    adam_b1: Adam's first-moment decay (ignored by SGD).
    seed: the run's seed; `jax.random.key(seed)` is split once at the top.
  """

  method: str = "dann"
  total_steps: int = 10_000
  batch_size: int = 128
  learning_rate: float = 0.01
  anneal_learning_rate: bool = True
  lr_alpha: float = 10.0
  lr_beta: float = 0.75
  gamma: float = 10.0
  lam_max: float = 1.0
  lam_warmup: float = 0.0
  momentum: float = 0.9
  weight_decay: float = 0.0
  max_norm: float | None = None
  optimizer: str = "sgd"
  adam_b1: float = 0.9
  seed: int = 0

  def __post_init__(self):
    methods.get(self.method)
    if int(self.total_steps) != self.total_steps or self.total_steps <= 0:
      raise ValueError(f"total_steps={self.total_steps} must be a positive integer")
    half_batch(self.batch_size)
    if not 0 < self.learning_rate < math.inf:  # also rejects NaN
      raise ValueError(f"learning_rate={self.learning_rate} must be a finite number > 0")
    for name in ("momentum", "adam_b1", "lam_warmup"):
      if not 0 <= getattr(self, name) < 1:
        raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1)")
    for name in ("weight_decay", "lam_max", "gamma", "lr_alpha", "lr_beta"):
      if not 0 <= getattr(self, name) < math.inf:
        raise ValueError(f"{name}={getattr(self, name)} must be a finite number >= 0")
    if self.optimizer not in ("sgd", "adam"):
      raise ValueError(f"optimizer={self.optimizer!r} must be 'sgd' or 'adam'")
    if self.max_norm is not None and not self.max_norm > 0:
      raise ValueError(f"max_norm={self.max_norm} must be > 0 or None")

  def replace(self, **changes) -> "TrainConfig":
    return dataclasses.replace(self, **changes)
