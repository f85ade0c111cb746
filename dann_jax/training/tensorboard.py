"""A run's metrics as TensorBoard event files, beside metrics.jsonl (which stays the record).

Optional: `pip install -e ".[tensorboard]"` installs tensorboardX, the writer used here. One event
folder per seed (`<log_dir>/seed_<s>`), so TensorBoard draws the seeds of a run, and several runs
given the same `log_dir` parent, side by side. Every training step's values are written (`train/...`:
the losses, the domain classifier's accuracy, λ_p as `train/lambda` and μ_p as `train/learning_rate`),
each evaluation's accuracies (`eval/...`), and the run's figures as images (`figures/...`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

INSTALL = 'pip install -e ".[tensorboard]" (or pip install tensorboardX)'


def summary_writer():
  """tensorboardX's `SummaryWriter`, or one ValueError saying how to install it."""
  try:
    from tensorboardX import SummaryWriter
  except ImportError:
    raise ValueError(f"`tensorboard` needs the tensorboardX package: {INSTALL}") from None
  return SummaryWriter


def check_log_dir(log_dir: str | os.PathLike) -> None:
  """Refuses, before anything is written, a folder that cannot be created or written.

  Raises:
    ValueError: naming the folder and what is in the way.
  """
  path = Path(log_dir).absolute()
  existing = next(p for p in (path, *path.parents) if p.exists())
  if not existing.is_dir():
    problem = f"{existing} is a file"
  elif not os.access(existing, os.W_OK | os.X_OK):
    problem = f"{existing} is not writable"
  else:
    return
  raise ValueError(f"{log_dir} cannot hold TensorBoard event files: {problem}; choose another `tensorboard` folder")


class RunWriter:
  """Writes one run's scalars and figures, one event folder per seed.

  Args:
    log_dir: the folder to write under (created).
    seeds: the run's seeds, in the order of a metrics array's seeds axis.
  """

  def __init__(self, log_dir: str | os.PathLike, seeds: Sequence[int]):
    writer = summary_writer()
    self.writers = [writer(logdir=os.fspath(Path(log_dir) / f"seed_{s}")) for s in seeds]

  def steps(self, first_step: int, metrics: Mapping[str, np.ndarray]) -> None:
    """One chunk's per-step metrics: arrays of shape (steps,) or (steps, seeds), the first at `first_step` + 1."""
    for name, values in metrics.items():
      v = np.asarray(values, np.float64).reshape(len(values), -1)
      for i, row in enumerate(v):
        for writer, x in zip(self.writers, np.broadcast_to(row, (len(self.writers),))):
          writer.add_scalar(f"train/{name}", float(x), first_step + i + 1)

  def evaluation(self, step: int, values: Mapping[str, float | Sequence[float]]) -> None:
    """Scalars of one evaluation (a value, or one per seed)."""
    for name, value in values.items():
      per_seed = np.broadcast_to(np.asarray(value, np.float64).reshape(-1), (len(self.writers),))
      for writer, x in zip(self.writers, per_seed):
        writer.add_scalar(f"eval/{name}", float(x), step)

  def figure(self, tag: str, png: str | os.PathLike, step: int) -> None:
    """A PNG the run drew, under `figures/<tag>` (in the first seed's folder)."""
    from PIL import Image

    with Image.open(png) as image:
      pixels = np.asarray(image.convert("RGB"))
    self.writers[0].add_image(f"figures/{tag}", pixels, step, dataformats="HWC")

  def close(self) -> None:
    for writer in self.writers:
      writer.close()
