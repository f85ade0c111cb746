"""Analysis of learned features: t-SNE embeddings and proxy A-distances of source vs target.

Computes; draws nothing (`dann_jax.plots` draws what this returns).

References: Fig. 4 of Ganin & Lempitsky, arXiv 1409.7495 (t-SNE of features
before and after adaptation); proxy A-distance as in Ganin et al., JMLR 2016,
Sec. 5.1.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class FeatureComparison:
  """t-SNE panels `(title, source_xy, target_xy)` and distances per run name."""

  panels: list[tuple[str, np.ndarray, np.ndarray]]
  proxy_a_distance: dict[str, float]


def compare_features(
  runs: Sequence, *, n: int = 500, layer: str = "features", seed: int = 0, progress: Callable[[str], None] | None = None
) -> FeatureComparison:
  """Embeds source and target test features of runs with t-SNE.

  Args:
    runs: `(name, RunResult)` pairs of runs on the same pair (the first seed
      of a multi-seed run is used), e.g. source-only and DANN.
    n: test images per domain.
    layer: "features" (G_f's output, as the paper's MNIST-M figure) or
      "hidden" (the label predictor's last hidden layer).
    seed: seed of the subsample, t-SNE and the domain classifier.
    progress: called with a line of text as each stage of each run starts
      (t-SNE takes tens of seconds per run on a CPU).

  Returns:
    One t-SNE panel per run (titled with its proxy A-distance) and the proxy
    A-distance between source and target features per run name.
  """
  from sklearn.manifold import TSNE

  from dann_jax.training.evaluation import features
  from dann_jax.training.loop import seed_states
  from dann_jax.validation.divergence import proxy_a_distance

  panels, distances = [], {}
  rng = np.random.default_rng(seed)
  for name, result in runs:
    state = seed_states(result.state)[0]
    data = result.data
    si = rng.permutation(len(data.source_test))[:n]
    ti = rng.permutation(len(data.target_test))[:n]
    fs = features(state, data.source_test.images[si], result.mean, layer)
    ft = features(state, data.target_test.images[ti], result.mean, layer)
    if progress:
      progress(f"{name}: proxy A-distance of {len(fs) + len(ft):,} {layer} vectors ...")
    distances[name] = proxy_a_distance(fs, ft, seed=seed)
    points = np.concatenate([fs, ft])
    if progress:
      progress(f"{name}: t-SNE of {len(points):,} points ...")
    perplexity = min(30.0, (len(points) - 1) / 3)
    xy = TSNE(2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(points)
    panels.append((f"{name} (proxy A-distance {distances[name]:.2f})", xy[: len(fs)], xy[len(fs) :]))
  return FeatureComparison(panels, distances)
