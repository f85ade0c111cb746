"""Times one DANN train step: the jitted JAX step against PyTorch eager.

Both frameworks run the paper's MNIST and SVHN networks on the same batch of
128 (64 source + 64 target) random 32x32x3 images: forward, label and domain
losses through a gradient reversal layer, backward, and an SGD-momentum step.
As in training, the label predictor runs on the 64 labelled rows and the
domain classifier on all 128.
The steps alternate in one process (JAX, PyTorch, JAX, ...) so that both see
the same machine load; each reports the median of the timed steps after a
warm-up. The JAX step is `dann_jax.training.loop.jit_train_step` with the
`labelled_rows` the training loop passes (on CPU compiled
with `dann_jax.backend.xla_cpu.CPU_COMPILER_OPTIONS`); the plain Flax step (`nn.Conv` +
`nn.max_pool` under a stock `jax.jit`, the formulation before
`dann_jax.backend.xla_cpu`) is timed alongside for the MNIST net.

Threads: XLA:CPU runs one intra-op thread per core this process may use;
PyTorch is set to the same number (`torch.set_num_threads`). XLA flags come
from the `XLA_FLAGS` environment variable only, and are printed.

The process runs as `dann-jax` does: on glibc Linux it re-executes itself once
with the allocator setting of `dann_jax.cli.MALLOC_TUNING` (both frameworks
then share it; `DANN_JAX_MALLOC_TUNING=0` or a GLIBC_TUNABLES of your own
opts out), and the JSON line says which setting was in force
(`glibc_tunables`). `source_only_ms` times the MNIST net's source-only step,
which runs only the source half of the batch through the label predictor
(the domain classifier is not evaluated); `cpu_model` is the processor's
name from /proc/cpuinfo.

    python experiments/bench/bench_step.py                 # both nets, 30 steps
    python experiments/bench/bench_step.py --nets mnist --steps 50
    python experiments/bench/bench_step.py --torch-device cuda --steps 200  # GPU
    pip install -e .[bench]                          # PyTorch (CPU build)

PyTorch is optional: without it the JAX steps are still timed and the JSON
line has null torch numbers.

The last line printed is one JSON object: `jax_ms`, `torch_ms` and `ratio`
(jax / torch) for the MNIST net, `svhn_*` for the SVHN net, and the context
(threads, load average, versions, flags).

References: architectures of Ganin & Lempitsky, arXiv 1409.7495 (appendix /
JMLR 2016 Fig. 4); batch and optimizer of its Sec. 5.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from typing import Callable, Sequence

import numpy as np
from _timing import make_batch, time_alternating


def _cpu_model() -> str:
  """The processor's name (/proc/cpuinfo's first "model name") and its wide vector units, else the machine type."""
  name, flags = platform.processor() or platform.machine(), set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name == (platform.processor() or platform.machine()):
          name = value.strip()
        elif key.strip() == "flags" and not flags:
          flags = set(value.split())
  except OSError:
    pass
  units = [unit for unit in ("avx2", "avx512f", "amx_tile") if unit in flags]
  return f"{name} ({', '.join(units)})" if units else name


def _with_tuned_allocator() -> None:
  """Re-executes this script once with `dann-jax`'s allocator setting, as the command runs itself."""
  from dann_jax.cli import MALLOC_TUNING, wants_malloc_tuning

  if wants_malloc_tuning(os.environ):
    env = dict(os.environ, GLIBC_TUNABLES=MALLOC_TUNING)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def _threads() -> int:
  """Cores this process may run on: XLA:CPU's intra-op thread count."""
  return len(os.sched_getaffinity(0))


# ----------------------------------------------------------------------------
# JAX


def plain_mnist_dann():
  """The MNIST DANN with stock `nn.Conv` and `nn.max_pool` (the baseline)."""
  from dann_jax.core import models

  return models.mnist_dann()


def jax_stepper(
  model, batch: dict[str, np.ndarray], plain_jit: bool = False, method: str = "dann"
) -> Callable[[], None]:
  """A closure running one jitted, state-donating train step to completion.

  `loop.jit_train_step` (compiled with `dann_jax.backend.xla_cpu.CPU_COMPILER_OPTIONS`
  on CPU), or with `plain_jit` a stock `jax.jit` of the same step. For a
  method that reads only its labelled rows (source only), the batch is the
  source half, as `dann_jax.training.loop` samples it.
  """
  import jax

  from dann_jax.core import methods, train
  from dann_jax.core.config import TrainConfig
  from dann_jax.training import loop

  rows = methods.batch_rows(methods.get(method), target_labels_revealed=False)
  if rows != "both":
    keep = np.asarray(batch["domain"]) == (0 if rows == "source" else 1)
    batch = {name: np.asarray(value)[keep] for name, value in batch.items()}
  prefix = None if plain_jit else methods.labelled_prefix(methods.get(method), len(batch["label"]), False)
  batch = jax.device_put(batch)
  holder = [train.create_train_state(model, TrainConfig(method=method), batch["image"])]
  jitted = jax.jit(train.train_step, donate_argnums=0) if plain_jit else loop.jit_train_step

  def step():
    holder[0], metrics = jitted(holder[0], batch, labelled_rows=prefix)
    jax.block_until_ready((holder[0], metrics))

  return step


# ----------------------------------------------------------------------------
# PyTorch


def torch_stepper(net_name: str, batch: dict[str, np.ndarray], device: str = "cpu") -> Callable[[], None]:
  """The same network, loss and optimizer in PyTorch eager (NCHW).

  As the JAX step, the label predictor runs on the labelled (source) rows
  only, and the domain classifier on all.

  On "cuda" the closure synchronizes the device before it returns, as the JAX
  closure blocks on its results.
  """
  import torch
  from torch import nn
  from torch.nn import functional as F

  class GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lam):
      ctx.lam = lam
      return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
      return -ctx.lam * grad, None

  def mlp(sizes, dropout):
    layers = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
      layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
      if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)

  class Dann(nn.Module):
    def __init__(self, svhn: bool):
      super().__init__()
      if svhn:
        # "SAME" 5x5 convolutions and 3x3 stride-2 pools (32 -> 16 -> 8).
        self.features = nn.Sequential(
          nn.Conv2d(3, 64, 5, padding=2),
          nn.ReLU(),
          nn.MaxPool2d(3, 2, padding=1),
          nn.Conv2d(64, 64, 5, padding=2),
          nn.ReLU(),
          nn.MaxPool2d(3, 2, padding=1),
          nn.Conv2d(64, 128, 5, padding=2),
          nn.ReLU(),
          nn.Flatten(),
        )
        self.label = mlp((8 * 8 * 128, 3072, 2048, 10), 0.5)
        self.domain = mlp((8 * 8 * 128, 1024, 1024, 1), 0.5)
      else:
        self.features = nn.Sequential(
          nn.Conv2d(3, 32, 5),
          nn.ReLU(),
          nn.MaxPool2d(2, 2),
          nn.Conv2d(32, 48, 5),
          nn.ReLU(),
          nn.MaxPool2d(2, 2),
          nn.Flatten(),
        )
        self.label = mlp((5 * 5 * 48, 100, 100, 10), 0.0)
        self.domain = mlp((5 * 5 * 48, 100, 1), 0.0)

    def forward(self, x, lam, labelled):
      f = self.features(x)
      return (self.label(f[:labelled]), self.domain(GradientReversal.apply(f, lam)).squeeze(1))

  torch.manual_seed(0)
  net = Dann(net_name == "svhn").to(device)
  net.train()
  opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
  x = torch.from_numpy(np.ascontiguousarray(batch["image"].transpose(0, 3, 1, 2))).to(device)
  label = torch.from_numpy(batch["label"]).long().to(device)
  domain = torch.from_numpy(batch["domain"]).float().to(device)
  labelled = int(batch["label_mask"].sum())
  if not batch["label_mask"][:labelled].all():
    raise ValueError("the batch's labelled rows must come first")
  sync = torch.cuda.synchronize if device.startswith("cuda") else lambda: None

  def step():
    opt.zero_grad(set_to_none=True)
    class_logits, domain_logits = net(x, 0.5, labelled)
    label_loss = F.cross_entropy(class_logits, label[:labelled])
    domain_loss = F.binary_cross_entropy_with_logits(domain_logits, domain)
    (label_loss + domain_loss).backward()
    opt.step()
    sync()

  return step


# ----------------------------------------------------------------------------


def _summary(times: list[float] | None) -> dict[str, float] | None:
  if not times:
    return None
  return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def main(argv: Sequence[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--nets", default="mnist,svhn", help="comma-separated subset of mnist,svhn")
  parser.add_argument("--steps", type=int, default=30, help="timed steps per stepper (>= 20 for a stable median)")
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--no-torch", action="store_true", help="time JAX only")
  parser.add_argument("--no-plain", action="store_true", help="skip the plain-Flax baseline of the MNIST net")
  parser.add_argument(
    "--torch-device", default="cpu", help='PyTorch device: "cpu" (default) or "cuda"; JAX runs on its default backend'
  )
  args = parser.parse_args(argv)
  if argv is None:
    _with_tuned_allocator()
  nets = [n for n in args.nets.split(",") if n]
  unknown = set(nets) - {"mnist", "svhn"}
  if unknown:
    parser.error(f"unknown nets {sorted(unknown)}; choose from mnist, svhn")
  if args.batch_size <= 0 or args.batch_size % 2:
    parser.error(f"--batch-size={args.batch_size} must be even and positive")

  import jax

  from dann_jax.backend import xla_cpu
  from dann_jax.core import models

  threads = _threads()
  torch = None
  if not args.no_torch:
    try:
      import torch
    except ImportError:
      print("PyTorch is not installed (pip install -e .[bench]); timing JAX only.")
  if torch is not None:
    torch.set_num_threads(threads)
    if args.torch_device.startswith("cuda") and not torch.cuda.is_available():
      parser.error(
        f"--torch-device={args.torch_device!r} but this PyTorch "
        f"({torch.__version__}) sees no CUDA device; pass "
        "--torch-device cpu"
      )

  batch = make_batch(args.batch_size)
  load_before = os.getloadavg()
  results = {}
  for net in nets:
    steppers = {
      "jax": jax_stepper(
        xla_cpu.tuned(models.mnist_dann)() if net == "mnist" else xla_cpu.tuned(models.svhn_dann)(), batch
      )
    }
    if net == "mnist":
      steppers["source_only"] = jax_stepper(xla_cpu.tuned(models.mnist_dann)(), batch, method="source_only")
    if net == "mnist" and not args.no_plain:
      steppers["jax_plain"] = jax_stepper(plain_mnist_dann(), batch, plain_jit=True)
    if torch is not None:
      steppers["torch"] = torch_stepper(net, batch, args.torch_device)
    times = time_alternating(steppers, args.steps, args.warmup)
    results[net] = {name: _summary(t) for name, t in times.items()}

  print(
    f"batch {args.batch_size}, {args.steps} timed steps after "
    f"{args.warmup} warm-up, {threads} threads (XLA:CPU intra-op = "
    f"torch.set_num_threads), load average {load_before[0]:.2f} -> "
    f"{os.getloadavg()[0]:.2f}; XLA_FLAGS="
    f"{os.environ.get('XLA_FLAGS', '')!r}"
  )
  print(f"{'net':6} {'stepper':10} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'/ torch':>8}")
  for net, by_stepper in results.items():
    torch_median = (by_stepper.get("torch") or {}).get("median")
    for name, s in by_stepper.items():
      ratio = f"{s['median'] / torch_median:8.2f}" if torch_median else ""
      print(f"{net:6} {name:10} {s['median']:10.1f} {s['min']:8.1f} {s['max']:8.1f} {ratio}")

  def pick(net, name):
    s = results.get(net, {}).get(name)
    return None if s is None else round(s["median"], 2)

  record = {}
  for net, prefix in (("mnist", ""), ("svhn", "svhn_")):
    jax_ms, torch_ms = pick(net, "jax"), pick(net, "torch")
    record[f"{prefix}jax_ms"] = jax_ms
    record[f"{prefix}torch_ms"] = torch_ms
    record[f"{prefix}ratio"] = round(jax_ms / torch_ms, 3) if jax_ms and torch_ms else None
  record["plain_jax_ms"] = pick("mnist", "jax_plain")
  record["source_only_ms"] = pick("mnist", "source_only")
  if record["source_only_ms"] and record["jax_ms"]:
    record["source_only_ratio"] = round(record["source_only_ms"] / record["jax_ms"], 3)
  record.update(
    batch_size=args.batch_size,
    steps=args.steps,
    threads=threads,
    load_avg_1min=round(load_before[0], 2),
    xla_flags=os.environ.get("XLA_FLAGS", ""),
    jax=jax.__version__,
    torch=getattr(torch, "__version__", None),
    torch_device=args.torch_device if torch is not None else None,
    jax_device=str(jax.devices()[0].device_kind),
    cpu=platform.processor() or platform.machine(),
    cpu_model=_cpu_model(),
    glibc_tunables=os.environ.get("GLIBC_TUNABLES"),
  )
  print(json.dumps(record))
  return record


if __name__ == "__main__":
  main()
