"""The saddle-point objective: values against numpy and gradients against (4)-(6)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dann_jax.core import methods
from dann_jax.core.models import mnist_dann
from dann_jax.core.objective import saddle_point_loss


def _batch(key, n=8, classes=10):
  k1, k2 = jax.random.split(key)
  domain = jnp.array([0] * (n // 2) + [1] * (n // 2), jnp.int32)
  return {
    "image": jax.random.normal(k1, (n, 32, 32, 3)),
    "label": jax.random.randint(k2, (n,), 0, classes),
    "domain": domain,
    "label_mask": domain == 0,
  }


def _np_losses(class_logits, domain_logits, batch, mask):
  c = np.asarray(class_logits, np.float64)
  logp = c - c.max(1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
  ce = -logp[np.arange(len(c)), np.asarray(batch["label"])]
  ly = (ce * mask).sum() / max(mask.sum(), 1)
  z = np.asarray(domain_logits, np.float64)
  d = np.asarray(batch["domain"], np.float64)
  p = 1 / (1 + np.exp(-z))
  ld = np.mean(-(d * np.log(p) + (1 - d) * np.log(1 - p)))
  return ly, ld


@pytest.mark.parametrize("method", ["dann", "source_only", "target_only"])
def test_values_against_numpy(method):
  key = jax.random.key(0)
  batch = _batch(key)
  class_logits = jax.random.normal(jax.random.key(1), (8, 10)) * 3
  domain_logits = jax.random.normal(jax.random.key(2), (8,)) * 2
  # Semi-supervised: reveal one target label.
  batch["label_mask"] = batch["label_mask"].at[5].set(True)
  loss_fn = lambda c, d, b: methods.batch_loss(methods.get(method), c, d, b)
  loss, m = jax.jit(loss_fn)(class_logits, domain_logits, batch)
  mask = np.asarray(batch["domain"]) == 1 if method == "target_only" else np.asarray(batch["label_mask"])
  ly, ld = _np_losses(class_logits, domain_logits, batch, mask.astype(float))
  np.testing.assert_allclose(m["label_loss"], ly, rtol=1e-5)
  np.testing.assert_allclose(m["domain_loss"], ld, rtol=1e-5)
  np.testing.assert_allclose(loss, ly + ld if method == "dann" else ly, rtol=1e-5)
  acc = np.mean((np.asarray(domain_logits) > 0) == (np.asarray(batch["domain"]) == 1))
  np.testing.assert_allclose(m["domain_accuracy"], acc)


def test_unknown_method():
  with pytest.raises(ValueError, match="unknown method='adda'.*package.module:ATTRIBUTE"):
    methods.get("adda")


@pytest.mark.slow
def test_gradient_equals_paper_updates_4_to_6():
  """d/dθ_y = dL_y/dθ_y, d/dθ_d = dL_d/dθ_d, d/dθ_f = dL_y/dθ_f - λ dL_d/dθ_f."""
  model = mnist_dann()
  batch = _batch(jax.random.key(3))
  params = model.init(jax.random.key(4), batch["image"], 0.0, train=False)["params"]
  lam = 0.37

  def total(params):
    c, d = model.apply({"params": params}, batch["image"], lam, train=True)
    return saddle_point_loss(c, d, batch)[0]

  # The same losses computed module by module, with no GRL anywhere.
  def features(pf):
    return model.features.apply({"params": pf}, batch["image"])

  def label_loss(pf, py):
    c = model.label_predictor.apply({"params": py}, features(pf))
    return methods.batch_loss(methods.SOURCE_ONLY, c, jnp.zeros(8), batch)[0]

  def domain_loss(pf, pd):
    d = model.domain_classifier.apply({"params": pd}, features(pf))[:, 0]
    return saddle_point_loss(jnp.zeros((8, 10)), d, batch)[1]["domain_loss"]

  g = jax.jit(jax.grad(total))(params)
  dly_f, dly_y = jax.grad(label_loss, argnums=(0, 1))(params["features"], params["label_predictor"])
  dld_f, dld_d = jax.grad(domain_loss, argnums=(0, 1))(params["features"], params["domain_classifier"])

  close = lambda a, b: jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-4, atol=1e-6), a, b)
  close(g["label_predictor"], dly_y)
  close(g["domain_classifier"], dld_d)
  close(g["features"], jax.tree.map(lambda a, b: a - lam * b, dly_f, dld_f))
  # The reversal matters: the feature gradient is not the plain sum.
  plain = jax.tree.map(lambda a, b: a + b, dly_f, dld_f)
  assert not np.allclose(g["features"]["Conv_0"]["kernel"], plain["Conv_0"]["kernel"], rtol=1e-3)


def test_a_batch_without_domain_is_named():
  import jax.numpy as jnp

  batch = {"label": jnp.zeros(4, jnp.int32), "label_mask": jnp.ones(4, bool)}
  with pytest.raises(ValueError, match=r"lacks \['domain'\]"):
    saddle_point_loss(jnp.zeros((4, 10)), jnp.zeros(4), batch)


def test_labels_out_of_range_are_named_eagerly_and_ignored_outside_the_mask():
  logits, domain_logits = jnp.zeros((4, 10)), jnp.zeros(4)
  batch = {
    "label": jnp.array([0, 1, 12, -1]),
    "domain": jnp.array([0, 0, 1, 1]),
    "label_mask": jnp.array([True, True, False, False]),
  }
  loss, _ = saddle_point_loss(logits, domain_logits, batch)
  # rows outside the mask do not count: the same loss as with valid labels there
  clean = dict(batch, label=jnp.array([0, 1, 3, 4]))
  np.testing.assert_allclose(loss, saddle_point_loss(logits, domain_logits, clean)[0])
  assert np.isfinite(jax.jit(lambda b: saddle_point_loss(logits, domain_logits, b)[0])(batch))
  bad = dict(batch, label_mask=jnp.array([True, True, True, False]))
  with pytest.raises(ValueError, match=r"holds \[12\] where label_mask is set.*\[0, 10\)"):
    saddle_point_loss(logits, domain_logits, bad)


def test_labels_out_of_range_under_jit_are_caught_by_checkify():
  from jax.experimental import checkify

  logits, domain_logits = jnp.zeros((4, 10)), jnp.zeros(4)
  bad = {
    "label": jnp.array([0, -1, 2, 3]),
    "domain": jnp.array([0, 0, 1, 1]),
    "label_mask": jnp.array([True, True, False, False]),
  }
  checked = checkify.checkify(jax.jit(lambda b: saddle_point_loss(logits, domain_logits, b)[0]))
  err, _ = checked(bad)
  assert "must lie in [0, 10)" in err.get()
  err, _ = checked(dict(bad, label=jnp.array([0, 9, 2, 3])))
  assert err.get() is None


def test_shards_with_unequal_labelled_rows_sum_to_the_global_objective():
  # Three shards of 4 rows (vmap with an axis name stands in for devices):
  # 4, 1 and 0 labelled source rows, and one target row with a revealed label.
  rng = np.random.default_rng(0)
  class_logits = rng.normal(size=(3, 4, 5)).astype(np.float32)
  domain_logits = rng.normal(size=(3, 4)).astype(np.float32)
  domain = np.array([[0, 0, 0, 0], [0, 1, 1, 1], [1, 1, 1, 1]])
  mask = np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]], bool)  # shard 1 reveals one target label
  labels = rng.integers(0, 5, size=(3, 4))
  batch = {"label": jnp.asarray(labels), "domain": jnp.asarray(domain), "label_mask": jnp.asarray(mask)}
  sharded = jax.vmap(
    lambda c, d, b: saddle_point_loss(c, d, b, axis_name="devices"), axis_name="devices", in_axes=(0, 0, 0)
  )
  losses, metrics = sharded(jnp.asarray(class_logits), jnp.asarray(domain_logits), batch)
  flat = {k: np.asarray(v).reshape(-1) for k, v in batch.items()}
  ly, ld = _np_losses(class_logits.reshape(-1, 5), domain_logits.reshape(-1), flat, mask.reshape(-1))
  # Each shard's loss is its share of the global mean: they add up to it.
  assert float(np.sum(losses)) == pytest.approx(ly + ld, rel=1e-5)
  np.testing.assert_allclose(np.asarray(metrics["label_loss"]), ly, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(metrics["domain_loss"]), ld, rtol=1e-5)


def test_the_library_runners_trace_without_the_label_check():
  """The loop's jitted steps carry no effect (the check's effect would keep jit
  off its C++ dispatch path); a plain `jax.jit(train_step)` keeps the check."""
  from dann_jax.core.config import TrainConfig
  from dann_jax.core.train import create_train_state, train_step
  from dann_jax.data.batching import make_domain_pair
  from dann_jax.training import loop

  batch = _batch(jax.random.key(0))
  state = create_train_state(mnist_dann(), TrainConfig(total_steps=10, batch_size=8), batch["image"])
  assert jax.make_jaxpr(jax.jit(train_step))(state, batch).effects  # the check is there
  assert not jax.make_jaxpr(loop.jit_train_step)(state, batch).effects
  rng = np.random.default_rng(0)
  domain = (rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 16).astype(np.int32))
  pair = make_domain_pair(domain, domain)
  assert not jax.make_jaxpr(loop.jit_step_on_pair, static_argnums=2)(state, pair, 8).effects
  # The context ends with the trace: the plain step still checks afterwards.
  assert jax.make_jaxpr(jax.jit(train_step))(state, batch).effects


def test_the_documented_checkify_line_catches_a_bad_label_in_the_jitted_step():
  from jax.experimental import checkify

  from dann_jax.core.config import TrainConfig
  from dann_jax.core.train import create_train_state, train_step

  batch = _batch(jax.random.key(0))
  state = create_train_state(mnist_dann(), TrainConfig(total_steps=10, batch_size=8), batch["image"])
  bad = dict(batch, label=batch["label"].at[0].set(12))  # row 0 is a source row: trained on
  err, _ = checkify.checkify(jax.jit(train_step))(state, bad)
  with pytest.raises(checkify.JaxRuntimeError, match=r"must lie in \[0, 10\)"):
    err.throw()
  err, _ = checkify.checkify(jax.jit(train_step))(state, dict(batch, label=batch["label"].at[7].set(12)))
  err.throw()  # row 7 is a target row, not trained on by DANN: no error
