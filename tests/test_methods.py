"""The method seam: the registry, and a method written outside the package trained through `fit` and the CLI."""

import dataclasses
import json
import textwrap

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TRAIN, assert_trees_close, image_batch

from dann_jax.cli import main
from dann_jax.core import methods
from dann_jax.core.config import TrainConfig
from dann_jax.core.models import mnist_dann, svhn_dann
from dann_jax.core.objective import saddle_point_loss
from dann_jax.core.train import create_train_state, train_step
from dann_jax.data.batching import make_domain_pair
from dann_jax.names import BUILTIN_METHODS
from dann_jax.training.loop import fit

# One file, as a user would write it: DANN plus a weighted entropy term on the target's predictions.
OUTSIDE = textwrap.dedent(
  '''
  import jax
  import jax.numpy as jnp

  from dann_jax.core import methods, objective
  WEIGHT = 0.5


  def dann_with_target_entropy(class_logits, domain_logits, batch, *, label_mask, axis_name=None):
    loss, metrics = objective.saddle_point_loss(
      class_logits, domain_logits, batch, label_mask=label_mask, axis_name=axis_name
    )
    target = (batch["domain"] == 1).astype(jnp.float32)
    entropy = -jnp.sum(jax.nn.softmax(class_logits) * jax.nn.log_softmax(class_logits), axis=-1)
    share = jnp.sum(entropy * target) / jnp.maximum(objective.global_sum(target.sum(), axis_name), 1.0)
    metrics = dict(metrics, target_entropy=objective.global_sum(share, axis_name))
    metrics["loss"] = metrics["loss"] + WEIGHT * metrics["target_entropy"]
    return loss + WEIGHT * share, metrics


  ENTROPY_DANN = methods.register(
    methods.Method("dann-entropy", dann_with_target_entropy, description="DANN + target entropy")
  )
  '''
)


@pytest.fixture
def outside(tmp_path, monkeypatch):
  """The module above, importable as `my_methods`."""
  folder = tmp_path / "plugins"
  folder.mkdir()
  (folder / "my_methods.py").write_text(OUTSIDE)
  monkeypatch.syspath_prepend(str(folder))
  monkeypatch.setenv("PYTHONPATH", str(folder))
  yield "my_methods"
  methods._REGISTRY.pop("dann-entropy", None)


def _pair():
  rng = np.random.default_rng(0)
  source = (rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 40).astype(np.int32))
  target = (rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 24).astype(np.int32))
  return make_domain_pair(source, target)


@pytest.mark.slow
def test_an_outside_method_trains_through_fit(outside):
  import importlib

  module = importlib.import_module(outside)
  assert methods.get("dann-entropy") is module.ENTROPY_DANN
  assert methods.get(f"{outside}:ENTROPY_DANN") is module.ENTROPY_DANN
  config = TrainConfig(method="dann-entropy", total_steps=6, batch_size=16)
  state = create_train_state(mnist_dann(), config, jnp.zeros((1, 32, 32, 3)))
  assert state.method is module.ENTROPY_DANN
  seen = []
  trained = fit(
    state, _pair(), num_steps=6, batch_size=16, num_classes=10, chunk=3, callback=lambda s, m: seen.append(m)
  )
  first = {k: float(v[0]) for k, v in seen[0].items()}
  # The logged objective is the method's own: DANN's two terms plus the weighted entropy.
  assert first["loss"] == pytest.approx(first["label_loss"] + first["domain_loss"] + 0.5 * first["target_entropy"])
  assert 0.0 < first["target_entropy"] <= np.log(10) + 1e-5
  # And the step descends it: the parameters differ from plain DANN's after the same steps.
  plain = fit(
    create_train_state(mnist_dann(), config.replace(method="dann"), jnp.zeros((1, 32, 32, 3))),
    _pair(),
    num_steps=6,
    batch_size=16,
    num_classes=10,
    chunk=3,
  )
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), trained.params, plain.params))
  assert max(moved) > 1e-6


def test_an_outside_method_loss_matches_its_definition_at_a_batch(outside):
  import importlib

  module = importlib.import_module(outside)
  rng = np.random.default_rng(1)
  c = jnp.asarray(rng.normal(size=(8, 10)).astype(np.float32))
  d = jnp.asarray(rng.normal(size=8).astype(np.float32))
  domain = jnp.array([0, 0, 0, 0, 1, 1, 1, 1])
  batch = {"label": jnp.asarray(rng.integers(0, 10, 8)), "domain": domain, "label_mask": domain == 0}
  loss, metrics = methods.batch_loss(module.ENTROPY_DANN, c, d, batch)
  p = np.exp(np.asarray(c, np.float64))
  p /= p.sum(1, keepdims=True)
  entropy = -(p * np.log(p)).sum(1)[4:].mean()
  dann = float(saddle_point_loss(c, d, batch)[0])
  assert float(loss) == pytest.approx(dann + 0.5 * entropy, rel=1e-5)
  assert float(metrics["target_entropy"]) == pytest.approx(entropy, rel=1e-5)


@pytest.mark.slow
def test_an_outside_method_trains_through_the_cli_and_resumes(outside, tiny_mnist, tmp_path, capsys):
  out = tmp_path / "run"
  spec = f"{outside}:ENTROPY_DANN"
  assert main(TRAIN + ["--method", spec, "--out", str(out)]) == 0
  summary = json.loads((out / "summary.json").read_text())
  assert summary["method"] == spec
  rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  assert "target_entropy" in rows[-1] and np.isfinite(rows[-1]["target_entropy"])
  capsys.readouterr()
  # The run folder names the method, so the same run resumes (nothing left: no steps).
  assert main(TRAIN + ["--method", spec, "--out", str(out), "--resume"]) == 0
  assert json.loads((out / "summary.json").read_text())["steps_run"] == 0


@pytest.mark.parametrize(
  "method,message",
  [
    ("adda", "unknown method='adda'; choose one of"),
    ("no_such_module_here:X", "cannot import 'no_such_module_here'"),
    ("json:dumps", "json.dumps is not a dann_jax.core.methods.Method"),
    (":X", "importing '' failed"),
  ],
)
def test_a_bad_method_is_one_clear_error(method, message, tmp_path, capsys):
  with pytest.raises(ValueError, match=message):
    methods.get(method)
  assert main(TRAIN + ["--method", method, "--out", str(tmp_path / "run")]) == 2
  err = capsys.readouterr().err
  assert message in err and "Traceback" not in err
  assert not (tmp_path / "run").exists()


def test_the_registry_refuses_a_second_method_under_a_taken_name():
  with pytest.raises(ValueError, match="already registered"):
    methods.register(methods.Method("dann", methods.objective.supervised_loss))
  assert methods.register(methods.DANN) is methods.DANN  # the same entry again is fine
  with pytest.raises(ValueError, match="letters, digits"):
    methods.Method("my method", methods.objective.supervised_loss)
  with pytest.raises(ValueError, match="labelled='both'"):
    methods.Method("mine", methods.objective.supervised_loss, labelled="both")


def test_the_cli_spells_the_built_in_methods():
  assert BUILTIN_METHODS == methods.names()[: len(BUILTIN_METHODS)]
  assert {methods.get(n).adversarial for n in BUILTIN_METHODS} == {True, False}


_TRACED = []  # one entry per time a step traces the domain classifier below


class _CountedHead(flax.linen.Module):
  """A domain classifier that counts how often a step traces it."""

  @flax.linen.compact
  def __call__(self, x, train: bool = False):
    _TRACED.append(1)
    return flax.linen.Dense(1)(x)


@pytest.mark.parametrize("method, traced", [("source_only", 0), ("target_only", 0), ("dann", 1)])
def test_a_baseline_step_does_not_evaluate_the_domain_classifier(method, traced):
  model = mnist_dann().clone(domain_classifier=_CountedHead())
  batch = image_batch(jax.random.key(0))
  state = create_train_state(model, TrainConfig(method=method), batch["image"])
  _TRACED.clear()
  state, metrics = jax.jit(train_step)(state, batch)
  assert len(_TRACED) == traced
  assert ("domain_loss" in metrics) == bool(traced)


@pytest.mark.parametrize("factory", [mnist_dann, svhn_dann])
@pytest.mark.parametrize("method", ["source_only", "target_only"])
def test_a_baseline_trained_on_half_batches_takes_the_steps_of_whole_ones(method, factory):
  # the same method reading whole batches (both halves, the domain classifier run and ignored)
  whole = dataclasses.replace(methods.get(method), name=f"{method}-whole", labelled_rows_only=False)
  pair = _pair()
  assert methods.batch_rows(methods.get(method), False) == ("source" if method == "source_only" else "target")
  assert methods.batch_rows(whole, False) == "both"
  states = []
  for m in (methods.get(method), whole):
    config = TrainConfig(method=m, total_steps=6, batch_size=8)
    state = create_train_state(factory(), config, jnp.zeros((1, 32, 32, 3)), key=jax.random.key(5))
    states.append(fit(state, pair, num_steps=6, batch_size=8, num_classes=10))
  if factory is svhn_dann and method == "target_only":
    # dropout draws its mask by row: the target rows are rows 4-7 of a whole batch, rows 0-3 of a half one
    return
  assert_trees_close(states[0].params, states[1].params, atol=1e-5, rtol=1e-4)


def test_revealed_target_labels_keep_both_halves_for_source_only():
  assert methods.batch_rows(methods.SOURCE_ONLY, target_labels_revealed=True) == "both"
  assert methods.batch_rows(methods.DANN, target_labels_revealed=False) == "both"
  with pytest.raises(ValueError, match="labelled_rows_only needs adversarial=False"):
    methods.Method("half-dann", methods.DANN.loss, labelled_rows_only=True)


class _RowsHead(flax.linen.Module):
  """A label predictor that records how many rows a step traces it on."""

  @flax.linen.compact
  def __call__(self, x, train: bool = False):
    _TRACED.append(x.shape[0])
    return flax.linen.Dense(10)(x)


def test_the_labelled_prefix_of_the_loops_batches():
  dann, so = methods.DANN, methods.SOURCE_ONLY
  assert methods.labelled_prefix(dann, 128, target_labels_revealed=False) == 64
  assert methods.labelled_prefix(dann, 128, target_labels_revealed=True) is None  # labelled target rows too
  assert methods.labelled_prefix(so, 128, False) is None  # its batches are the labelled rows already
  own = dataclasses.replace(dann, name="dann-own", labelled_logits_only=False)  # may read every row's logits
  assert methods.labelled_prefix(own, 128, False) is None
  on_target = dataclasses.replace(dann, name="dann-target", labelled="target")  # labelled rows are the second half
  assert methods.labelled_prefix(on_target, 128, False) is None


@pytest.mark.parametrize("factory", [mnist_dann, svhn_dann])
def test_dann_on_the_labelled_prefix_takes_the_whole_batchs_steps(factory):
  """The label predictor on the labelled rows alone: the same steps (dropout masks included), less work."""
  pair = _pair()
  states = []
  for method in (methods.DANN, dataclasses.replace(methods.DANN, name="dann-all-rows", labelled_logits_only=False)):
    config = TrainConfig(method=method, total_steps=6, batch_size=8)
    state = create_train_state(factory(), config, jnp.zeros((1, 32, 32, 3)), key=jax.random.key(5))
    states.append(fit(state, pair, num_steps=6, batch_size=8, num_classes=10))
  assert_trees_close(states[0].params, states[1].params, atol=1e-5, rtol=1e-4)


def test_the_loop_runs_the_label_predictor_on_the_labelled_rows_only():
  from dann_jax.training import loop

  model = mnist_dann().clone(label_predictor=_RowsHead())
  state = create_train_state(model, TrainConfig(total_steps=6, batch_size=8), jnp.zeros((1, 32, 32, 3)))
  _TRACED.clear()
  jax.eval_shape(lambda s, p: loop.step_on_pair(s, p, 8), state, _pair())
  assert _TRACED == [4]
  _TRACED.clear()
  jax.eval_shape(train_step, state, image_batch(jax.random.key(0)))  # no promise: every row
  assert _TRACED == [8]
  # the NNX front door: the same network bridged, stepped by the NNX loop
  from flax import nnx

  from dann_jax.core import nnx as dann_nnx

  nnx_state = dann_nnx.create_train_state(dann_nnx.bridge(model, rngs=nnx.Rngs(0)), TrainConfig(total_steps=6))
  graphdef, arrays = nnx.split(nnx_state)
  _TRACED.clear()
  jax.eval_shape(lambda a, p: loop.nnx_step_on_pair(graphdef, a, p, 8), arrays, _pair())
  assert _TRACED[-1] == 4


class _OwnNetwork(flax.linen.Module):
  """A network of one's own with DANN's call signature and no `labelled_rows`."""

  @flax.linen.compact
  def __call__(self, x, lam, *, train: bool):
    f = x.reshape(x.shape[0], -1)[:, :16]
    return flax.linen.Dense(10)(f), flax.linen.Dense(1)(f)[:, 0]


def test_a_network_without_labelled_rows_still_trains_on_the_prefix_promise():
  batch = image_batch(jax.random.key(0))
  state = create_train_state(_OwnNetwork(), TrainConfig(total_steps=6, batch_size=8), batch["image"])
  promised, _ = train_step(state, batch, labelled_rows=4)
  plain, _ = train_step(state, batch)
  assert_trees_close(promised.params, plain.params)


@pytest.mark.parametrize(
  "labelled_rows, rows", [(3, [0, 1, 2]), ((1, 3), [0, 1, 2]), ((4, 2), [0, 1, 4, 5, 8, 9, 12, 13])]
)
def test_labelled_rows_name_a_prefix_or_the_first_rows_of_each_block(labelled_rows, rows):
  from dann_jax.core.models import labelled_part, spread_labelled

  x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
  part = labelled_part(jnp.asarray(x), labelled_rows)
  np.testing.assert_array_equal(part, x[rows])
  expected = np.zeros_like(x)
  expected[rows] = x[rows]
  np.testing.assert_array_equal(spread_labelled(part, 16, labelled_rows), expected)
