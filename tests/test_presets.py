"""Run configs: which network and optimiser each preset gives each pair; one config per run."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dann_jax.core import networks
from dann_jax.core.models import count_params, mnist_dann, svhn_dann
from dann_jax.data import Domain
from dann_jax.data.pair_data import PairData
from dann_jax.data.pairs import PAIRS
from dann_jax.runner.presets import config_of, make_config
from dann_jax.runner.runs import train_pair


def _params(model):
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), 1.0, train=False))
  return count_params(variables["params"])


MNIST_NET, SVHN_NET = _params(mnist_dann()), _params(svhn_dann())


@pytest.mark.parametrize("name", list(PAIRS))
def test_quick_preset_trains_the_mnist_net_on_every_pair(name):
  # The quick preset's note promises the MNIST net everywhere; building the
  # model from the pair instead of the run once gave syn-digits sources the
  # SVHN net (about 8x slower per step) while the summary said "mnist".
  run = make_config(PAIRS[name], "dann", "quick")
  assert run.network == "mnist"
  assert _params(networks.build(run.network)) == MNIST_NET != SVHN_NET


@pytest.mark.parametrize("name", list(PAIRS))
def test_paper_preset_follows_the_paper(name):
  pair = PAIRS[name]
  run = make_config(pair, "dann", "paper")
  expected = "mnist" if pair.source == "mnist" else "svhn"
  assert run.network == pair.network == expected
  assert _params(networks.build(run.network)) == (MNIST_NET if expected == "mnist" else SVHN_NET)
  config = run.train
  assert (config.optimizer, config.learning_rate, config.momentum) == ("sgd", 0.01, 0.9)
  assert config.batch_size == 128 and config.total_steps == 20_000
  svhn_pair = {pair.source, pair.target} == {"mnist", "svhn"}
  assert config.anneal_learning_rate == (not svhn_pair)
  assert run.note == ""


def test_train_pair_builds_the_configs_network(tmp_path):
  # syn-digits -> mnist: the pair's own (paper) network is the SVHN net; the
  # quick preset must still train the MNIST net, and say so in the summary.
  rng = np.random.default_rng(0)

  def domain(name, n):
    return Domain(
      name, rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32), 10, "random"
    )

  data = PairData(domain("syn-digits", 16), domain("syn-digits", 8), domain("mnist", 16), domain("mnist", 8))
  result = train_pair(
    PAIRS["syn-digits->mnist"],
    "source_only",
    out_dir=tmp_path / "run",
    preset="quick",
    steps=1,
    batch_size=4,
    data=data,
    progress=False,
    plots=False,
  )
  assert count_params(result.state.params) == MNIST_NET
  assert result.summary["network"] == "mnist"
  # run.json names the run and records every value it used
  held = json.loads((tmp_path / "run" / "run.json").read_text())
  assert held["config"]["network"] == "mnist" and held["config"]["train"]["total_steps"] == 1
  assert held["config"]["train"]["optimizer"] == "adam" and held["config"]["train"]["batch_size"] == 4
  # The finished run is reused for the same run only; asked for another, it is refused by name.
  from dann_jax.runner.runs import train_or_reuse

  same = dict(preset="quick", steps=1, batch_size=4, data=data, progress=False, plots=False)
  again = train_or_reuse(PAIRS["syn-digits->mnist"], "source_only", tmp_path / "run", **same)
  assert again.summary == result.summary
  with pytest.raises(ValueError, match=r"holds a finished run .*`steps=1` where this asks for 2"):
    train_or_reuse(PAIRS["syn-digits->mnist"], "source_only", tmp_path / "run", **{**same, "steps": 2})
  with pytest.raises(ValueError, match=r"holds a finished run .*`method='source_only'` where this asks for 'dann'"):
    train_or_reuse(PAIRS["syn-digits->mnist"], "dann", tmp_path / "run", **same)


def test_quick_preset_keeps_the_papers_lambda_schedule():
  run = make_config(PAIRS["mnist->mnist-m"], "dann", "quick")
  c = run.train
  assert (c.optimizer, c.learning_rate, c.adam_b1) == ("adam", 1e-3, 0.5)
  assert (c.gamma, c.lam_max, c.lam_warmup) == (10.0, 1.0, 0.0)
  assert c.total_steps == 3000 and run.source_holdout == 5000
  assert make_config(PAIRS["mnist->mnist-m"], "dann", "paper").source_holdout == 0


def test_overrides_set_config_fields_and_name_unknown_ones():
  pair = PAIRS["mnist->mnist-m"]
  run = make_config(pair, "dann", "quick", overrides={"lam_max": 0.5}, source_holdout=100)
  assert run.train.lam_max == 0.5 and run.source_holdout == 100
  assert run.train.adam_b1 == 0.5  # the rest of the preset stays
  with pytest.raises(ValueError, match="unknown config fields.*lr"):
    make_config(pair, "dann", "quick", overrides={"lr": 0.1})
  with pytest.raises(ValueError, match="must be > 0"):
    make_config(pair, "dann", "quick", overrides={"max_norm": -1.0})


def test_source_holdout_is_a_fixed_disjoint_split():
  from dann_jax.data.pair_data import holdout_size, split_holdout, with_holdout

  assert holdout_size(5000, 60_000) == 5000
  assert holdout_size(5000, 40) == 4  # at most a tenth
  assert holdout_size(0, 40) == 0
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
  images[:, 0, 0, 0] = np.arange(50)  # a tag per image
  source = Domain("mnist", images, np.arange(50) % 10, 10, "random")
  rest, held = split_holdout(source, 5)
  tags = lambda d: d.images[:, 0, 0, 0].tolist()
  assert len(held) == 5 and len(rest) == 45
  assert sorted(tags(rest) + tags(held)) == list(range(50))
  assert tags(rest) == sorted(tags(rest))  # order kept
  np.testing.assert_array_equal(held.labels, np.asarray(tags(held)) % 10)
  # The same images every time (the split does not follow the run's seed).
  assert tags(split_holdout(source, 5)[1]) == tags(held)
  data = PairData(source, source, source, source)
  assert tags(with_holdout(data, 5).source_val) == tags(held)
  with pytest.raises(ValueError, match="hold out 5 source images"):
    with_holdout(with_holdout(data, 5), 0)


def test_a_run_config_is_named_by_its_identity_and_rebuilt_from_it():
  pair = PAIRS["mnist->mnist-m"]
  config = make_config(
    pair, "dann", "quick", steps=300, batch_size=32, seeds=[3], overrides={"lam_max": 0.5}, keep_best="source-risk"
  )
  assert config.train.seed == 3 and config.train.total_steps == 300 and config.train.batch_size == 32
  identity = json.loads(json.dumps(config.identity()))  # as run.json holds it
  assert config_of(identity) == config
  assert config.resolved()["train"]["lam_max"] == 0.5
  assert config.resolved()["source_holdout"] == 5000


def test_the_seeds_of_a_run_are_held_once_as_its_first_seed_and_a_count():
  config = make_config(PAIRS["mnist->mnist-m"], "dann", "quick", steps=30, seeds=[4, 5, 6])
  assert config.train.seed == 4 and config.num_seeds == 3 and config.seeds == (4, 5, 6)
  assert "seeds" not in {f.name for f in dataclasses.fields(config)}
  assert config_of(json.loads(json.dumps(config.identity()))) == config


@pytest.mark.parametrize(
  "kwargs, message",
  [
    ({"seeds": []}, "seeds` is empty"),
    ({"seeds": [0, 2]}, r"\[0, 2\] are not consecutive"),
    ({"api": "jax"}, "unknown api"),
    ({"api": "nnx", "seeds": [0, 1]}, "one seed"),
    ({"keep_best": "source-risk", "seeds": [0, 1]}, "separate runs"),
    ({"keep_best": "source-risk", "source_holdout": 0}, "source_holdout > 0"),
    ({"keep_best": "target-accuracy"}, "target-accuracy"),
    ({"overrides": {"seed": 3}}, r"give 'seeds' as their own"),
    ({"overrides": {"total_steps": 10, "method": "dann"}}, r"give 'method', 'steps' as their own"),
  ],
)
def test_make_config_names_the_argument_that_is_wrong(kwargs, message):
  with pytest.raises(ValueError, match=message):
    make_config(PAIRS["mnist->mnist-m"], "dann", "quick", **kwargs)


def test_evaluation_cadence_is_overridden_like_a_train_field():
  from dann_jax.cli.train import parse_overrides

  assert parse_overrides(["source_holdout=100"]) == {"source_holdout": 100}  # make_config's own argument
  overrides = parse_overrides(["eval_every=200", "learning_rate=0.02"])
  assert overrides == {"eval_every": 200, "learning_rate": 0.02}
  config = make_config(PAIRS["mnist->mnist-m"], "dann", "paper", overrides=overrides)
  assert (config.eval_every, config.eval_size, config.train.learning_rate) == (200, 5000, 0.02)
  assert config.train.optimizer == "sgd"  # the rest of the preset stays
  assert config_of(json.loads(json.dumps(config.identity()))) == config
  with pytest.raises(ValueError, match=r"overrides\['eval_size'\]=0 must be a positive integer"):
    make_config(PAIRS["mnist->mnist-m"], "dann", "paper", overrides={"eval_size": 0})
