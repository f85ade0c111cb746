"""Multi-device training: batch split, device checks, 4 fake devices = 1.

The equality checks need `XLA_FLAGS=--xla_force_host_platform_device_count=4`
set before jax is imported, so they run once in a subprocess
(`tests/multi_device_checks.py`) and each test here reads its own check's
result.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from dann_jax.training import parallel

TESTS = pathlib.Path(__file__).parent
CHECKS = (
  "sharded_runner",
  "pmap_runner",
  "pmap_train_step",
  "fit_with_runners",
  "baselines_on_half_batches",
  "label_predictor_on_labelled_rows",
  "too_many_devices",
  "indivisible_batch",
)


@pytest.fixture(scope="module")
def fake_device_results():
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(TESTS.parent))
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
  proc = subprocess.run(
    [sys.executable, str(TESTS / "multi_device_checks.py")], env=env, capture_output=True, text=True, timeout=600
  )
  results = {}
  for line in proc.stdout.splitlines():
    if line.startswith("{"):
      result = json.loads(line)
      results[result["check"]] = result
  if not results:
    pytest.fail(f"the 4-device subprocess failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
  return results


@pytest.mark.slow
@pytest.mark.parametrize("check", CHECKS)
def test_four_fake_devices(fake_device_results, check):
  result = fake_device_results.get(check)
  assert result is not None, f"{check} did not run"
  assert result["ok"], result["error"]


def test_split_batch_gives_each_device_both_halves():
  rows = np.arange(16)
  batch = {"row": rows, "domain": (rows >= 8).astype(np.int32)}
  shards = parallel.split_batch(batch, 4)
  assert shards["row"].shape == (4, 4)
  np.testing.assert_array_equal(shards["row"][1], [2, 3, 10, 11])
  np.testing.assert_array_equal(shards["domain"].sum(axis=1), [2, 2, 2, 2])
  assert sorted(np.asarray(shards["row"]).ravel()) == list(rows)
  flat = parallel.interleave_batch(batch, 4)["row"]
  np.testing.assert_array_equal(flat, np.asarray(shards["row"]).ravel())
  np.testing.assert_array_equal(parallel.interleave_batch(batch, 1)["row"], rows)


@pytest.mark.parametrize(
  "batch_size,devices,message",
  [
    (100, 8, "batch_size=100 with 8 devices: each half (50) must split evenly; use 96 or 112"),
    (102, 4, "batch_size=102 with 4 devices: each half (51) must split evenly; use 96 or 104"),
    (20, 4, "each half (10) must split evenly; use 16 or 24"),
    (4, 8, "each half (2) must split evenly; use 16"),
  ],
)
def test_indivisible_batch_names_nearest_sizes(batch_size, devices, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    parallel.check_devices(batch_size, devices, available=8)


def test_too_many_devices_names_what_exists():
  count = jax.local_device_count()
  with pytest.raises(ValueError, match=f"only {count} .*`num_devices={count}`"):
    parallel.check_devices(128, count + 1)
  with pytest.raises(ValueError, match=f"`num_devices={count}` or fewer"):
    parallel.make_mesh(count + 1)


def test_make_runner_rejects_unknown_kind():
  with pytest.raises(ValueError, match="choose one of"):
    parallel.make_runner("ddp", 1)
  parallel.check_devices(128, 1)  # one device always splits


def test_process_devices_in_one_process_are_the_local_ones():
  assert parallel.process_devices() == jax.local_devices()
  assert parallel.process_devices(1) == jax.local_devices()[:1]
  count = jax.local_device_count()
  with pytest.raises(ValueError, match=f"`num_devices={count}` or fewer"):
    parallel.process_devices(count + 1)


def test_place_copies_host_values_and_keeps_placed_ones():
  mesh = parallel.make_mesh(1)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  tree = {"x": np.arange(6.0).reshape(2, 3), "key": jax.random.key(3)}
  placed = parallel.place(tree, replicated)
  assert placed["x"].sharding.is_equivalent_to(replicated, 2)
  np.testing.assert_array_equal(placed["x"], tree["x"])
  np.testing.assert_array_equal(jax.random.key_data(placed["key"]), jax.random.key_data(tree["key"]))
  assert parallel.place(placed, replicated)["x"] is placed["x"]


def test_pmap_refuses_several_processes(monkeypatch):
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  with pytest.raises(ValueError, match="`parallel=pmap` trains within one process.*use `parallel=sharding`"):
    parallel.make_runner("pmap", 1)


@pytest.mark.slow
def test_sharded_runner_host_loop_equals_scan():
  from flax import linen as nn

  from dann_jax.core.config import TrainConfig
  from dann_jax.core.models import DANN, MLP
  from dann_jax.core.train import create_train_state
  from dann_jax.data.batching import make_domain_pair

  class Flat(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.relu(nn.Dense(8)(x.reshape((x.shape[0], -1))))

  rng = np.random.default_rng(0)
  domain = lambda: (rng.integers(0, 256, (16, 4, 4, 3)).astype(np.uint8), rng.integers(0, 3, 16).astype(np.int32))
  pair = make_domain_pair(domain(), domain())
  model = DANN(features=Flat(), label_predictor=MLP((), 3), domain_classifier=MLP((), 1))
  state = lambda: create_train_state(
    model, TrainConfig(total_steps=4, batch_size=8), np.zeros((1, 4, 4, 3), np.float32)
  )
  mesh = parallel.make_mesh(1)
  outputs = [parallel.make_sharded_runner(mesh, stepwise=s)(state(), pair, 3, 8) for s in (True, False)]
  (loop_state, loop_metrics), (scan_state, scan_metrics) = outputs
  assert loop_metrics["loss"].shape == (3,) and int(loop_state.step) == 3
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
    (loop_state.params, loop_metrics),
    (scan_state.params, scan_metrics),
  )
