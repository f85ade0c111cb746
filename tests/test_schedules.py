"""The paper's schedules against numpy at p = 0, 0.5 and 1."""

import jax
import numpy as np
import pytest

from dann_jax.core import schedules


@pytest.mark.parametrize("count,p", [(0, 0.0), (50, 0.5), (100, 1.0), (250, 1.0)])
def test_annealed_learning_rate(count, p):
  lr = jax.jit(schedules.annealed_learning_rate(100))
  np.testing.assert_allclose(lr(count), 0.01 / (1 + 10 * p) ** 0.75, rtol=1e-6)


def test_annealed_learning_rate_custom_values():
  lr = schedules.annealed_learning_rate(10, mu0=0.1, alpha=2.0, beta=0.5)
  np.testing.assert_allclose(lr(5), 0.1 / (1 + 2 * 0.5) ** 0.5, rtol=1e-6)


@pytest.mark.parametrize("count,p", [(0, 0.0), (50, 0.5), (100, 1.0)])
def test_adaptation_factor(count, p):
  lam = jax.jit(schedules.adaptation_factor(100))
  np.testing.assert_allclose(lam(count), 2 / (1 + np.exp(-10 * p)) - 1, rtol=1e-6, atol=1e-7)


def test_adaptation_factor_endpoints():
  lam = schedules.adaptation_factor(1000)
  assert float(lam(0)) == 0.0
  assert 0.9999 < float(lam(1000)) < 1.0
  assert float(schedules.adaptation_factor(10, lam_max=0.3)(10)) == pytest.approx(0.3 * (2 / (1 + np.exp(-10)) - 1))


@pytest.mark.parametrize("bad", [0, -5, 2.5])
def test_bad_total_steps(bad):
  with pytest.raises(ValueError, match="total_steps"):
    schedules.annealed_learning_rate(bad)
  with pytest.raises(ValueError, match="total_steps"):
    schedules.adaptation_factor(bad)


def test_negative_rates_rejected():
  with pytest.raises(ValueError, match="mu0"):
    schedules.annealed_learning_rate(10, mu0=-0.1)
  with pytest.raises(ValueError, match="gamma"):
    schedules.adaptation_factor(10, gamma=-1.0)
  # A constant rate (optax.constant_schedule) is checked where it enters.
  from dann_jax.core.config import TrainConfig

  with pytest.raises(ValueError, match="learning_rate=-1.0 must be a finite number > 0"):
    TrainConfig(learning_rate=-1.0, anneal_learning_rate=False)


def test_adaptation_factor_warmup_shifts_the_ramp():
  # 30% of 1,000 steps at λ = 0, then the paper's ramp over the other 700:
  # at step 300 + 0.5 * 700 it equals the plain ramp at p = 0.5.
  lam = jax.jit(schedules.adaptation_factor(1000, warmup=0.3))
  plain = lambda p: 2.0 / (1.0 + np.exp(-10.0 * p)) - 1.0
  assert float(lam(0)) == 0.0 and float(lam(300)) == 0.0
  np.testing.assert_allclose(float(lam(650)), plain(0.5), rtol=1e-6)
  np.testing.assert_allclose(float(lam(1000)), plain(1.0), rtol=1e-6)
  with pytest.raises(ValueError, match="warmup=1.0 must lie in"):
    schedules.adaptation_factor(10, warmup=1.0)


def test_make_schedules_reads_every_config_field():
  from dann_jax.core.config import TrainConfig
  from dann_jax.core.train import make_schedules

  config = TrainConfig(
    total_steps=100, learning_rate=0.2, lr_alpha=3.0, lr_beta=0.5, gamma=4.0, lam_max=0.7, lam_warmup=0.2
  )
  lr, lam = make_schedules(config)
  for step in (0, 30, 60, 100):
    p = step / 100
    assert float(lr(step)) == pytest.approx(0.2 / (1 + 3.0 * p) ** 0.5, rel=1e-6)
    q = min(max((p - 0.2) / 0.8, 0.0), 1.0)
    assert float(lam(step)) == pytest.approx(0.7 * (2 / (1 + np.exp(-4.0 * q)) - 1), rel=1e-6, abs=1e-7)
  # Without a domain term, λ is 0 whatever lam_max says.
  assert float(make_schedules(config.replace(method="source_only"))[1](50)) == 0.0
