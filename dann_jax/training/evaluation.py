"""Evaluation: accuracy and feature extraction over whole datasets, in fixed-size chunks.

Chunks are padded to one size so each jitted function compiles once, whatever
the dataset length. States with a leading seeds axis (see
`dann_jax.training.loop.replicate_seeds`) are evaluated with `jax.vmap`, per seed.

`accuracy` of a state replicated over a mesh (a multi-device runner's, in one
process or several) splits each chunk's rows over the mesh's devices, each
process supplying only its own devices' rows, and counts the correct ones
over all of them: the same global count as on one device.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from dann_jax.backend.xla_cpu import cpu_jit
from dann_jax.core.train import TrainState, eval_step
from dann_jax.data.batching import preprocess


def _chunks(images: np.ndarray, batch_size: int):
  """Yields (padded chunk, number of real rows)."""
  for start in range(0, len(images), batch_size):
    chunk = images[start : start + batch_size]
    n = len(chunk)
    if n < batch_size:
      pad = np.zeros((batch_size - n, *chunk.shape[1:]), chunk.dtype)
      chunk = np.concatenate([chunk, pad])
    yield start, chunk, n


@cpu_jit(static_argnames="seeds")
def _correct(state, images, labels, mask, mean, seeds):
  x = preprocess(images, mean)
  if seeds:
    return jax.vmap(lambda s: eval_step(s, x, labels, mask))(state)
  return eval_step(state, x, labels, mask)


def _row_sharding(state: TrainState) -> NamedSharding | None:
  """Rows split over every device of the mesh `state` lives on, or None on
  one device."""
  sharding = getattr(jax.tree.leaves(state.params)[0], "sharding", None)
  if not isinstance(sharding, NamedSharding) or sharding.mesh.size == 1:
    return None
  return NamedSharding(sharding.mesh, PartitionSpec(sharding.mesh.axis_names))


def accuracy(state: TrainState, images: np.ndarray, labels: np.ndarray, mean, batch_size: int = 1000):
  """Classification accuracy of the label predictor on uint8 `images`.

  Args:
    state: a train state (optionally with a leading seeds axis).
    images: (N, H, W, C) uint8.
    labels: (N,) int.
    mean: the per-channel training mean (`DomainPair.mean`).
    batch_size: rows per compiled chunk.

  Returns:
    A float, or a (seeds,) numpy array for a seeds-axis state.
  """
  images, labels = np.asarray(images), np.asarray(labels, np.int32)
  if len(images) == 0:
    raise ValueError("cannot evaluate on an empty set of images")
  seeds = state.step.ndim > 0
  rows = _row_sharding(state)
  if rows is not None:  # a whole number of rows per device
    batch_size = -(-batch_size // rows.mesh.size) * rows.mesh.size
  total = 0
  for start, chunk, n in _chunks(images, batch_size):
    lab = np.zeros(batch_size, np.int32)
    lab[:n] = labels[start : start + n]
    mask = np.arange(batch_size) < n
    batch = (chunk, lab, mask)
    if rows is not None:
      batch = tuple(jax.make_array_from_callback(a.shape, rows, lambda i, a=a: a[i]) for a in batch)
    total = total + np.asarray(_correct(state, *batch, mean, seeds))
  result = total / len(images)
  return result if seeds else float(result)


@cpu_jit(static_argnames="layer")
def _embed(state, images, mean, layer):
  variables = {"params": state.params, **state.model_state}
  x = preprocess(images, mean)
  if layer == "features":
    return state.apply_fn(variables, x, method="embed")
  if layer == "logits":
    return state.apply_fn(variables, x, method="classify")
  _, inter = state.apply_fn(variables, x, method="classify", mutable=["intermediates"])
  return inter["intermediates"]["label_predictor"]["hidden"][0]


def features(
  state: TrainState, images: np.ndarray, mean, layer: str = "features", batch_size: int = 1000
) -> np.ndarray:
  """Per-image representations of a single-seed state.

  Args:
    state: a train state without a seeds axis.
    images: (N, H, W, C) uint8.
    mean: the per-channel training mean.
    layer: "features" (the feature extractor's output G_f, used by the
      paper's MNIST-M t-SNE), "hidden" (the label predictor's last hidden
      layer, used by SA and the Syn Numbers t-SNE) or "logits" (the label
      predictor's output).
    batch_size: rows per compiled chunk.

  Returns:
    (N, D) float32.
  """
  if layer not in ("features", "hidden", "logits"):
    raise ValueError(f"{layer=} must be 'features', 'hidden' or 'logits'")
  out = []
  for _, chunk, n in _chunks(np.asarray(images), batch_size):
    out.append(np.asarray(_embed(state, chunk, mean, layer))[:n])
  return np.concatenate(out)
