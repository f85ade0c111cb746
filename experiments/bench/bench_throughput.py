"""Whole-run training throughput (images/s) of the MNIST DANN on one device.

Two comparisons, each on a synthetic domain pair (random uint8 digits-sized
images, so no download) with batches sampled on the device:

1. Steps: `train_on_pair` (all steps in one jitted `lax.scan`) against a Python
   loop that calls one jitted "sample a batch, take a step" function per step
   (`train_on_pair_stepwise`, what `fit` runs on CPU).
2. Seeds, on both paths: K seeds in one program (`replicate_seeds`, then
   `jax.vmap` over the seed axis of the scan or of each jitted step) against K
   separate runs one after the other.

Every variant is compiled and run once before it is timed, so the numbers
exclude compilation. The last line printed is one JSON object.

    python experiments/bench/bench_throughput.py                 # 20 steps, 4 seeds
    python experiments/bench/bench_throughput.py --steps 50 --seeds 8

References: batch of 128 (64 source + 64 target), Sec. 5 of Ganin &
Lempitsky, arXiv 1409.7495.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from typing import Callable, Sequence

import numpy as np


def _timed(run: Callable[[], object]) -> float:
  """Seconds of one call of `run`, blocking on its result."""
  import jax

  start = time.perf_counter()
  jax.block_until_ready(run())
  return time.perf_counter() - start


def synthetic_pair(size: int, seed: int = 0):
  """A domain pair of `size` random 32x32x3 uint8 images per domain."""
  from dann_jax.data.batching import make_domain_pair

  rng = np.random.default_rng(seed)
  domains = [
    (rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, size).astype(np.int32))
    for _ in range(2)
  ]
  return make_domain_pair(*domains)


def main(argv: Sequence[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--seeds", type=int, default=4)
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--domain-size", type=int, default=2048, help="synthetic images per domain")
  args = parser.parse_args(argv)
  if args.steps <= 0 or args.seeds <= 0:
    parser.error("--steps and --seeds must be positive")

  import jax

  from dann_jax.backend import xla_cpu
  from dann_jax.core import models, train
  from dann_jax.core.config import TrainConfig
  from dann_jax.training import loop

  model = xla_cpu.tuned(models.mnist_dann)()
  config = TrainConfig(batch_size=args.batch_size)
  pair = synthetic_pair(args.domain_size)
  images = np.zeros((1, 32, 32, 3), np.float32)
  make_state = functools.partial(train.create_train_state, model, config, images)
  steps, seeds, batch = args.steps, args.seeds, args.batch_size

  def scan_run(state):
    return loop.jit_train_on_pair(state, pair, steps, batch)

  def loop_run(state):  # also takes a seeds axis (one vmapped step per call)
    return loop.train_on_pair_stepwise(state, pair, steps, batch)

  def vmap_run(state):
    return loop.jit_train_on_pair_seeds(state, pair, steps, batch)

  fresh = lambda: make_state(jax.random.key(0))
  fresh_seeds = lambda: loop.replicate_seeds(make_state, range(seeds))
  fresh_list = lambda: [make_state(jax.random.key(s)) for s in range(seeds)]
  separately = lambda run: lambda states: [run(s) for s in states]

  seconds = {}
  for name, run, new in (
    ("scan", scan_run, fresh),
    ("loop", loop_run, fresh),
    ("seeds_vmap_scan", vmap_run, fresh_seeds),
    ("seeds_separate_scan", separately(scan_run), fresh_list),
    ("seeds_vmap_loop", loop_run, fresh_seeds),
    ("seeds_separate_loop", separately(loop_run), fresh_list),
  ):
    _timed(lambda: run(new()))  # compile and warm up
    state = new()
    jax.block_until_ready(state)
    seconds[name] = _timed(lambda: run(state))

  images_per_s = {name: (seeds if name.startswith("seeds") else 1) * steps * batch / s for name, s in seconds.items()}
  print(f"MNIST DANN, batch {batch}, {steps} steps, {seeds} seeds, load average {os.getloadavg()[0]:.2f}")
  for name, rate in images_per_s.items():
    print(f"{name:20} {rate:9.1f} images/s  ({seconds[name]:.2f} s)")
  record = {f"{name}_images_per_s": round(rate, 1) for name, rate in images_per_s.items()}
  record.update(
    steps=steps, seeds=seeds, batch_size=batch, load_avg_1min=round(os.getloadavg()[0], 2), jax=jax.__version__
  )
  print(json.dumps(record))
  return record


if __name__ == "__main__":
  main()
