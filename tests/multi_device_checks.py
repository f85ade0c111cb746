"""Multi-device equality checks, run by tests/test_parallel.py in a subprocess.

The parent sets `XLA_FLAGS=--xla_force_host_platform_device_count=4` before
this process imports jax. Each check prints one JSON line
`{"check": name, "ok": bool, "error": str}`, so one process (one jax import,
one reference compilation) serves every test.

Run by hand:
  XLA_FLAGS=--xla_force_host_platform_device_count=4 \
    PYTHONPATH=. python tests/multi_device_checks.py
"""

import json
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from dann_jax.core.config import TrainConfig
from dann_jax.core.models import mnist_dann
from dann_jax.core.train import create_train_state
from dann_jax.data.batching import make_domain_pair, sample_batch
from dann_jax.training import parallel
from dann_jax.training.loop import DATA_STREAM, fit, jit_train_on_pair

NUM_DEVICES = 4
BATCH = 16  # two source and two target rows per device
STEPS = 3


def tiny_pair():
  rng = np.random.default_rng(0)

  def domain(n, shift):
    images = rng.integers(0, 256 - shift, (n, 32, 32, 3)) + shift
    return images.astype(np.uint8), rng.integers(0, 10, n).astype(np.int32)

  return make_domain_pair(domain(40, 0), domain(40, 60))


def initial_state():
  config = TrainConfig(total_steps=10, batch_size=BATCH)
  return create_train_state(mnist_dann(), config, np.zeros((2, 32, 32, 3), np.float32))


_INITIAL = initial_state()


def fresh_state():
  """A copy of the one initial state.

  Runners donate their input; and a state built anew would carry new schedule
  closures (static fields), so every jitted runner would compile again.
  """
  return jax.tree.map(jnp.copy, _INITIAL)


def assert_close(actual, expected):
  jax.tree.map(
    lambda a, e: np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-5, atol=1e-6), actual, expected
  )


def assert_same_step(state, metrics, reference):
  ref_state, ref_metrics = reference
  assert int(state.step) == STEPS, int(state.step)
  assert set(state.params) == {"features", "label_predictor", "domain_classifier"}
  assert_close(state.params, ref_state.params)
  assert_close(state.opt_state, ref_state.opt_state)
  assert_close({k: metrics[k] for k in ref_metrics}, ref_metrics)


def main():
  assert jax.device_count() == NUM_DEVICES, jax.devices()
  pair = tiny_pair()
  reference = jax.device_get(jit_train_on_pair(fresh_state(), pair, STEPS, BATCH))
  moved = jax.tree.map(lambda a, b: not np.allclose(a, b), reference[0].params, _INITIAL.params)
  assert all(jax.tree.leaves(moved)), "the reference steps left params alone"
  mesh = parallel.make_mesh(NUM_DEVICES)
  sharded = parallel.make_sharded_runner(mesh)
  pmapped = parallel.make_pmap_runner(jax.devices()[:NUM_DEVICES])

  def sharded_runner():
    state, metrics = sharded(fresh_state(), pair, STEPS, BATCH)
    leaf = state.params["features"]
    assert len(leaf["Conv_0"]["kernel"].sharding.device_set) == NUM_DEVICES
    assert_same_step(state, metrics, reference)

  def pmap_runner():
    state, metrics = pmapped(fresh_state(), pair, STEPS, BATCH)
    kernel = state.params["features"]["Conv_0"]["kernel"]
    assert len(kernel.sharding.device_set) == 1, kernel.sharding
    assert state.key.shape == (), state.key.shape
    assert_same_step(state, metrics, reference)

  def pmap_train_step():
    devices = jax.devices()[:NUM_DEVICES]
    step = parallel.make_pmap_train_step(devices=devices)
    # The batches `train_on_pair` samples, so the reference applies.
    data_key = jax.random.fold_in(_INITIAL.key, DATA_STREAM)
    state = parallel.replicate(fresh_state(), devices)
    for i in range(STEPS):
      batch = sample_batch(pair, data_key, i, BATCH)
      state, _ = step(state, parallel.split_batch(batch, NUM_DEVICES))
    assert_close(parallel.unreplicate(state).params, reference[0].params)

  def fit_with_runners():
    # The same chunk length as above: no new compilation.
    for runner in (sharded, pmapped):
      state = fit(fresh_state(), pair, num_steps=STEPS, batch_size=BATCH, num_classes=10, chunk=STEPS, runner=runner)
      assert_close(state.params, reference[0].params)

  def baselines_on_half_batches():
    # Source only and train on target sample one half of each batch (8 rows: 2 per device).
    for method in ("source_only", "target_only"):
      config = TrainConfig(method=method, total_steps=10, batch_size=BATCH)
      start = create_train_state(mnist_dann(), config, np.zeros((2, 32, 32, 3), np.float32))
      alone = jax.device_get(jit_train_on_pair(jax.tree.map(jnp.copy, start), pair, STEPS, BATCH))
      for runner in (parallel.make_sharded_runner(mesh), parallel.make_pmap_runner(jax.devices()[:NUM_DEVICES])):
        state, metrics = runner(jax.tree.map(jnp.copy, start), pair, STEPS, BATCH)
        assert "domain_loss" not in metrics, sorted(metrics)
        assert_same_step(state, metrics, alone)

  def label_predictor_on_labelled_rows():
    # DANN's label predictor sees each device's source share only: 8 of 16 rows globally, 2 of 4 per device.
    import flax.linen as nn

    seen = []

    class Head(nn.Module):
      @nn.compact
      def __call__(self, x, train=False):
        seen.append(x.shape[0])
        return nn.Dense(10)(x)

    model = mnist_dann().clone(label_predictor=Head())
    start = create_train_state(model, TrainConfig(total_steps=10, batch_size=BATCH), np.zeros((2, 32, 32, 3)))
    for runner, rows in (
      (parallel.make_sharded_runner(mesh, stepwise=True), BATCH // 2),
      (parallel.make_sharded_runner(mesh, stepwise=False), BATCH // 2),
      (parallel.make_pmap_runner(jax.devices()[:NUM_DEVICES]), BATCH // 2 // NUM_DEVICES),
    ):
      seen.clear()
      runner(jax.tree.map(jnp.copy, start), pair, 1, BATCH)
      assert seen and set(seen) == {rows}, (seen, rows)

  def too_many_devices():
    for make in (lambda: parallel.make_mesh(NUM_DEVICES + 1), lambda: parallel.make_runner("pmap", NUM_DEVICES + 1)):
      try:
        make()
      except ValueError as e:
        assert f"only {NUM_DEVICES}" in str(e) and "`num_devices=4`" in str(e), e
      else:
        raise AssertionError("no ValueError for too many devices")

  def indivisible_batch():
    runner = parallel.make_runner("sharding", NUM_DEVICES)
    try:
      runner(fresh_state(), pair, STEPS, 20)
    except ValueError as e:
      assert "each half (10)" in str(e) and "use 16 or 24" in str(e), e
    else:
      raise AssertionError("no ValueError for batch 20 on 4 devices")

  checks = (
    sharded_runner,
    pmap_runner,
    pmap_train_step,
    fit_with_runners,
    baselines_on_half_batches,
    label_predictor_on_labelled_rows,
    too_many_devices,
    indivisible_batch,
  )
  for check in checks:
    try:
      check()
      result = {"check": check.__name__, "ok": True, "error": ""}
    except Exception:  # pylint: disable=broad-except
      result = {"check": check.__name__, "ok": False, "error": traceback.format_exc()}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
