"""Training methods: what one step optimises and whose labels it learns from.

A method is one `Method` entry: its loss over the batch (built from the terms
of `dann_jax.core.objective`), whose labels it may use, and whether it plays the
adversarial game (the domain classifier trained through the gradient reversal
layer with the factor λ_p). The train step receives the method and calls it;
nothing else in the library looks at a method's name. The registry holds
DANN and the paper's two baselines; a user adds one with `register` (or names
it as `"package.module:ATTRIBUTE"`, which `get` imports), and `fit`,
`make_config` and `dann-jax train --method` accept it. How to write one:
docs/methods.md.

References: Sec. 3 (DANN) and Sec. 5 (the source-only and train-on-target
baselines) of Ganin & Lempitsky, arXiv 1409.7495.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable, Literal

import jax

from dann_jax.core import objective

# (class_logits, domain_logits, batch, *, label_mask, axis_name) -> (loss, metrics)
Loss = Callable[..., tuple[jax.Array, dict]]
LABELLED = ("source", "target")


@dataclasses.dataclass(frozen=True)
class Method:
  """One training method.

  Attributes:
    name: the registry name (letters, digits, `_` and `-`).
    loss: `loss(class_logits, domain_logits, batch, *, label_mask,
      axis_name) -> (loss, metrics)`: the scalar to differentiate (this
      device's share of the global value under `axis_name`) and global
      metrics, at least `loss` and `label_loss`. `label_mask` is the rows
      whose labels the method may use (see `labelled`).
    labelled: whose labels it trains on: "source" (the rows of
      `batch["label_mask"]`: the source rows, plus revealed target labels) or
      "target" (every target row: the train-on-target bound, which needs a
      labelled target).
    adversarial: whether the domain classifier is trained through the
      gradient reversal layer with λ_p; if False, λ is 0 throughout.
    labelled_rows_only: the loss reads nothing but the class logits of the
      rows whose labels it uses. The step then skips the domain classifier
      (`domain_logits` is None) and the training loop samples only those rows
      (`batch_rows`), so the step costs about half. Needs `adversarial=False`.
    labelled_logits_only: the loss reads the class logits of the rows whose
      labels it uses and of no other row (DANN: L_y on those rows, L_d on the
      domain logits of all). Where a batch puts those rows first (the loop's
      batches, `labelled_prefix`), the step runs the label predictor on them
      alone: the same loss and gradients for less work.
    description: one line for `--help` and reports.
  """

  name: str
  loss: Loss
  labelled: Literal["source", "target"] = "source"
  adversarial: bool = True
  labelled_rows_only: bool = False
  labelled_logits_only: bool = False
  description: str = ""

  def __post_init__(self):
    if not self.name or not all(c.isalnum() or c in "_-" for c in self.name):
      raise ValueError(f"method name {self.name!r} must be letters, digits, '_' or '-'")
    if self.labelled not in LABELLED:
      raise ValueError(f"{self.name}: labelled={self.labelled!r} must be one of {LABELLED}")
    if not callable(self.loss):
      raise ValueError(f"{self.name}: loss must be callable, got {type(self.loss).__name__}")
    if self.labelled_rows_only and self.adversarial:
      raise ValueError(f"{self.name}: labelled_rows_only needs adversarial=False (the game needs both domains)")


def label_rows(method: Method, batch) -> jax.Array:
  """The rows of `batch` whose labels `method` may use."""
  return batch["domain"] == 1 if method.labelled == "target" else batch["label_mask"]


def batch_rows(method: Method, target_labels_revealed: bool) -> Literal["both", "source", "target"]:
  """Which half of each training batch `method` needs: "both", or only the
  rows whose labels it uses when it reads nothing else (`labelled_rows_only`).

  Args:
    method: the method.
    target_labels_revealed: whether some target labels may be trained on
      (the semi-supervised variant); then a source-labelled method needs
      both halves.
  """
  if not method.labelled_rows_only:
    return "both"
  if method.labelled == "target":
    return "target"
  return "both" if target_labels_revealed else "source"


def labelled_prefix(method: Method, batch_size: int, target_labels_revealed: bool) -> int | None:
  """How many leading rows of the training loop's batch of `batch_size` hold
  every row whose class logits `method`'s loss reads, or None when that is not
  a prefix (`train_step(..., labelled_rows=...)`).

  The loop's batches are the source half, then the target half
  (`dann_jax.data.batching.sample_batch`); with no target label revealed, a
  source-labelled method's labelled rows are the first half.
  """
  if not method.labelled_logits_only or method.labelled != "source" or target_labels_revealed:
    return None
  if batch_rows(method, target_labels_revealed) != "both":
    return None
  return batch_size // 2


def batch_loss(method: Method, class_logits, domain_logits, batch, *, axis_name: str | None = None):
  """`method`'s `(loss, metrics)` on one batch of model outputs."""
  objective.check_batch(batch)
  return method.loss(class_logits, domain_logits, batch, label_mask=label_rows(method, batch), axis_name=axis_name)


DANN = Method(
  "dann",
  objective.saddle_point_loss,
  adversarial=True,
  labelled_logits_only=True,
  description="domain-adversarial training: L_y on source labels + L_d through the gradient reversal layer",
)
SOURCE_ONLY = Method(
  "source_only",
  objective.supervised_loss,
  adversarial=False,
  labelled_rows_only=True,
  description="the lower bound: L_y on source labels only (the domain classifier is not used)",
)
TARGET_ONLY = Method(
  "target_only",
  objective.supervised_loss,
  labelled="target",
  adversarial=False,
  labelled_rows_only=True,
  description="the upper bound: L_y on the target's own labels",
)

_REGISTRY: dict[str, Method] = {m.name: m for m in (DANN, SOURCE_ONLY, TARGET_ONLY)}


def register(method: Method) -> Method:
  """Adds `method` to the registry under `method.name` and returns it.

  Raises:
    ValueError: another method is registered under that name.
  """
  if not isinstance(method, Method):
    raise ValueError(f"register takes a dann_jax.core.methods.Method, got {type(method).__name__}")
  held = _REGISTRY.get(method.name)
  if held is not None and held != method:
    raise ValueError(f"a method named {method.name!r} is already registered; give yours another name")
  _REGISTRY[method.name] = method
  return method


def names() -> tuple[str, ...]:
  """The registered method names, built-in ones first."""
  return tuple(_REGISTRY)


def get(method: str | Method) -> Method:
  """The `Method` for a registered name, a `"package.module:ATTRIBUTE"` spec, or a `Method`.

  Raises:
    ValueError: an unknown name, or a spec whose module cannot be imported
      or whose attribute is not a `Method`.
  """
  if isinstance(method, Method):
    return method
  if not isinstance(method, str):
    raise ValueError(f"method must be a name or a dann_jax.core.methods.Method, got {type(method).__name__}")
  if ":" in method:
    return _import(method)
  if method not in _REGISTRY:
    raise ValueError(
      f"unknown method={method!r}; choose one of {names()} or name your own as 'package.module:ATTRIBUTE' "
      "(docs/methods.md)"
    )
  return _REGISTRY[method]


def _import(spec: str) -> Method:
  module_name, _, attribute = spec.partition(":")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ValueError(
      f"method={spec!r}: cannot import {module_name!r} ({e}); put its folder on PYTHONPATH or install it"
    ) from None
  except Exception as e:  # noqa: BLE001 - the user's module failed while being imported
    raise ValueError(
      f"method={spec!r}: importing {module_name!r} failed ({type(e).__name__}: {e}); fix that module"
    ) from None
  found = getattr(module, attribute, None)
  if not isinstance(found, Method):
    raise ValueError(f"method={spec!r}: {module_name}.{attribute} is not a dann_jax.core.methods.Method")
  return found
