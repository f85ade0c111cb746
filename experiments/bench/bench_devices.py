"""Step time of data-parallel training on 1 vs N devices, both paths.

Each device count runs in its own subprocess, since on CPU the number of
(fake) devices is fixed by `XLA_FLAGS=--xla_force_host_platform_device_count`
before jax is imported. Fake CPU devices share the host's cores, so on CPU
this measures the overhead of the split, not a speed-up; on a multi-GPU host
(`--platform gpu`) it measures the real thing.

Run:
  PYTHONPATH=. python experiments/bench/bench_devices.py              # 1 vs 4 CPU
  PYTHONPATH=. python experiments/bench/bench_devices.py --platform gpu --devices 1 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _timing import chunk_flags, mnist_pair_and_state, time_chunks


def measure(num_devices: int, batch_size: int, steps: int, repeats: int) -> list[dict]:
  """Times each path on `num_devices` devices (in this process)."""
  import jax

  from dann_jax.training import parallel
  from dann_jax.training.loop import jit_train_on_pair

  pair, state = mnist_pair_and_state(batch_size)
  runners = {
    "sharding": parallel.make_runner("sharding", num_devices, batch_size),
    "pmap": parallel.make_runner("pmap", num_devices, batch_size),
  }
  if num_devices == 1:
    runners["single (jit)"] = jit_train_on_pair
  rows = []
  for name, runner in runners.items():
    _, _, timing = time_chunks(runner, jax.tree.map(jax.numpy.copy, state), pair, steps, batch_size, repeats)
    rows.append({"path": name, "devices": num_devices, "backend": jax.default_backend(), **timing})
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--devices", type=int, nargs="+", default=[1, 4])
  parser.add_argument(
    "--platform", choices=("cpu", "gpu"), default="cpu", help="cpu fakes the devices; gpu uses real ones"
  )
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--steps", type=int, default=10, help="steps per timed chunk (one lax.scan)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    rows = measure(args.devices[0], args.batch_size, args.steps, args.repeats)
    print(json.dumps(rows))
    return
  rows = []
  for count in args.devices:
    env = dict(os.environ)
    if args.platform == "cpu":
      env["JAX_PLATFORMS"] = "cpu"
      env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={count}"
    command = [
      sys.executable,
      __file__,
      "--child",
      "--devices",
      str(count),
      *chunk_flags(args),
    ]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
      sys.exit(f"the {count}-device run failed:\n{out.stderr}")
    rows += json.loads(out.stdout.strip().splitlines()[-1])
  print(f"MNIST net, batch {args.batch_size}, {args.steps} steps per chunk, best of {args.repeats} chunks")
  print(f"{'path':<14}{'devices':>8}{'backend':>9}{'ms/step':>10}{'median':>9}{'1st chunk s':>13}")
  for r in rows:
    print(
      f"{r['path']:<14}{r['devices']:>8}{r['backend']:>9}"
      f"{r['ms_per_step']:>10.1f}{r['ms_per_step_median']:>9.1f}"
      f"{r['first_chunk_s']:>13.1f}"
    )


if __name__ == "__main__":
  main()
