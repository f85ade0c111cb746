"""The GPU benchmarks in one script: step times, throughput, a whole paper run.

Meant for one call on a GPU machine that has JAX (CUDA) and PyTorch (CUDA)
installed but cannot download anything: genuine MNIST comes from a cache
folder given with `--data-dir` (a copy of `~/.cache/dann_jax/mnist.npz` made
by `dann-jax data fetch mnist` elsewhere); the MNIST-M-like target is built on
the machine from it. Three parts, each written to the JSON file as soon as it
is done, so a part that fails or runs out of time leaves the others:

1. `bench_step.py` with PyTorch on CUDA: the jitted JAX step against PyTorch
   eager, MNIST and SVHN nets, batch 128 (64 + 64).
2. A whole paper-preset MNIST -> MNIST-M DANN run (20,000 SGD steps, the
   paper's schedules; `dann-jax train ... --preset paper`) in a subprocess,
   timed from the command's start (data build and compilation included) and by
   the run's own training time; its accuracy on all 10,000 target test images.
3. `bench_throughput.py`: `lax.scan` against a Python loop of jitted steps,
   and K seeds in one vmapped program against K separate runs.

    PYTHONPATH=. python experiments/bench/bench_gpu.py --data-dir DIR --out OUT
    # writes OUT/bench_<card>.json, e.g. bench_h200.json, and OUT/run/

Each process of it allocates GPU memory as it goes
(XLA_PYTHON_CLIENT_PREALLOCATE=false is set for the run's subprocess), since
the step bench in this process already holds JAX and PyTorch memory.

Card names come from `jax.devices()[0].device_kind` ("NVIDIA H200" -> h200).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))


def card_name(device_kind: str) -> str:
  """'NVIDIA H200' -> 'h200', 'NVIDIA H100 80GB HBM3' -> 'h100'."""
  words = device_kind.lower().replace("nvidia", "").split()
  return re.sub(r"[^a-z0-9]+", "-", words[0] if words else "gpu")


def _nvidia_smi() -> str | None:
  try:
    return subprocess.run(
      ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
      capture_output=True,
      text=True,
      timeout=30,
    ).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None


def whole_run(data_dir: Path, run_dir: Path, steps: int | None, seed: int, seeds: int) -> dict[str, Any]:
  """A paper-preset MNIST -> MNIST-M DANN run through the CLI, timed."""
  shutil.rmtree(run_dir, ignore_errors=True)
  command = [
    sys.executable,
    "-m",
    "dann_jax.cli",
    "train",
    "--source",
    "mnist",
    "--target",
    "mnist-m",
    "--method",
    "dann",
    "--preset",
    "paper",
    "--seed",
    str(seed),
    "--seeds",
    str(seeds),
    "--out",
    str(run_dir),
    "--data-dir",
    str(data_dir),
    "--no-progress",
  ]
  if steps is not None:
    command += ["--steps", str(steps)]
  env = dict(
    os.environ,
    XLA_PYTHON_CLIENT_PREALLOCATE="false",
    PYTHONPATH=os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")]),
  )
  start = time.perf_counter()
  subprocess.run(command, check=True, env=env)
  wall = time.perf_counter() - start
  summary = json.loads((run_dir / "summary.json").read_text())
  return {
    "command": " ".join(command[1:]),
    "wall_seconds": round(wall, 1),
    "train_seconds": summary["train_seconds"],
    "steps": summary["steps_run"],
    "seeds": seeds,
    "target_accuracy": summary["target_accuracy"],
    "source_accuracy": summary["source_accuracy"],
    "target_test_size": summary["target_test_size"],
  }


def main(argv: Sequence[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data-dir", required=True, help="folder holding mnist.npz (dann-jax's cache)")
  parser.add_argument("--out", required=True, help="folder for the results")
  parser.add_argument("--parts", default="step,run,throughput", help="comma-separated subset of step,run,throughput")
  parser.add_argument("--bench-steps", type=int, default=200)
  parser.add_argument("--run-steps", type=int, default=None, help="steps of the whole run (default: the preset's)")
  parser.add_argument("--run-seeds", type=int, default=1)
  parser.add_argument("--run-dir", default=None, help="run folder of the whole run (default OUT/run)")
  parser.add_argument("--throughput-steps", type=int, default=2000)
  parser.add_argument("--throughput-seeds", type=int, default=4)
  args = parser.parse_args(argv)
  parts = [p for p in args.parts.split(",") if p]
  unknown = set(parts) - {"step", "run", "throughput"}
  if unknown:
    parser.error(f"unknown parts {sorted(unknown)}; choose from step, run, throughput")
  data_dir = Path(args.data_dir).resolve()
  if not (data_dir / "mnist.npz").exists():
    parser.error(
      f"{data_dir / 'mnist.npz'} does not exist; copy dann-jax's cache file there (made by `dann-jax data fetch mnist`)"
    )

  import jax

  device = jax.devices()[0]
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  record: dict[str, Any] = {
    "device_kind": device.device_kind,
    "platform": device.platform,
    "nvidia_smi": _nvidia_smi(),
    "jax": jax.__version__,
    "python": platform.python_version(),
    "host_cpus": os.cpu_count(),
  }
  try:
    import torch

    record["torch"] = torch.__version__
  except ImportError:
    torch = None
  path = out / f"bench_{card_name(device.device_kind)}.json"

  def save():
    path.write_text(json.dumps(record, indent=2) + "\n")

  def part(name: str, run: Callable[[], Any]) -> None:
    start = time.perf_counter()
    try:
      record[name] = run()
    except Exception:  # pylint: disable=broad-except  (keep the other parts)
      record[name] = {"error": traceback.format_exc(limit=5)}
      traceback.print_exc()
    print(f"[bench_gpu] {name}: {time.perf_counter() - start:.1f} s", flush=True)
    save()

  save()
  for name in parts:
    if name == "step":
      import bench_step

      step_args = ["--steps", str(args.bench_steps), "--warmup", "20"]
      if torch is not None and torch.cuda.is_available():
        step_args += ["--torch-device", "cuda"]
      else:
        step_args += ["--no-torch"]
      part("step", lambda: bench_step.main(step_args))
    elif name == "run":
      run_dir = Path(args.run_dir or out / "run")
      part("paper_run", lambda: whole_run(data_dir, run_dir, args.run_steps, 0, args.run_seeds))
    else:
      import bench_throughput

      part(
        "throughput",
        lambda: bench_throughput.main(["--steps", str(args.throughput_steps), "--seeds", str(args.throughput_seeds)]),
      )
  print(json.dumps(record))
  return record


if __name__ == "__main__":
  main()
