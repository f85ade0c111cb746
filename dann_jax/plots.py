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
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=size, dpi=80)
  FigureCanvasAgg(fig)
  return fig, fig.subplots(rows, cols, squeeze=False)


def _seed_series(history: Sequence[dict], key: str):
  """(steps, mean over seeds, std over seeds, number of seeds) of `key` in the rows that have it."""
  rows = [r for r in history if key in r]
  values = [np.atleast_1d(np.asarray(r[key], np.float64)) for r in rows]
  seeds = max((len(v) for v in values), default=1)
  stacked = np.array([np.broadcast_to(v, (seeds,)) for v in values]).reshape(len(rows), seeds)
  return np.array([r["step"] for r in rows]), stacked.mean(axis=1), stacked.std(axis=1), seeds


def curve_panels(
  history: Sequence[dict], *, trained_domain: bool = True, label_chance: float | None = None
) -> list[dict]:
  """What `training_curves` draws: one dict per panel.

  Each panel has a `title`, `lines` (`label`, `steps`, `mean`, `std`,
  `seeds`: the mean over seeds, with a ± std band when there are several)
  and `chance` (a horizontal reference: the label loss of constant
  predictions, ln 2 for the domain loss, 1/2 for the domain accuracy, or
  None). The domain classifier's panels say so when the method does not
  train it (its numbers are then those of an untrained head).

  Args:
    history: metrics rows (`metrics.jsonl`) with `step` and per-seed values.
    trained_domain: whether the method trains the domain classifier.
    label_chance: the label loss of constant predictions, or None.
  """
  # (title, metric keys, chance level, whether the panel shows the domain classifier)
  spec = [
    ("label loss", ["label_loss"], label_chance, False),
    ("domain loss", ["domain_loss"], float(np.log(2.0)), True),
    ("domain-classifier accuracy", ["domain_accuracy"], 0.5, True),
    ("test accuracy", ["source_accuracy", "target_accuracy"], None, False),
    ("adaptation factor lambda_p", ["lambda"], None, False),
    ("learning rate mu_p", ["learning_rate"], None, False),
  ]
  panels = []
  for title, keys, chance, domain_head in spec:
    lines = []
    for key in keys:
      steps, mean, std, seeds = _seed_series(history, key)
      if len(steps):
        lines.append({"label": key.replace("_", " "), "steps": steps, "mean": mean, "std": std, "seeds": seeds})
    muted = domain_head and not trained_domain
    title += " (not trained)" if muted else ""
    panels.append({"title": title, "lines": lines, "chance": chance, "muted": muted})
  return panels


def training_curves(
  history: Sequence[dict],
  path: str | os.PathLike,
  title: str = "",
  *,
  trained_domain: bool = True,
  label_chance: float | None = None,
) -> None:
  """Losses, the domain classifier's accuracy, test accuracies and the schedules over steps (PNG).

  Args:
    history: metric rows with `step` and any of `label_loss`, `domain_loss`,
      `domain_accuracy`, `source_accuracy`, `target_accuracy`, `lambda`,
      `learning_rate` (values or per-seed lists: several seeds are drawn as
      their mean with a ± std band, and the legend says so).
    path: the PNG to write.
    title: the figure title.
    trained_domain, label_chance: as `curve_panels`.
  """
  from matplotlib.ticker import MaxNLocator

  panels = curve_panels(history, trained_domain=trained_domain, label_chance=label_chance)
  fig, axes = _figure(2, 3, (13, 6))
  for ax, panel in zip(axes.flat, panels):
    for line in panel["lines"]:
      few = len(line["steps"]) < 30
      label = line["label"] + (f", mean of {line['seeds']} seeds ± std" if line["seeds"] > 1 else "")
      color = "0.6" if panel["muted"] else None
      (drawn,) = ax.plot(line["steps"], line["mean"], marker="o" if few else None, label=label, color=color)
      if line["seeds"] > 1:
        ax.fill_between(
          line["steps"], line["mean"] - line["std"], line["mean"] + line["std"], alpha=0.2, color=drawn.get_color()
        )
    if panel["muted"] and not panel["lines"]:
      ax.text(
        0.5,
        0.5,
        "not run: this method does not\nuse the domain classifier",
        ha="center",
        va="center",
        transform=ax.transAxes,
        color="0.5",
      )
    if panel["chance"] is not None and panel["lines"]:
      ax.axhline(panel["chance"], color="0.5", linestyle=":", linewidth=1, label="chance")
    ax.set_title(panel["title"], fontsize=10)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    if panel["muted"] and not panel["lines"]:
      ax.set_xticks([])
      ax.set_yticks([])
    ax.grid(alpha=0.3)
    if panel["lines"] and (len(panel["lines"]) > 1 or panel["chance"] is not None or panel["lines"][0]["seeds"] > 1):
      ax.legend(fontsize=8)
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
    report: a `dann_jax.runner.adapt.adapt` report.
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
