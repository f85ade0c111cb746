"""Figures: training curves, and t-SNE of features like the paper's Figure 4.

Matplotlib's non-interactive Agg backend is used explicitly, so plotting works
on headless machines and never opens windows.

References: Fig. 4 of Ganin & Lempitsky, arXiv 1409.7495 (t-SNE of features,
source blue, target red, before and after adaptation).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np


def _figure(rows: int, cols: int, size: tuple[float, float]):
  from matplotlib.figure import Figure
  from matplotlib.backends.backend_agg import FigureCanvasAgg

  fig = Figure(figsize=size, dpi=80)
  FigureCanvasAgg(fig)
  return fig, fig.subplots(rows, cols, squeeze=False)


def _series(history: Sequence[dict], key: str):
  rows = [r for r in history if key in r]
  steps = np.array([r["step"] for r in rows])
  values = np.array([np.mean(r[key]) for r in rows], np.float64)
  return steps, values


def training_curves(history: Sequence[dict], path: str | os.PathLike, title: str = "") -> None:
  """Label loss, domain loss, domain accuracy and accuracies over steps (PNG).

  Args:
    history: metric rows with `step` and any of `label_loss`, `domain_loss`,
      `domain_accuracy`, `source_accuracy`, `target_accuracy` (values or
      per-seed lists, averaged over seeds).
    path: the PNG to write.
    title: the figure title.
  """
  fig, axes = _figure(2, 2, (9, 6))
  panels = [
    ("label loss", ["label_loss"]),
    ("domain loss", ["domain_loss"]),
    ("domain-classifier accuracy", ["domain_accuracy"]),
    ("test accuracy", ["source_accuracy", "target_accuracy"]),
  ]
  for ax, (name, keys) in zip(axes.flat, panels):
    for key in keys:
      steps, values = _series(history, key)
      if len(steps):
        ax.plot(
          steps, values, marker="o" if "accuracy" in key and len(steps) < 30 else None, label=key.replace("_", " ")
        )
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if len(keys) > 1:
      ax.legend()
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(os.fspath(path))


def tsne_panels(panels: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str | os.PathLike, title: str = "") -> None:
  """Side-by-side scatter plots of 2-D embeddings, source blue, target red.

  Args:
    panels: `(name, source_xy, target_xy)` per panel.
    path: the PNG to write.
    title: the figure title.
  """
  fig, axes = _figure(1, len(panels), (5 * len(panels), 5))
  for ax, (name, src, tgt) in zip(axes.flat, panels):
    ax.scatter(src[:, 0], src[:, 1], s=3, c="tab:blue", label="source", alpha=0.6, linewidths=0)
    ax.scatter(tgt[:, 0], tgt[:, 1], s=3, c="tab:red", label="target", alpha=0.6, linewidths=0)
    ax.set_title(name)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="upper right", markerscale=4)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(os.fspath(path))


def validator_curves(report: dict, path: str | os.PathLike) -> None:
  """Each candidate's label-free risk per checkpoint, and its target accuracy where known (PNG).

  Args:
    report: a `dann_jax.adapt.adapt` report.
    path: the PNG to write.
  """
  candidates = report["candidates"]
  has_target = any(c["target_accuracy"] is not None for r in candidates.values() for c in r["checkpoints"].values())
  fig, axes = _figure(1, 2 if has_target else 1, (11 if has_target else 6, 4))
  chosen = report["chosen"]
  for name, r in candidates.items():
    steps = np.array([int(s) for s in r["checkpoints"]])
    style = "-" if r["lam_max"] > 0 else "--"  # no adaptation dashed
    risk = [c["risk"] for c in r["checkpoints"].values()]
    (line,) = axes[0, 0].plot(steps, risk, style, marker=".", label=name)
    if has_target:
      acc = [np.nan if c["target_accuracy"] is None else c["target_accuracy"] for c in r["checkpoints"].values()]
      axes[0, 1].plot(steps, acc, style, marker=".", color=line.get_color())
  c = chosen
  axes[0, 0].plot([c["step"]], [c["risk"]], "k*", markersize=14, label=f"chosen: {c['candidate']}")
  axes[0, 0].set(xlabel="step", ylabel=f"{report['validator']} risk (lower is better)", title="label-free risk")
  axes[0, 0].legend(fontsize=7)
  if has_target:
    if c["target_accuracy"] is not None:
      axes[0, 1].plot([c["step"]], [c["target_accuracy"]], "k*", markersize=14)
    axes[0, 1].set(xlabel="step", ylabel="target test accuracy", title="target accuracy (reported, not used)")
  fig.suptitle(f"{report['pair']}, seed {report['seed']}")
  fig.tight_layout()
  fig.savefig(os.fspath(path))
