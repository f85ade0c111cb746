"""A one-page Markdown report of a source-only vs DANN comparison on one pair."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from dann_jax.data.pairs import PairSpec
from dann_jax.io import write_text_atomic

TSNE_POINTS = 500  # test images per domain in the t-SNE


def _pct(x: float | None) -> str:
  return "-" if x is None else f"{x:.4f}"


def demo_report(pair: PairSpec, results: Mapping, out: str | os.PathLike, *, wall_seconds: float) -> Path:
  """Writes `out/report.md` and `out/tsne.png` for finished runs.

  Args:
    pair: the pair both runs trained on.
    results: `{"source_only": RunResult, "dann": RunResult}` of single-seed
      runs, each with its folder under `out` (`out/<method>/curves.png`).
    out: the demo's folder.
    wall_seconds: the command's wall time so far (reported).

  Returns:
    The report's path.
  """
  from dann_jax.plots import tsne_panels
  from dann_jax.validation.analysis import compare_features

  out = Path(out)
  names = {"source_only": "source only", "dann": "DANN"}
  comparison = compare_features([(names[m], r) for m, r in results.items()], n=TSNE_POINTS)
  tsne_panels(comparison.panels, out / "tsne.png", f"{pair.name}: G_f features of test images (t-SNE)")
  so = results["source_only"].summary
  dann = results["dann"].summary
  gain = dann["target_accuracy"]["mean"] - so["target_accuracy"]["mean"]
  lines = [
    f"# DANN on {pair.name}: source only vs domain-adversarial",
    "",
    f"Target accuracy on all {dann['target_test_size']:,} target test "
    f"images; the target labels were used for nothing else. Preset "
    f"`{dann['preset']}`, {dann['steps']:,} steps, seed "
    f"{dann['seeds'][0]}; {dann['machine']}.",
    "",
    "| method | target accuracy | source accuracy | paper, arXiv v1 | "
    "paper, ICML 2015 | proxy A-distance | train time |",
    "|---|---|---|---|---|---|---|",
  ]
  for method, summary in (("source_only", so), ("dann", dann)):
    lines.append(
      f"| {names[method]} | {summary['target_accuracy']['mean']:.4f} | "
      f"{summary['source_accuracy']['mean']:.4f} | "
      f"{_pct(summary['paper_v1'])} | {_pct(summary['paper_icml'])} | "
      f"{comparison.proxy_a_distance[names[method]]:.2f} | "
      f"{summary['train_seconds']:.0f} s |"
    )
  lines += [
    "",
    f"DANN - source only: **{gain:+.4f}**. Whole command: {wall_seconds / 60:.1f} min.",
  ]
  for method, summary in (("source_only", so), ("dann", dann)):
    step = summary.get("collapsed_at_step", [None])[0]
    if step is not None:
      lines += [
        "",
        f"**{names[method]} collapsed at step {step:,}**: its training label loss went back to chance and "
        "stayed there, so its predictions are constant and its accuracy is chance; its features are not those "
        "of a trained model, and its proxy A-distance says nothing about alignment (see docs/errors.md, "
        "\"A run that collapses\").",
      ]
  lines += [
    "",
    "The proxy A-distance (2 = the domains are linearly separable in "
    "feature space, 0 = indistinguishable) is measured on the feature "
    f"extractor's output for {TSNE_POINTS} test images per domain; the "
    "t-SNE shows the same points, source blue, target red:",
    "",
    "![t-SNE](tsne.png)",
    "",
    "Training curves (losses, domain-classifier accuracy, test accuracies on 2,000 images per domain):",
    "",
    "![source only](source_only/curves.png)",
    "",
    "![DANN](dann/curves.png)",
    "",
    f"Preset: {dann['note'] or 'the paper protocol'}",
    "",
  ]
  path = out / "report.md"
  write_text_atomic(path, "\n".join(lines))
  return path
