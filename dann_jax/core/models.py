"""The networks: feature extractors, label predictors, domain classifiers, and DANN.

`DANN` joins *any* three Flax modules — the paper's claim is that the method
fits almost any feed-forward model — with the gradient reversal layer between
the feature extractor and the domain classifier. The factories build the exact
architectures of the paper's digit experiments. Their convolution and pooling
are attributes that default to stock Flax (`lax.conv_general_dilated`,
`nn.max_pool`); `dann_jax.backend.xla_cpu.tuned` gives the same networks with the
CPU-fast formulations of the same functions.

References: Ganin & Lempitsky, arXiv 1409.7495, Fig. 1 and Sec. 3; the digit
architectures are those of the arXiv v2 appendix / JMLR 2016 Fig. 4.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from dann_jax.core.grl import gradient_reversal


def _takes_train(module: nn.Module) -> bool:
  return "train" in inspect.signature(module.__call__).parameters


def takes_labelled_rows(module: Any) -> bool:
  """Whether `module`'s call takes `labelled_rows` (`DANN` does; a network of
  one's own with DANN's call signature need not)."""
  call = getattr(module, "__call__", None)
  return call is not None and "labelled_rows" in inspect.signature(call).parameters


def row_blocks(labelled_rows: int | tuple[int, int]) -> tuple[int, int]:
  """`labelled_rows` as (blocks, rows): the first `rows` rows of each of
  `blocks` equal row blocks of a batch; an int n is (1, n), a prefix."""
  if isinstance(labelled_rows, tuple):
    return labelled_rows
  return 1, labelled_rows


def labelled_part(x: jax.Array, labelled_rows: int | tuple[int, int]) -> jax.Array:
  """The rows of `x` that `labelled_rows` names (`row_blocks`), in order."""
  blocks, rows = row_blocks(labelled_rows)
  if blocks == 1:
    return x[:rows]
  return x.reshape((blocks, -1) + x.shape[1:])[:, :rows].reshape((blocks * rows,) + x.shape[1:])


def spread_labelled(part: jax.Array, batch_rows: int, labelled_rows: int | tuple[int, int]) -> jax.Array:
  """`part` (the rows `labelled_part` took) back at its rows of a batch of
  `batch_rows`, zeros in every other row."""
  blocks, rows = row_blocks(labelled_rows)
  per_block = part.reshape((blocks, rows) + part.shape[1:])
  pad = ((0, 0), (0, batch_rows // blocks - rows)) + ((0, 0),) * (part.ndim - 1)
  return jnp.pad(per_block, pad).reshape((batch_rows,) + part.shape[1:])


def _apply(module: nn.Module, x, train: bool):
  """Calls `module`, passing `train` only to modules that accept it."""
  return module(x, train=train) if _takes_train(module) else module(x)


def max_pool(x: jax.Array, window: int, stride: int, padding: str = "VALID") -> jax.Array:
  """Square max pooling of NHWC `x` (`flax.linen.max_pool`)."""
  return nn.max_pool(x, (window, window), (stride, stride), padding)


class ConvFeatures(nn.Module):
  """Convolutions, each followed by ReLU and an optional max pooling, then flatten.

  Attributes:
    features: output channels of each convolution.
    pools: per convolution, `(window, stride)` of the max pooling after it, or
      None for no pooling.
    kernel_size: square kernel side of every convolution.
    padding: padding of the convolutions and poolings ("VALID" or "SAME").
    conv_general_dilated: the convolution primitive, with the signature of
      `jax.lax.conv_general_dilated` (passed to `nn.Conv`).
    max_pool: `(x, window, stride, padding) -> pooled x`.
  """

  features: Sequence[int]
  pools: Sequence[tuple[int, int] | None]
  kernel_size: int = 5
  padding: str = "VALID"
  conv_general_dilated: Callable = lax.conv_general_dilated
  max_pool: Callable = max_pool

  @nn.compact
  def __call__(self, x):
    if x.ndim != 4:
      raise ValueError(
        f"images must be NHWC (batch, height, width, channels); got shape "
        f"{x.shape}. Add a batch axis or move channels last."
      )
    for width, pool in zip(self.features, self.pools, strict=True):
      x = nn.Conv(
        width,
        (self.kernel_size, self.kernel_size),
        padding=self.padding,
        conv_general_dilated=self.conv_general_dilated,
      )(x)
      x = nn.relu(x)
      if pool is not None:
        x = self.max_pool(x, *pool, padding=self.padding)
    return x.reshape(x.shape[0], -1)


class MLP(nn.Module):
  """Fully connected ReLU layers with optional dropout, then a linear output.

  The last hidden activations are sown as `intermediates/hidden` (the features
  the paper's SA baseline and t-SNE plots use).

  Attributes:
    hidden: widths of the hidden layers.
    outputs: width of the final linear layer.
    dropout_rate: dropout after each hidden layer in training (0 for none).
  """

  hidden: Sequence[int]
  outputs: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
      if self.dropout_rate:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    self.sow("intermediates", "hidden", x)
    return nn.Dense(self.outputs, name="out")(x)


class DANN(nn.Module):
  """Feature extractor G_f, label predictor G_y, and domain classifier G_d behind a GRL.

  Parameters live under exactly three top-level names: `features`,
  `label_predictor` and `domain_classifier`. Sub-modules that accept a `train`
  keyword receive it (e.g. for dropout); others are called on inputs alone.

  Attributes:
    features: any module mapping images to a feature vector per sample.
    label_predictor: any module mapping features to class logits.
    domain_classifier: any module mapping features to one domain logit per
      sample (shape (batch,) or (batch, 1)); domain 1 means target.
    input_shape: the shape of one input, e.g. (32, 32, 3), checked on every
      call (a static check, free under jit); None accepts any.
  """

  features: nn.Module
  label_predictor: nn.Module
  domain_classifier: nn.Module
  input_shape: tuple[int, ...] | None = None

  def __call__(self, x, lam, *, train: bool, labelled_rows: int | tuple[int, int] | None = None):
    """Returns `(class_logits, domain_logits)` of shapes (batch, classes), (batch,).

    Args:
      x: an NHWC image batch (or whatever `features` takes).
      lam: the adaptation factor λ of the gradient reversal layer.
      train: training mode (dropout on).
      labelled_rows: if set (static), the label predictor runs on these rows
        alone and `class_logits` has one row for each (a training step whose
        loss reads no other row's class logits): an int n names the first n
        rows, `(blocks, n)` the first n rows of each of `blocks` equal row
        blocks (`labelled_part`). Each row's logits are those of the whole
        batch's call; with a prefix, dropout masks included (under JAX's
        default `jax_threefry_partitionable` random bits).
    """
    f = self.embed(x, train=train)
    class_logits = _apply(self.label_predictor, f if labelled_rows is None else labelled_part(f, labelled_rows), train)
    domain_logits = _apply(self.domain_classifier, gradient_reversal(f, lam), train)
    if domain_logits.ndim == 2 and domain_logits.shape[-1] == 1:
      domain_logits = domain_logits[:, 0]
    if domain_logits.shape != (f.shape[0],):
      raise ValueError(
        f"the domain classifier must output one logit per sample, shape "
        f"({f.shape[0]},) or ({f.shape[0]}, 1); got {domain_logits.shape}"
      )
    return class_logits, domain_logits

  def embed(self, x, *, train: bool = False):
    """The feature extractor's output G_f(x)."""
    if self.input_shape is not None and tuple(jnp.shape(x)[1:]) != tuple(self.input_shape):
      want = tuple(self.input_shape)
      raise ValueError(
        f"this network takes a batch of NHWC images of shape (batch, "
        f"{', '.join(map(str, want))}); got {tuple(jnp.shape(x))}. Bring "
        "images to that size first (28x28 MNIST digits: pad and repeat the "
        "grey channel with dann_jax.data.domains.mnist_to_rgb32; other "
        "sizes: resize)"
      )
    return _apply(self.features, x, train)

  def classify(self, x, *, train: bool = False):
    """Class logits G_y(G_f(x)) alone (evaluation; no domain branch)."""
    return _apply(self.label_predictor, self.embed(x, train=train), train)


# The paper's inputs (v1): 32x32 colour patches, MNIST's channel replicated.
INPUT_SHAPE = (32, 32, 3)


def mnist_dann(num_classes: int = 10, **layers) -> DANN:
  """The paper's MNIST network (valid convolutions, for 32x32 inputs).

  Features: conv 5x5x32, ReLU, max-pool 2x2/2, conv 5x5x48, ReLU, max-pool 2x2/2.
  Label predictor: fc 100, ReLU, fc 100, ReLU, fc `num_classes`.
  Domain classifier: fc 100, ReLU, fc 1.

  Args:
    num_classes: outputs of the label predictor.
    **layers: `conv_general_dilated` and/or `max_pool` for `ConvFeatures`.
  """
  return DANN(
    features=ConvFeatures(features=(32, 48), pools=((2, 2), (2, 2)), **layers),
    label_predictor=MLP(hidden=(100, 100), outputs=num_classes),
    domain_classifier=MLP(hidden=(100,), outputs=1),
    input_shape=INPUT_SHAPE,
  )


def svhn_dann(num_classes: int = 10, dropout_rate: float = 0.5, **layers) -> DANN:
  """The paper's SVHN network (used when the source is not MNIST).

  Features: conv 5x5x64, ReLU, max-pool 3x3/2, conv 5x5x64, ReLU, max-pool 3x3/2,
  conv 5x5x128, ReLU; convolutions and poolings are "SAME"-padded (as
  cuda-convnet / Caffe nets of the time), so a 32x32 input gives 8x8x128.
  Label predictor: fc 3072, fc 2048, fc `num_classes`; domain classifier:
  fc 1024, fc 1024, fc 1; ReLU and dropout after each hidden layer (the paper
  uses dropout for this net without giving the rate; 0.5 by default).
  `**layers` as for `mnist_dann`.
  """
  return DANN(
    features=ConvFeatures(features=(64, 64, 128), pools=((3, 2), (3, 2), None), padding="SAME", **layers),
    label_predictor=MLP(hidden=(3072, 2048), outputs=num_classes, dropout_rate=dropout_rate),
    domain_classifier=MLP(hidden=(1024, 1024), outputs=1, dropout_rate=dropout_rate),
    input_shape=INPUT_SHAPE,
  )


def count_params(tree: Any) -> int:
  """Number of scalar parameters in a pytree."""
  return sum(math.prod(jnp.shape(x)) for x in jax.tree.leaves(tree))
