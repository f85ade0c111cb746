"""Times one train step of the MNIST DANN through the NNX front door against the Linen one.

Both steps start from the same weights (the Linen ones, copied into the
network bridged to NNX with `dann_jax.core.nnx.from_linen`) and take the same optimizer step on
the same batch of 128 (64 source + 64 target) random 32x32x3 images:

* `linen`: `dann_jax.core.train.train_step` under a stock `jax.jit`
  (state donated), stock layers;
* `nnx`: `dann_jax.core.nnx.train_step` under `nnx.jit`, stock layers;
* `nnx_cached`: the same step through `nnx.cached_partial`, which skips
  most of `nnx.jit`'s per-call walk over the model graph;
* with `--tuned`, also `linen_tuned` (`dann_jax.training.loop.jit_train_step` on
  `xla_cpu.tuned(models.mnist_dann)`, what training runs on CPU) and
  `nnx_tuned` (the NNX step on `xla_cpu.tuned(dann_nnx.mnist_dann)`, split into
  a graph and a state pytree and compiled with `xla_cpu.cpu_jit`).

The steppers alternate in one process (linen, nnx, ..., linen, nnx, ...) so
that all see the same machine load; each reports the median of its timed
steps after a warm-up that includes compilation.

    python experiments/bench/bench_nnx.py                  # 30 steps
    python experiments/bench/bench_nnx.py --steps 100 --tuned

The last line printed is one JSON object: the median ms per step of each
stepper (`<name>_ms`), `nnx_over_linen` (nnx / linen), and the context.

References: the MNIST architecture of Ganin & Lempitsky, arXiv 1409.7495
(appendix / JMLR 2016 Fig. 4); batch and optimizer of its Sec. 5.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from typing import Callable, Sequence

from _timing import make_batch, time_alternating


def linen_stepper(batch, tuned: bool = False) -> Callable[[], None]:
  """One Linen step per call, run to completion."""
  import jax

  from dann_jax.backend import xla_cpu
  from dann_jax.core import models, train
  from dann_jax.core.config import TrainConfig
  from dann_jax.training import loop

  model = xla_cpu.tuned(models.mnist_dann)() if tuned else models.mnist_dann()
  holder = [train.create_train_state(model, TrainConfig(), batch["image"])]
  jitted = loop.jit_train_step if tuned else jax.jit(train.train_step, donate_argnums=0)

  def step():
    holder[0], metrics = jitted(holder[0], batch)
    jax.block_until_ready((holder[0], metrics))

  return step


def nnx_stepper(batch, mode: str = "jit") -> Callable[[], None]:
  """One NNX step per call, run to completion.

  `mode`: "jit" (`nnx.jit`), "cached" (`nnx.cached_partial` of it) or
  "tuned" (tuned layers; graph and state split, compiled with `cpu_jit`).
  """
  import jax
  from flax import nnx

  from dann_jax.backend import xla_cpu
  from dann_jax.core import models, train
  from dann_jax.core import nnx as dann_nnx
  from dann_jax.core.config import TrainConfig

  config = TrainConfig()
  linen_params = train.create_train_state(models.mnist_dann(), config, batch["image"]).params
  factory = xla_cpu.tuned(dann_nnx.mnist_dann) if mode == "tuned" else dann_nnx.mnist_dann
  model = dann_nnx.from_linen(factory(rngs=nnx.Rngs(config.seed)), linen_params)
  state = dann_nnx.create_train_state(model, config)

  if mode == "tuned":
    graphdef, arrays = nnx.split(state)

    def pure_step(arrays, batch):
      state = nnx.merge(graphdef, arrays)
      _, metrics = dann_nnx.train_step(state, batch)
      return nnx.state(state), metrics

    jitted = xla_cpu.cpu_jit(pure_step, donate_argnums=0)
    holder = [arrays]

    def step():
      holder[0], metrics = jitted(holder[0], batch)
      jax.block_until_ready((holder[0], metrics))

    return step

  jitted = nnx.jit(dann_nnx.train_step)
  if mode == "cached":
    cached = nnx.cached_partial(jitted, state)
    call = lambda: cached(batch)
  else:
    call = lambda: jitted(state, batch)

  def step():
    jax.block_until_ready(call()[1])

  return step


def main(argv: Sequence[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=30, help="timed steps per stepper")
  parser.add_argument("--warmup", type=int, default=3, help="untimed steps per stepper (the first compiles)")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument(
    "--tuned", action="store_true", help="also time both steps with dann_jax.backend.xla_cpu's layers and jit"
  )
  args = parser.parse_args(argv)
  if args.steps <= 0 or args.warmup <= 0:
    parser.error("--steps and --warmup must be positive (the warm-up compiles)")
  if args.batch_size <= 0 or args.batch_size % 2:
    parser.error(f"--batch-size={args.batch_size} must be even and positive")

  import flax
  import jax

  batch = jax.device_put(make_batch(args.batch_size))
  steppers = {"linen": linen_stepper(batch), "nnx": nnx_stepper(batch), "nnx_cached": nnx_stepper(batch, "cached")}
  if args.tuned:
    steppers["linen_tuned"] = linen_stepper(batch, tuned=True)
    steppers["nnx_tuned"] = nnx_stepper(batch, "tuned")
  load_before = os.getloadavg()[0]
  times = time_alternating(steppers, args.steps, args.warmup)
  medians = {name: statistics.median(t) for name, t in times.items()}

  print(
    f"MNIST DANN, batch {args.batch_size}, {args.steps} timed steps "
    f"after {args.warmup} warm-up, {len(os.sched_getaffinity(0))} "
    f"cores, load average {load_before:.2f} -> "
    f"{os.getloadavg()[0]:.2f}, {jax.devices()[0].device_kind}"
  )
  print(f"{'stepper':12} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'/ linen':>8}")
  for name, t in times.items():
    print(f"{name:12} {medians[name]:10.1f} {min(t):8.1f} {max(t):8.1f} {medians[name] / medians['linen']:8.2f}")
  record = {f"{name}_ms": round(ms, 2) for name, ms in medians.items()}
  record.update(
    nnx_over_linen=round(medians["nnx"] / medians["linen"], 3),
    batch_size=args.batch_size,
    steps=args.steps,
    load_avg_1min=round(load_before, 2),
    jax=jax.__version__,
    flax=flax.__version__,
    jax_device=str(jax.devices()[0].device_kind),
  )
  print(json.dumps(record))
  return record


if __name__ == "__main__":
  main()
