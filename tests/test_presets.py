"""Run plans: which network and optimiser each preset gives each pair."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dann_jax.data import Domain
from dann_jax.models import count_params, mnist_dann, svhn_dann
from dann_jax.pairs import PAIRS
from dann_jax.presets import make_plan
from dann_jax.runs import PairData, train_pair


def _params(model):
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), 1.0,
                         train=False))
  return count_params(variables["params"])


MNIST_NET, SVHN_NET = _params(mnist_dann()), _params(svhn_dann())


@pytest.mark.parametrize("name", list(PAIRS))
def test_quick_preset_trains_the_mnist_net_on_every_pair(name):
  # The quick preset's note promises the MNIST net everywhere; building the
  # model from the pair instead of the plan once gave syn-digits sources the
  # SVHN net (about 8x slower per step) while the summary said "mnist".
  plan = make_plan(PAIRS[name], "dann", "quick")
  assert plan.network == "mnist"
  assert _params(plan.make_model()) == MNIST_NET != SVHN_NET


@pytest.mark.parametrize("name", list(PAIRS))
def test_paper_preset_follows_the_paper(name):
  pair = PAIRS[name]
  plan = make_plan(pair, "dann", "paper")
  expected = "mnist" if pair.source == "mnist" else "svhn"
  assert plan.network == pair.network == expected
  assert _params(plan.make_model()) == (MNIST_NET if expected == "mnist"
                                        else SVHN_NET)
  config = plan.config
  assert (config.optimizer, config.learning_rate, config.momentum) == (
      "sgd", 0.01, 0.9)
  assert config.batch_size == 128 and config.total_steps == 20_000
  svhn_pair = {pair.source, pair.target} == {"mnist", "svhn"}
  assert config.anneal_learning_rate == (not svhn_pair)
  assert plan.note == ""


def test_train_pair_builds_the_plans_network(tmp_path):
  # syn-digits -> mnist: the pair's own (paper) network is the SVHN net; the
  # quick preset must still train the MNIST net, and say so in the summary.
  rng = np.random.default_rng(0)

  def domain(name, n):
    return Domain(name, rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                  rng.integers(0, 10, n).astype(np.int32), 10, "random")

  data = PairData(domain("syn-digits", 16), domain("syn-digits", 8),
                  domain("mnist", 16), domain("mnist", 8))
  result = train_pair(PAIRS["syn-digits->mnist"], "source_only",
                      out_dir=tmp_path / "run", preset="quick", steps=1,
                      batch_size=4, data=data, progress=False, plots=False)
  assert count_params(result.state.params) == MNIST_NET
  assert result.summary["network"] == "mnist"
