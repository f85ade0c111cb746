"""The paper's two annealing schedules as optax-style `count -> value` functions.

Training progress is p = count / total_steps, clipped to [0, 1].

References: Sec. 5 of Ganin & Lempitsky, arXiv 1409.7495: learning rate
μ_p = μ_0 / (1 + α p)^β with μ_0 = 0.01, α = 10, β = 0.75, and adaptation factor
λ_p = 2 / (1 + exp(-γ p)) - 1 with γ = 10.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax


def _check_total_steps(total_steps: int) -> None:
  if int(total_steps) != total_steps or total_steps <= 0:
    raise ValueError(
      f"{total_steps=} must be a positive integer: the number of training steps over which progress p goes from 0 to 1"
    )


def _check_non_negative(**values: float) -> None:
  for name, value in values.items():
    if not value >= 0:  # also rejects NaN
      raise ValueError(f"{name}={value} must be >= 0")


def progress(count, total_steps: int):
  """Training progress p = count / total_steps in [0, 1] as float32."""
  _check_total_steps(total_steps)
  return jnp.clip(jnp.asarray(count, jnp.float32) / total_steps, 0.0, 1.0)


def annealed_learning_rate(
  total_steps: int, mu0: float = 0.01, alpha: float = 10.0, beta: float = 0.75
) -> optax.Schedule:
  """μ_p = mu0 / (1 + alpha p)^beta, the paper's learning-rate annealing.

  Args:
    total_steps: steps over which p goes from 0 to 1 (> 0).
    mu0: initial learning rate (>= 0).
    alpha: annealing speed (>= 0).
    beta: annealing exponent (>= 0).

  Returns:
    A schedule `count -> learning rate`.

  Raises:
    ValueError: for total_steps <= 0 or a negative rate or coefficient.
  """
  _check_total_steps(total_steps)
  _check_non_negative(mu0=mu0, alpha=alpha, beta=beta)

  def schedule(count):
    return mu0 / (1.0 + alpha * progress(count, total_steps)) ** beta

  return schedule


def adaptation_factor(
  total_steps: int, gamma: float = 10.0, lam_max: float = 1.0, warmup: float = 0.0
) -> optax.Schedule:
  """λ_p = lam_max * (2 / (1 + exp(-gamma q)) - 1), growing from 0 to ~lam_max.

  The ramp suppresses the noisy domain signal at the start of training. With
  the paper's `warmup=0`, q = p; otherwise λ stays 0 for the first `warmup`
  fraction of training (a source-only start) and the ramp runs over the rest,
  q = (p - warmup) / (1 - warmup) clipped to [0, 1].

  Args:
    total_steps: steps over which p goes from 0 to 1 (> 0).
    gamma: steepness of the ramp (>= 0); the paper's 10 is not tuned.
    lam_max: the value approached at p = 1 (1 in the paper).
    warmup: the fraction of training before the ramp starts, in [0, 1).

  Returns:
    A schedule `count -> λ`.

  Raises:
    ValueError: for total_steps <= 0, a negative gamma or lam_max, or a
      warmup outside [0, 1).
  """
  _check_total_steps(total_steps)
  _check_non_negative(gamma=gamma, lam_max=lam_max)
  if not 0.0 <= warmup < 1.0:
    raise ValueError(f"{warmup=} must lie in [0, 1): the fraction of training before the λ ramp starts")

  def schedule(count):
    p = progress(count, total_steps)
    q = jnp.clip((p - warmup) / (1.0 - warmup), 0.0, 1.0)
    return lam_max * (2.0 / (1.0 + jnp.exp(-gamma * q)) - 1.0)

  return schedule
