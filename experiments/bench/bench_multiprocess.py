"""Step time of the sharded runner in several processes (jax.distributed) vs one.

Each layout PxD runs P processes on this machine with D CPU devices each
(`JAX_NUM_CPU_DEVICES=D`), joined over a free localhost port by
`dann_jax.backend.distributed.initialize` when P > 1, all training the MNIST DANN
with the sharded runner over the P*D devices (`dann_jax.training.parallel.make_runner`,
as `dann-jax train` does). 1x2 against 2x1 compares the same devices and
cores in one process and in two, so the difference is the cost of crossing
processes (gloo collectives, two runtimes sharing the cores). Process 0
reports the milliseconds per step of several timed chunks, after one
untimed chunk that compiles.

Run:
  PYTHONPATH=. python experiments/bench/bench_multiprocess.py
  PYTHONPATH=. python experiments/bench/bench_multiprocess.py --layouts 1x2 2x1 --steps 20 --repeats 5 --out experiments/results/bench/bench_multiprocess.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time

from _timing import chunk_flags, mnist_pair_and_state, time_chunks


def measure(batch_size: int, steps: int, repeats: int) -> dict:
  """Times the sharded runner over every process's devices (in this process)."""
  import jax
  import numpy as np

  from dann_jax.training import parallel

  pair, state = mnist_pair_and_state(batch_size)  # the same data in every process
  runner = parallel.make_runner("sharding", None, batch_size)
  _, metrics, timing = time_chunks(runner, state, pair, steps, batch_size, repeats)
  return {
    "processes": jax.process_count(),
    "devices_per_process": jax.local_device_count(),
    "batch_size": batch_size,
    "steps_per_chunk": steps,
    **timing,
    "loss": float(np.asarray(metrics["loss"])[-1]),
  }


def child(args) -> None:
  from dann_jax.backend import distributed

  if args.num_processes > 1:
    distributed.initialize(
      args.coordinator, args.num_processes, args.process_id, config=vars(args) | {"process_id": None}
    )
  row = measure(args.batch_size, args.steps, args.repeats)
  if distributed.is_primary():
    print(json.dumps(row), flush=True)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def run_layout(layout: str, args) -> dict:
  processes, devices = (int(n) for n in layout.split("x"))
  port = free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices))
  env.pop("XLA_FLAGS", None)
  command = [
    sys.executable,
    __file__,
    "--child",
    *chunk_flags(args),
    "--coordinator",
    f"localhost:{port}",
    "--num-processes",
    str(processes),
  ]
  procs = [
    subprocess.Popen(
      command + ["--process-id", str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for i in range(processes)
  ]
  try:
    outputs = [p.communicate(timeout=args.timeout) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, (_, err) in zip(procs, outputs):
    if p.returncode:
      raise RuntimeError(f"layout {layout} failed:\n{err[-3000:]}")
  row = json.loads(outputs[0][0].strip().splitlines()[-1])
  row["layout"] = layout
  return row


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--layouts", nargs="+", default=["1x2", "2x1"], help="PxD: P processes with D CPU devices each (default 1x2 2x1)"
  )
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--steps", type=int, default=10, help="steps per timed chunk")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--timeout", type=float, default=900, help="seconds a layout may take before it is killed")
  parser.add_argument("--out", default=None, help="write the rows as JSON")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--coordinator", help=argparse.SUPPRESS)
  parser.add_argument("--num-processes", type=int, default=1, help=argparse.SUPPRESS)
  parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    return child(args)
  rows = []
  for layout in args.layouts:
    row = run_layout(layout, args)
    rows.append(row)
    print(
      f"{layout}: {row['ms_per_step']:.1f} ms/step (median "
      f"{row['ms_per_step_median']:.1f}; first chunk "
      f"{row['first_chunk_s']:.1f} s)",
      flush=True,
    )
  if args.out:
    import jax

    with open(args.out, "w") as f:
      json.dump(
        {
          "machine": f"{platform.machine()} {os.cpu_count()} cores",
          "jax": jax.__version__,
          "date": time.strftime("%Y-%m-%d"),
          "rows": rows,
        },
        f,
        indent=2,
      )
  return 0


if __name__ == "__main__":
  sys.exit(main())
