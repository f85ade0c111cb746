"""What the bench scripts share: a random batch or domain pair of the MNIST DANN, the timing loops, child flags.

The scripts run as `python experiments/bench/<script>.py`, which puts this folder on `sys.path`: they
`from _timing import ...`. jax and dann_jax are imported inside the functions, after a script has set
its environment (device counts, platforms).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np


def make_batch(batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A random batch in the train step's format, first half source."""
  rng = np.random.default_rng(seed)
  half = batch_size // 2
  return {
    "image": rng.random((batch_size, 32, 32, 3), np.float32) - 0.5,
    "label": rng.integers(0, 10, batch_size).astype(np.int32),
    "domain": (np.arange(batch_size) >= half).astype(np.int32),
    "label_mask": np.arange(batch_size) < half,
  }


def time_alternating(steppers: dict[str, Callable[[], None]], steps: int, warmup: int) -> dict[str, list[float]]:
  """Runs the steppers round-robin; returns each one's step times in ms."""
  for _ in range(warmup):
    for step in steppers.values():
      step()
  times = {name: [] for name in steppers}
  for _ in range(steps):
    for name, step in steppers.items():
      start = time.perf_counter()
      step()
      times[name].append(1e3 * (time.perf_counter() - start))
  return times


def chunk_flags(args) -> list[str]:
  """`args`' chunk flags (`--batch-size`, `--steps`, `--repeats`), to pass on to a child process."""
  return ["--batch-size", str(args.batch_size), "--steps", str(args.steps), "--repeats", str(args.repeats)]


def mnist_pair_and_state(batch_size: int):
  """A seeded random domain pair (2000 + 2000 uint8 images) and a fresh train state of the tuned MNIST DANN.

  The same in every process. Returns (pair, state).
  """
  from dann_jax.backend.xla_cpu import tuned
  from dann_jax.core.config import TrainConfig
  from dann_jax.core.models import mnist_dann
  from dann_jax.core.train import create_train_state
  from dann_jax.data.batching import make_domain_pair

  rng = np.random.default_rng(0)
  domain = lambda: (rng.integers(0, 256, (2000, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 2000).astype(np.int32))
  pair = make_domain_pair(domain(), domain())
  config = TrainConfig(total_steps=10_000, batch_size=batch_size)
  return pair, create_train_state(tuned(mnist_dann)(), config, np.zeros((2, 32, 32, 3), np.float32))


def time_chunks(runner, state, pair, steps: int, batch_size: int, repeats: int):
  """Runs `runner(state, pair, steps, batch_size)` once untimed (it compiles), then `repeats` timed chunks.

  Returns (state, metrics, timing): the last chunk's state and metrics, and `timing` with the best and median
  `ms_per_step` of the timed chunks (`ms_per_step`, `ms_per_step_median`) and the first chunk's `first_chunk_s`.
  """
  import jax

  start = time.perf_counter()
  state, metrics = runner(state, pair, steps, batch_size)
  jax.block_until_ready((state, metrics))
  first_chunk = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state, metrics = runner(state, pair, steps, batch_size)
    jax.block_until_ready((state, metrics))
    times.append((time.perf_counter() - start) / steps)
  timing = {
    "ms_per_step": 1000 * min(times),
    "ms_per_step_median": 1000 * float(np.median(times)),
    "first_chunk_s": first_chunk,
  }
  return state, metrics, timing
