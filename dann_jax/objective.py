"""The saddle-point objective of domain-adversarial training, as one pure function.

With the gradient reversal layer inside the model, plain gradient descent on
L = L_y + L_d performs the paper's updates (4)-(6): θ_y and θ_d descend their
own losses while θ_f descends L_y - λ L_d, i.e. SGD towards the saddle point of
E(θ_f, θ_y, θ_d) = L_y - λ L_d.

Losses are written as sums divided by *global* counts so that data-parallel
runs (`axis_name` set) give exactly the single-device numbers after a `psum`
of gradients, even when devices hold unequal numbers of labelled samples.

References: Eq. (2)-(6) and Sec. 3.2 of Ganin & Lempitsky, arXiv 1409.7495.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import checkify

Method = Literal["dann", "source_only", "target_only"]
METHODS: tuple[str, ...] = ("dann", "source_only", "target_only")


def check_method(method: str) -> None:
  if method not in METHODS:
    raise ValueError(f"unknown {method=}; choose one of {METHODS}")


def uses_domain_loss(method: Method) -> bool:
  """Whether `method`'s objective includes the domain term L_d (only DANN)."""
  check_method(method)
  return method == "dann"


def _global_sum(x, axis_name):
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def _checked_labels(labels, label_mask, num_classes: int):
  """The labels with unusable rows set to 0, so that no row outside the mask
  can poison the loss (a NaN times a zero weight is still NaN).

  Labels the learner uses must lie in [0, num_classes). With concrete arrays
  (an eager call) that is checked here; under `jit` it is a
  `checkify.debug_check`, free unless the caller wraps the step in
  `jax.experimental.checkify.checkify`. The training loop checks every label
  once, where the data enter (`dann_jax.loop.fit`).
  """
  labels = jnp.asarray(labels)
  valid = (labels >= 0) & (labels < num_classes)
  used = jnp.asarray(label_mask).astype(bool)
  # Inside a trace even operations on constants give tracers.
  if isinstance(valid, jax.core.Tracer) or isinstance(used, jax.core.Tracer):
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


def saddle_point_loss(
  class_logits: jax.Array,
  domain_logits: jax.Array,
  batch: dict[str, jax.Array],
  *,
  method: Method = "dann",
  axis_name: str | None = None,
):
  """L_y + L_d for one batch, and the metrics of its parts.

  Args:
    class_logits: (B, classes) label-predictor logits.
    domain_logits: (B,) domain-classifier logits, computed *through* the GRL.
    batch: `label` (B,) int, `domain` (B,) int (0 source, 1 target) and
      `label_mask` (B,) bool (labels the learner may use: the source rows, plus
      target rows whose label is revealed in the semi-supervised variant).
    method: "dann" (label + domain loss), "source_only" (label loss only), or
      "target_only" (label loss on every target row: the upper bound).
    axis_name: set inside `pmap`/`shard_map` to normalise by global counts; the
      caller then sums (`psum`) gradients over that axis.

  Returns:
    `(loss, metrics)`: the scalar to differentiate and a dict with `loss`
    (the objective's global value: `label_loss + domain_loss` for DANN,
    `label_loss` otherwise), `label_loss` (mean cross-entropy over labelled
    rows), `domain_loss` (mean binary cross-entropy over all rows, reported
    for every method) and `domain_accuracy`.
  """
  missing = [k for k in ("label", "domain", "label_mask") if k not in batch]
  if missing:
    raise ValueError(
      f"the batch lacks {missing}: a batch holds image, label, domain "
      "(0 source, 1 target) and label_mask (labels the learner may use)"
    )
  domain = batch["domain"]
  if method == "target_only":
    label_mask = domain == 1
  else:
    label_mask = batch["label_mask"]
  labels = _checked_labels(batch["label"], label_mask, class_logits.shape[-1])
  label_mask = label_mask.astype(jnp.float32)

  ce = optax.softmax_cross_entropy_with_integer_labels(class_logits, labels)
  n_labelled = jnp.maximum(_global_sum(label_mask.sum(), axis_name), 1.0)
  label_loss = jnp.sum(ce * label_mask) / n_labelled

  n_all = _global_sum(jnp.asarray(domain.shape[0], jnp.float32), axis_name)
  bce = optax.sigmoid_binary_cross_entropy(domain_logits, domain.astype(jnp.float32))
  domain_loss = jnp.sum(bce) / n_all
  domain_correct = (domain_logits > 0) == (domain == 1)
  domain_accuracy = jnp.sum(domain_correct) / n_all

  adversarial = uses_domain_loss(method)
  loss = label_loss + domain_loss if adversarial else label_loss
  metrics = dict(label_loss=label_loss, domain_loss=domain_loss, domain_accuracy=domain_accuracy)
  if axis_name is not None:
    metrics = jax.lax.psum(metrics, axis_name)
  metrics["loss"] = metrics["label_loss"] + metrics["domain_loss"] if adversarial else metrics["label_loss"]
  return loss, metrics
