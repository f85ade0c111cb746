"""The candidate set that `dann-jax adapt` trains and the validator benchmark measures.

A user without target labels cannot know in advance how strongly to adapt: on
some pairs DANN at the paper's λ_max = 1 helps a lot, on others it hurts, and
the right answer may be no adaptation at all. So the candidates span the
adaptation strength, from λ_max = 0 (source only) up to the paper's 1, at two
learning rates, all under the quick preset's budget. `adapt` chooses the
learning rate on held-out source images (`dann_jax.runner.choice.settings_on_source`)
and a label-free validator (`dann_jax.validation.selection`) then chooses among
every evaluation checkpoint of that learning rate's candidates. Source only is
a candidate at each learning rate, so a chosen DANN is one the validator ranks
above source only.

The grid was fixed before any of its runs was trained; it was not tuned on
any pair's target labels.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from dann_jax.core import methods

LEARNING_RATES = (1e-3, 3e-4)
# λ_max of the DANN candidates; λ_max = 0 is the source-only candidate.
LAMBDA_MAXES = (0.1, 0.3, 1.0)
# The overrides that set how strongly a candidate adapts. Every other override
# (the learning rate here) is a training setting, which `adapt` chooses on
# held-out source images (`dann_jax.runner.choice.settings_on_source`).
ADAPTATION_FIELDS = ("lam_max",)


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One configuration to train.

  Attributes:
    name: a folder-safe name, e.g. "dann_lam0.3_lr1e-3".
    method: a `dann_jax.core.methods` name ("source_only" or "dann" here).
    overrides: `TrainConfig` fields set on top of the quick preset.
  """

  name: str
  method: str
  overrides: Mapping[str, Any]

  @property
  def adapts(self) -> bool:
    """Whether the candidate plays the adversarial game (False: a no-adaptation baseline)."""
    return methods.get(self.method).adversarial

  @property
  def setting(self) -> tuple:
    """The candidate's training setting: its overrides but the adaptation strength, as sorted (field, value) pairs."""
    return tuple(sorted((k, v) for k, v in self.overrides.items() if k not in ADAPTATION_FIELDS))

  @property
  def lam_max(self) -> float:
    return float(self.overrides.get("lam_max", 1.0)) if self.adapts else 0.0


def _lr_name(lr: float) -> str:
  """`lr` in the shortest scientific notation that reads back as the same float: 1e-3, 3e-4, 1.4e-3."""
  digits = next(d for d in range(17) if float(f"{lr:.{d}e}") == lr)
  mantissa, exponent = f"{lr:.{digits}e}".split("e")
  return f"{mantissa}e{int(exponent)}"


def default_candidates(learning_rates=LEARNING_RATES, lambda_maxes=LAMBDA_MAXES) -> tuple[Candidate, ...]:
  """Source only and DANN at each λ_max, at each learning rate (8 by default).

  Raises:
    ValueError: an empty grid, a learning rate <= 0 or a λ_max <= 0 (0 is the
      source-only candidate, always included).
  """
  if not learning_rates:
    raise ValueError("give at least one learning rate")
  for lr in learning_rates:
    if not lr > 0:
      raise ValueError(f"learning rate {lr} must be > 0")
  for lam in lambda_maxes:
    if not lam > 0:
      raise ValueError(f"lam_max {lam} must be > 0 (source only, lam_max = 0, is always a candidate)")
  out = []
  for lr in learning_rates:
    out.append(Candidate(f"so_lr{_lr_name(lr)}", methods.SOURCE_ONLY.name, {"learning_rate": lr}))
    for lam in lambda_maxes:
      name = f"dann_lam{lam:g}_lr{_lr_name(lr)}"
      out.append(Candidate(name, methods.DANN.name, {"learning_rate": lr, "lam_max": lam}))
  return tuple(out)
