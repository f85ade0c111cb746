"""The saddle-point objective of domain-adversarial training, as one pure function.

With the gradient reversal layer inside the model, plain gradient descent on
L = L_y + L_d performs the paper's updates (4)-(6): θ_y and θ_d descend their
own losses while θ_f descends L_y - λ L_d, i.e. SGD towards the saddle point of
E(θ_f, θ_y, θ_d) = L_y - λ L_d.

The terms (`label_loss`, `domain_loss`) are the building blocks of every
method's loss (`dann_jax.core.methods`); `saddle_point_loss` is DANN's.

Losses are written as sums divided by *global* counts so that data-parallel
runs (`axis_name` set) give exactly the single-device numbers after a `psum`
of gradients, even when devices hold unequal numbers of labelled samples.

References: Eq. (2)-(6) and Sec. 3.2 of Ganin & Lempitsky, arXiv 1409.7495.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import checkify

from dann_jax.backend.tracing import TraceFlag

BATCH_KEYS = ("label", "domain", "label_mask")

LABELS_CHECKED_UPSTREAM = TraceFlag()


def labels_checked_upstream():
  """Within: traced losses carry no `checkify` check of their labels.

  For jitted functions whose callers check every label where the data enter
  (`dann_jax.training.loop.runner_jit`). The check is a no-op unless the caller
  wraps the function in `jax.experimental.checkify.checkify`, but its effect
  still keeps `jax.jit` off its C++ dispatch path: each call of the MNIST
  step then spends about 1 ms more in Python on a 2-core CPU. Only tracing
  reads it (`LABELS_CHECKED_UPSTREAM`; its `around(fun)` traces `fun` so).
  """
  return LABELS_CHECKED_UPSTREAM.set()


def global_sum(x, axis_name: str | None):
  """`x` summed over the mapped axis `axis_name` (itself when None)."""
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def check_batch(batch) -> None:
  missing = [k for k in BATCH_KEYS if k not in batch]
  if missing:
    raise ValueError(
      f"the batch lacks {missing}: a batch holds image, label, domain "
      "(0 source, 1 target) and label_mask (labels the learner may use)"
    )


def _checked_labels(labels, label_mask, num_classes: int):
  """The labels with unusable rows set to 0, so that no row outside the mask
  can poison the loss (a NaN times a zero weight is still NaN).

  Labels the learner uses must lie in [0, num_classes). With concrete arrays
  (an eager call) that is checked here; under `jit` it is a
  `checkify.debug_check`, free unless the caller wraps the step in
  `jax.experimental.checkify.checkify`. The training loop checks every label
  once, where the data enter (`dann_jax.training.loop.fit`), and traces its
  steps under `labels_checked_upstream()`, without the check.
  """
  labels = jnp.asarray(labels)
  valid = (labels >= 0) & (labels < num_classes)
  used = jnp.asarray(label_mask).astype(bool)
  # Inside a trace even operations on constants give tracers.
  if isinstance(valid, jax.core.Tracer) or isinstance(used, jax.core.Tracer):
    if LABELS_CHECKED_UPSTREAM.is_set():
      return jnp.where(valid, labels, 0)
    checkify.debug_check(
      jnp.all(valid | ~used), f"batch['label'] must lie in [0, {num_classes}) where label_mask is set"
    )
  else:
    bad = np.asarray(used) & ~np.asarray(valid)
    if bad.any():
      values = np.unique(np.asarray(labels)[bad])
      raise ValueError(
        f"batch['label'] holds {values.tolist()} where label_mask is set; "
        f"labels must lie in [0, {num_classes}) for a model with "
        f"{num_classes} classes"
      )
  return jnp.where(valid, labels, 0)


def label_loss(class_logits: jax.Array, labels: jax.Array, label_mask: jax.Array, *, axis_name: str | None = None):
  """L_y: the mean cross-entropy over the rows of `label_mask` (this device's
  share of the global mean when `axis_name` is set)."""
  labels = _checked_labels(labels, label_mask, class_logits.shape[-1])
  mask = jnp.asarray(label_mask).astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(class_logits, labels)
  return jnp.sum(ce * mask) / jnp.maximum(global_sum(mask.sum(), axis_name), 1.0)


def domain_loss(domain_logits: jax.Array, domain: jax.Array, *, axis_name: str | None = None):
  """L_d: the mean binary cross-entropy of the domain classifier over all rows,
  and its accuracy (both this device's share when `axis_name` is set)."""
  n_all = global_sum(jnp.asarray(domain.shape[0], jnp.float32), axis_name)
  bce = optax.sigmoid_binary_cross_entropy(domain_logits, domain.astype(jnp.float32))
  correct = (domain_logits > 0) == (domain == 1)
  return jnp.sum(bce) / n_all, jnp.sum(correct) / n_all


def supervised_loss(
  class_logits: jax.Array,
  domain_logits: jax.Array | None,
  batch: dict[str, jax.Array],
  *,
  label_mask: jax.Array | None = None,
  axis_name: str | None = None,
):
  """L_y alone (source only, train on target); with `domain_logits`, the
  domain classifier's loss and accuracy are reported, not trained.

  Args and returns as `saddle_point_loss`; `loss` is `label_loss`.
  """
  check_batch(batch)
  mask = batch["label_mask"] if label_mask is None else label_mask
  loss = label_loss(class_logits, batch["label"], mask, axis_name=axis_name)
  metrics = {"label_loss": loss}
  if domain_logits is not None:
    metrics["domain_loss"], metrics["domain_accuracy"] = domain_loss(
      domain_logits, batch["domain"], axis_name=axis_name
    )
  metrics = global_sum(metrics, axis_name)
  metrics["loss"] = metrics["label_loss"]
  return loss, metrics


def saddle_point_loss(
  class_logits: jax.Array,
  domain_logits: jax.Array,
  batch: dict[str, jax.Array],
  *,
  label_mask: jax.Array | None = None,
  axis_name: str | None = None,
):
  """DANN's L_y + L_d for one batch, and the metrics of its parts.

  Args:
    class_logits: (B, classes) label-predictor logits.
    domain_logits: (B,) domain-classifier logits, computed *through* the GRL.
    batch: `label` (B,) int, `domain` (B,) int (0 source, 1 target) and
      `label_mask` (B,) bool (labels the learner may use: the source rows, plus
      target rows whose label is revealed in the semi-supervised variant).
    label_mask: the rows whose labels L_y uses; `batch["label_mask"]` if None.
    axis_name: set inside `pmap`/`shard_map` to normalise by global counts; the
      caller then sums (`psum`) gradients over that axis.

  Returns:
    `(loss, metrics)`: the scalar to differentiate (this device's share under
    `axis_name`) and a dict of global values: `loss` (`label_loss +
    domain_loss`), `label_loss` (mean cross-entropy over labelled rows),
    `domain_loss` (mean binary cross-entropy over all rows) and
    `domain_accuracy`.
  """
  check_batch(batch)
  mask = batch["label_mask"] if label_mask is None else label_mask
  ly = label_loss(class_logits, batch["label"], mask, axis_name=axis_name)
  ld, acc = domain_loss(domain_logits, batch["domain"], axis_name=axis_name)
  metrics = global_sum(dict(label_loss=ly, domain_loss=ld, domain_accuracy=acc), axis_name)
  metrics["loss"] = metrics["label_loss"] + metrics["domain_loss"]
  return ly + ld, metrics
