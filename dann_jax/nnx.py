"""The Flax NNX front door: the DANN module, the paper's networks, Linen converters, a step.

The second front door to the library, beside the Linen one of
`dann_jax.models` and `dann_jax.train`. It owns nothing of the algorithm:
the gradient reversal layer is `dann_jax.grl.gradient_reversal`, the loss is the
run's `dann_jax.methods.Method`, the optimizer and the schedules are
those `dann_jax.train` builds from a `dann_jax.config.TrainConfig`; so the
same weights, batches and config take the same steps through either door.
Dropout is the exception: its masks come from the same per-step key, but
drawn through NNX's RNG streams rather than Linen's, so a network with
dropout (the SVHN one) takes other masks than its Linen twin (the same
distribution, not the same numbers).

* `DANN` joins any three `nnx.Module`s, with the GRL between the feature
  extractor and the domain classifier.
* `mnist_dann` and `svhn_dann` build the paper's digit networks with the
  parameter names and shapes of their Linen twins (`to_linen` /
  `from_linen` move weights between the two). Like the Linen ones, they
  take their convolution and pooling as arguments that default to stock
  Flax, so `dann_jax.xla_cpu.tuned(mnist_dann)(rngs=...)` builds the
  CPU-tuned network.
* `TrainState` holds the model, its `nnx.Optimizer`, the run key and the
  schedules; `train_step(state, batch)` takes one step in place and returns
  `(state, metrics)` with the Linen step's metrics; `jit_train_step` is it
  under `nnx.jit`. `dann_jax.loop.fit` trains such a state in chunks
  (`dann_jax.loop.nnx_runner`), as `dann-jax train --api nnx` does.
* `to_linen_state` / `from_linen_state` move a whole train state (step,
  weights, optimizer state, run key) between the doors: NNX runs are
  checkpointed, evaluated and resumed through the Linen layout.

Training and evaluation modes: a network built here starts in training mode
(dropout on); `model.eval()` / `model.train()` switch it for direct calls.
`train_step` always trains and `eval_step` always evaluates, whatever the
mode the model was left in (each runs on an `nnx.view` of the model).

Typical use::

    from flax import nnx
    from dann_jax import nnx as dann_nnx
    from dann_jax.config import TrainConfig

    config = TrainConfig(total_steps=1000)
    model = dann_nnx.mnist_dann(rngs=nnx.Rngs(config.seed))
    state = dann_nnx.create_train_state(model, config)
    state, metrics = dann_nnx.jit_train_step(state, batch)

References: Ganin & Lempitsky, arXiv 1409.7495: Fig. 1 and Sec. 3 (the
model), updates (4)-(6) of Sec. 3.2 (the step), Sec. 5 (the protocol); the
digit architectures are those of the arXiv v2 appendix / JMLR 2016 Fig. 4.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax import lax

from dann_jax import methods, train
from dann_jax.config import TrainConfig
from dann_jax.grl import gradient_reversal
from dann_jax.models import max_pool as _stock_max_pool

# The Linen step's dropout tag and max-norm projection, shared so that both
# doors draw the same keys and clip the same way.
from dann_jax.train import DROPOUT_STREAM as _DROPOUT_TAG
from dann_jax.train import clip_unit_norms, make_optimizer, make_schedules

# The name of the RNG stream that dropout draws from; `train_step` reseeds
# every stream of this name from the run key at each step.
DROPOUT_STREAM = "dropout"

# The three parts of a DANN, as they are named in both front doors.
PARTS = ("features", "label_predictor", "domain_classifier")


@functools.cache
def _nnx_conv_primitive(conv: Callable) -> Callable:
  """`conv` as `nnx.Conv` calls it: with an `out_sharding` keyword.

  `nnx.Conv` passes `out_sharding` to its convolution primitive, where
  `flax.linen.Conv` does not; primitives written to `jax.lax`'s older
  signature (e.g. `dann_jax.xla_cpu.conv_general_dilated`) get it dropped
  when it is None. Cached, so that networks built with the same primitive
  share one static attribute (and `nnx.jit` compiles once for them).
  """
  parameters = inspect.signature(conv).parameters.values()
  if any(p.name == "out_sharding" or p.kind == p.VAR_KEYWORD for p in parameters):
    return conv

  @functools.wraps(conv)
  def without_out_sharding(*args, out_sharding=None, **kwargs):
    if out_sharding is not None:
      raise ValueError(
        f"{out_sharding=} was asked of a convolution primitive without an "
        f"out_sharding argument ({conv.__module__}.{conv.__qualname__}); "
        "build the network with the stock jax.lax.conv_general_dilated"
      )
    return conv(*args, **kwargs)

  return without_out_sharding


def _conv_output_size(size: int, kernel: int, padding: str) -> int:
  return size if padding == "SAME" else size - kernel + 1


def _pool_output_size(size: int, window: int, stride: int, padding: str) -> int:
  if padding == "SAME":
    return -(-size // stride)
  return (size - window) // stride + 1


class ConvFeatures(nnx.Module):
  """Convolutions, each followed by ReLU and an optional max pooling, then flatten.

  The NNX twin of `dann_jax.models.ConvFeatures`. NNX layers are built with
  their input sizes, so the image shape is fixed at construction and checked
  at each call.

  Attributes:
    convs: the `nnx.Conv` layers (Linen names `Conv_0`, `Conv_1`, ...).
    pools: per convolution, `(window, stride)` of its max pooling, or None.
    padding: padding of the convolutions and poolings.
    max_pool: `(x, window, stride, padding) -> pooled x`.
    input_shape: the (height, width, channels) of one image.
    out_features: the length of the flattened output.
  """

  def __init__(
    self,
    features: Sequence[int],
    pools: Sequence[tuple[int, int] | None],
    *,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    kernel_size: int = 5,
    padding: str = "VALID",
    conv_general_dilated: Callable = lax.conv_general_dilated,
    max_pool: Callable = _stock_max_pool,
    rngs: nnx.Rngs,
  ):
    """Builds the layers.

    Args:
      features: output channels of each convolution.
      pools: per convolution, `(window, stride)` of the max pooling after it,
        or None for no pooling.
      input_shape: (height, width, channels) of the images.
      kernel_size: square kernel side of every convolution.
      padding: "VALID" or "SAME", for the convolutions and poolings.
      conv_general_dilated: the convolution primitive, with the signature of
        `jax.lax.conv_general_dilated` (passed to `nnx.Conv`; an
        `out_sharding` argument is optional).
      max_pool: `(x, window, stride, padding) -> pooled x`.
      rngs: the parameter initialisation keys.

    Raises:
      ValueError: for mismatched `features` and `pools`, an unknown padding,
        or images too small for the layers.
    """
    if len(features) != len(pools):
      raise ValueError(f"{features=} and {pools=} must have one entry per convolution")
    if padding not in ("VALID", "SAME"):
      raise ValueError(f"{padding=} must be 'VALID' or 'SAME'")
    height, width, channels = input_shape
    convs = []
    for width_out, pool in zip(features, pools):
      convs.append(
        nnx.Conv(
          channels,
          width_out,
          (kernel_size, kernel_size),
          padding=padding,
          conv_general_dilated=_nnx_conv_primitive(conv_general_dilated),
          rngs=rngs,
        )
      )
      channels = width_out
      height = _conv_output_size(height, kernel_size, padding)
      width = _conv_output_size(width, kernel_size, padding)
      if pool is not None:
        height = _pool_output_size(height, *pool, padding)
        width = _pool_output_size(width, *pool, padding)
      if height <= 0 or width <= 0:
        raise ValueError(
          f"{input_shape=} is too small for {kernel_size}x{kernel_size} "
          f"convolutions with {pools=} and {padding=}; use larger images "
          "or 'SAME' padding"
        )
    self.convs = nnx.List(convs)
    self.pools = tuple(pools)
    self.padding = padding
    self.max_pool = max_pool
    self.input_shape = tuple(input_shape)
    self.out_features = height * width * channels

  def __call__(self, x: jax.Array) -> jax.Array:
    """The flattened features of an NHWC batch `x`, (batch, out_features)."""
    if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
      expected = ", ".join(map(str, self.input_shape))
      raise ValueError(
        f"images must be NHWC of shape (batch, {expected}); got shape "
        f"{x.shape}. Add a batch axis, move channels last, or "
        "build the network with input_shape=<(height, width, channels)>"
      )
    for conv, pool in zip(self.convs, self.pools):
      x = nnx.relu(conv(x))
      if pool is not None:
        x = self.max_pool(x, *pool, padding=self.padding)
    return x.reshape(x.shape[0], -1)


class MLP(nnx.Module):
  """Fully connected ReLU layers with optional dropout, then a linear output.

  The NNX twin of `dann_jax.models.MLP`.

  Attributes:
    hidden: the hidden `nnx.Linear` layers (Linen names `Dense_0`, ...).
    dropouts: one `nnx.Dropout` per hidden layer, or None without dropout.
    out: the output `nnx.Linear` (Linen name `out`).
  """

  def __init__(
    self, in_features: int, hidden: Sequence[int], outputs: int, *, dropout_rate: float = 0.0, rngs: nnx.Rngs
  ):
    """Builds the layers.

    Args:
      in_features: the input width.
      hidden: widths of the hidden layers.
      outputs: width of the final linear layer.
      dropout_rate: dropout after each hidden layer in training (0 for none).
      rngs: the initialisation keys; dropout draws from a stream named
        "dropout" seeded from `rngs["dropout"]` (which falls back to the
        default stream).
    """
    if not 0.0 <= dropout_rate < 1.0:
      raise ValueError(f"{dropout_rate=} must lie in [0, 1)")
    widths = (in_features, *hidden)
    self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])
    if dropout_rate:
      # A stream named "dropout" whatever streams `rngs` has, so that
      # `train_step` finds and reseeds it.
      self.dropouts = nnx.List(
        [
          nnx.Dropout(
            dropout_rate, rng_collection=DROPOUT_STREAM, rngs=nnx.Rngs(**{DROPOUT_STREAM: rngs[DROPOUT_STREAM]()})
          )
          for _ in hidden
        ]
      )
    else:
      self.dropouts = None
    self.out = nnx.Linear(widths[-1], outputs, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """The outputs for a (batch, in_features) `x`."""
    for i, layer in enumerate(self.hidden):
      x = nnx.relu(layer(x))
      if self.dropouts is not None:
        x = self.dropouts[i](x)
    return self.out(x)


class DANN(nnx.Module):
  """Feature extractor G_f, label predictor G_y, and domain classifier G_d behind a GRL.

  Any three `nnx.Module`s, each called on one array. Dropout (or any
  stochastic layer) should draw from RNG streams named "dropout", which
  `train_step` reseeds from the run key at every step.

  Attributes:
    features: maps images to a feature vector per sample.
    label_predictor: maps features to class logits.
    domain_classifier: maps features to one domain logit per sample (shape
      (batch,) or (batch, 1)); domain 1 means target.
  """

  def __init__(self, features: nnx.Module, label_predictor: nnx.Module, domain_classifier: nnx.Module):
    self.features = features
    self.label_predictor = label_predictor
    self.domain_classifier = domain_classifier

  def __call__(self, x: jax.Array, lam) -> tuple[jax.Array, jax.Array]:
    """Returns `(class_logits, domain_logits)` of shapes (batch, classes), (batch,).

    Args:
      x: an NHWC image batch (or whatever `features` takes).
      lam: the adaptation factor λ of the gradient reversal layer (a float or
        a 0-d array; it only scales gradients).

    Raises:
      ValueError: if the domain classifier does not give one logit per sample.
    """
    f = self.features(x)
    class_logits = self.label_predictor(f)
    domain_logits = self.domain_classifier(gradient_reversal(f, lam))
    if domain_logits.ndim == 2 and domain_logits.shape[-1] == 1:
      domain_logits = domain_logits[:, 0]
    if domain_logits.shape != (f.shape[0],):
      raise ValueError(
        f"the domain classifier must output one logit per sample, shape "
        f"({f.shape[0]},) or ({f.shape[0]}, 1); got {domain_logits.shape}"
      )
    return class_logits, domain_logits

  def embed(self, x: jax.Array) -> jax.Array:
    """The feature extractor's output G_f(x)."""
    return self.features(x)

  def classify(self, x: jax.Array) -> jax.Array:
    """Class logits G_y(G_f(x)) alone (evaluation; no domain branch)."""
    return self.label_predictor(self.features(x))


def mnist_dann(
  num_classes: int = 10, *, rngs: nnx.Rngs, input_shape: tuple[int, int, int] = (32, 32, 3), **layers
) -> DANN:
  """The paper's MNIST network in NNX, as `dann_jax.models.mnist_dann`.

  Features: conv 5x5x32, ReLU, max-pool 2x2/2, conv 5x5x48, ReLU, max-pool 2x2/2
  (valid convolutions; 5x5x48 = 1200 features for 32x32 inputs).
  Label predictor: fc 100, ReLU, fc 100, ReLU, fc `num_classes`.
  Domain classifier: fc 100, ReLU, fc 1.

  Args:
    num_classes: outputs of the label predictor.
    rngs: the parameter initialisation keys, e.g. `nnx.Rngs(seed)`.
    input_shape: (height, width, channels) of the images.
    **layers: `conv_general_dilated` and/or `max_pool` for `ConvFeatures`.
  """
  features = ConvFeatures((32, 48), ((2, 2), (2, 2)), input_shape=input_shape, rngs=rngs, **layers)
  return DANN(
    features=features,
    label_predictor=MLP(features.out_features, (100, 100), num_classes, rngs=rngs),
    domain_classifier=MLP(features.out_features, (100,), 1, rngs=rngs),
  )


def svhn_dann(
  num_classes: int = 10,
  dropout_rate: float = 0.5,
  *,
  rngs: nnx.Rngs,
  input_shape: tuple[int, int, int] = (32, 32, 3),
  **layers,
) -> DANN:
  """The paper's SVHN network in NNX, as `dann_jax.models.svhn_dann`.

  Features: conv 5x5x64, ReLU, max-pool 3x3/2, conv 5x5x64, ReLU, max-pool 3x3/2,
  conv 5x5x128, ReLU, all "SAME"-padded (8x8x128 features for 32x32 inputs).
  Label predictor: fc 3072, fc 2048, fc `num_classes`; domain classifier:
  fc 1024, fc 1024, fc 1; ReLU and dropout after each hidden layer.

  Args:
    num_classes: outputs of the label predictor.
    dropout_rate: the dropout rate of the hidden layers (the paper does not
      give it).
    rngs: the parameter initialisation keys, e.g. `nnx.Rngs(seed)`; dropout
      streams are seeded from `rngs["dropout"]` and reseeded by `train_step`.
    input_shape: (height, width, channels) of the images.
    **layers: `conv_general_dilated` and/or `max_pool` for `ConvFeatures`.
  """
  features = ConvFeatures(
    (64, 64, 128), ((3, 2), (3, 2), None), padding="SAME", input_shape=input_shape, rngs=rngs, **layers
  )
  return DANN(
    features=features,
    label_predictor=MLP(features.out_features, (3072, 2048), num_classes, dropout_rate=dropout_rate, rngs=rngs),
    domain_classifier=MLP(features.out_features, (1024, 1024), 1, dropout_rate=dropout_rate, rngs=rngs),
  )


# ----------------------------------------------------------------------------
# Linen <-> NNX


def _linen_layers(part: nnx.Module, name: str) -> dict[str, nnx.Module]:
  """The layers of one part of a DANN under their Linen names."""
  if isinstance(part, ConvFeatures):
    return {f"Conv_{i}": conv for i, conv in enumerate(part.convs)}
  if isinstance(part, MLP):
    return {**{f"Dense_{i}": layer for i, layer in enumerate(part.hidden)}, "out": part.out}
  raise ValueError(
    f"model.{name} is a {type(part).__name__}; the Linen converters know "
    "the ConvFeatures and MLP of dann_jax.nnx only. Build the model with "
    "mnist_dann/svhn_dann, or move weights with nnx.state/nnx.update"
  )


def _check_dann(model: DANN) -> None:
  if not isinstance(model, DANN):
    raise ValueError(f"model must be a dann_jax.nnx.DANN; got {type(model).__name__}")


def to_linen(model: DANN) -> dict[str, Any]:
  """The parameters of an NNX DANN as the Linen params of its twin.

  Args:
    model: a network of `mnist_dann` or `svhn_dann` (any `DANN` of this
      module's `ConvFeatures` and `MLP`).

  Returns:
    `{"features": {"Conv_0": {"kernel", "bias"}, ...}, "label_predictor":
    {"Dense_0": ..., "out": ...}, "domain_classifier": {...}}`: the `params`
    collection of `dann_jax.models.mnist_dann()` / `svhn_dann()`, usable
    as `TrainState.params` or with `model.apply({"params": ...}, ...)`.

  Raises:
    ValueError: for a model of other parts.
  """
  _check_dann(model)
  params = {}
  for name in PARTS:
    layers = _linen_layers(getattr(model, name), name)
    params[name] = {
      layer_name: {"kernel": layer.kernel.get_value(), "bias": layer.bias.get_value()}
      for layer_name, layer in layers.items()
    }
  return params


def from_linen(model: DANN, params: dict[str, Any]) -> DANN:
  """Copies the Linen params of `models.mnist_dann`/`svhn_dann` into `model`.

  The inverse of `to_linen`: `to_linen(from_linen(model, params))` equals
  `params` exactly.

  Args:
    model: the NNX twin of the network the params belong to (updated in
      place; its optimizer states, if any, are not touched).
    params: the Linen `params` collection (e.g. `TrainState.params`), with
      exactly the twin's layer names and shapes.

  Returns:
    `model`.

  Raises:
    ValueError: naming the first missing, extra or misshapen entry.
  """
  _check_dann(model)
  if set(params) != set(PARTS):
    raise ValueError(
      f"params must hold exactly {PARTS}; got {sorted(params)}. Pass the 'params' collection, not the variables dict"
    )
  updates = []
  for name in PARTS:
    layers = _linen_layers(getattr(model, name), name)
    if set(params[name]) != set(layers):
      raise ValueError(
        f"params[{name!r}] has layers {sorted(params[name])}; the model's "
        f"{name} has {sorted(layers)}. Build the NNX twin of the network "
        "these params come from (mnist_dann or svhn_dann, same num_classes)"
      )
    for layer_name, layer in layers.items():
      for leaf in ("kernel", "bias"):
        value = params[name][layer_name].get(leaf)
        target = getattr(layer, leaf)
        if value is None or jnp.shape(value) != target.shape:
          raise ValueError(
            f"params[{name!r}][{layer_name!r}][{leaf!r}] has shape "
            f"{None if value is None else jnp.shape(value)}; the model "
            f"expects {target.shape}. Build the NNX twin with the same "
            "num_classes and input_shape"
          )
        updates.append((target, value))
  for target, value in updates:
    target.set_value(jnp.asarray(value, target.dtype))
  return model


# ----------------------------------------------------------------------------
# Training


class RunKey(nnx.Variable):
  """The run's PRNG key: state to carry and checkpoint, never trained."""


class TrainState(nnx.Pytree):
  """The model, its optimizer, the run key, and the run's schedules.

  The NNX counterpart of `dann_jax.train.TrainState`: `train_step` updates
  it in place. Build it with `create_train_state`.

  Attributes:
    model: the `DANN` being trained.
    optimizer: its `nnx.Optimizer` over the `nnx.Param`s; `optimizer.step`
      counts the steps taken.
    key: the run's PRNG key (a `RunKey` variable); per-step keys are
      `fold_in(key, step)`.
    learning_rate: the schedule `step -> μ_p`.
    adaptation_factor: the schedule `step -> λ_p`.
    method: the `dann_jax.methods.Method` whose loss the step descends.
    max_norm: the per-unit l2 bound on incoming weights, or None.
  """

  def __init__(
    self,
    model: DANN,
    optimizer: nnx.Optimizer,
    key: jax.Array,
    *,
    learning_rate: optax.Schedule,
    adaptation_factor: optax.Schedule,
    method: methods.Method = methods.DANN,
    max_norm: float | None = None,
  ):
    self.model = model
    self.optimizer = optimizer
    self.key = RunKey(key)
    self.learning_rate = learning_rate
    self.adaptation_factor = adaptation_factor
    self.method = method
    self.max_norm = max_norm

  @property
  def step(self) -> jax.Array:
    """The number of steps taken."""
    return self.optimizer.step[...]


def create_train_state(model: DANN, config: TrainConfig, key: jax.Array | None = None) -> TrainState:
  """The state at step 0 for a built `model` and `config`.

  The optimizer is `dann_jax.train.make_optimizer`'s chain on
  `dann_jax.train.make_schedules`' rate, as on the Linen path. The initial
  weights are the model's own (from the `rngs` it was built with, or copied
  in by `from_linen`).

  Args:
    model: an NNX `DANN`, e.g. `mnist_dann(rngs=nnx.Rngs(config.seed))`.
    config: the run's hyper-parameters.
    key: the run's key; `jax.random.key(config.seed)` if None. As in
      `dann_jax.train.create_train_state`, it is split in two and the second
      half becomes the run key, so a seed gives both doors the same run key.

  Returns:
    The state at step 0.
  """
  if key is None:
    key = jax.random.key(config.seed)
  _, run_key = jax.random.split(key)
  lr, lam = make_schedules(config)
  optimizer = nnx.Optimizer(model, make_optimizer(config, lr), wrt=nnx.Param)
  return TrainState(
    model,
    optimizer,
    run_key,
    learning_rate=lr,
    adaptation_factor=lam,
    method=methods.get(config.method),
    max_norm=config.max_norm,
  )


def _linen_paths(model: DANN) -> dict[tuple, tuple[str, str, str]]:
  """The path of each parameter in `nnx.state(model)` -> its Linen path."""
  paths = {id(node): path for path, node in nnx.iter_graph(model)}
  return {
    (*paths[id(layer)], leaf): (name, layer_name, leaf)
    for name in PARTS
    for layer_name, layer in _linen_layers(getattr(model, name), name).items()
    for leaf in ("kernel", "bias")
  }


def _is_opt_node(x) -> bool:
  return isinstance(x, (nnx.State, nnx.Variable))


def _optimizer_state_to_linen(opt_state, paths):
  """An `nnx.Optimizer`'s optax state with plain arrays and Linen names."""

  def convert(node):
    if isinstance(node, nnx.Variable):
      return node.get_value()
    tree: dict = {}
    for path, variable in nnx.to_flat_state(node):
      name, layer_name, leaf = paths[path]
      tree.setdefault(name, {}).setdefault(layer_name, {})[leaf] = variable.get_value()
    return tree

  return jax.tree.map(convert, opt_state, is_leaf=_is_opt_node)


def to_linen_state(state: TrainState, template: train.TrainState) -> train.TrainState:
  """The Linen `dann_jax.train.TrainState` of an NNX train state.

  Step, parameters, optimizer state and run key move over exactly (the
  arrays are shared, not copied), so the Linen evaluation, selection and
  checkpoint code reads an NNX run, and `from_linen_state` takes it back.

  Args:
    state: an NNX train state of a `mnist_dann`/`svhn_dann` network.
    template: a Linen state of the twin network and the same `TrainConfig`
      (e.g. the one the NNX state was started from); only its structure and
      functions are used.

  Returns:
    `template` holding the values of `state`.

  Raises:
    ValueError: if the optimizer states differ in structure (another
      optimizer in the template's config) or the template has model state.
  """
  if jax.tree.leaves(template.model_state):
    raise ValueError(
      f"template has model state {list(template.model_state)}; the NNX "
      "networks have none. Build the template with models.mnist_dann or "
      "models.svhn_dann"
    )
  opt_state = _optimizer_state_to_linen(state.optimizer.opt_state, _linen_paths(state.model))
  if jax.tree.structure(opt_state) != jax.tree.structure(template.opt_state):
    raise ValueError(
      "the NNX optimizer state and template.opt_state differ in structure; build both states from the same TrainConfig"
    )
  return template.replace(
    step=jnp.asarray(state.step, template.step.dtype),
    params=to_linen(state.model),
    opt_state=opt_state,
    key=state.key.get_value(),
  )


def from_linen_state(state: TrainState, linen_state: train.TrainState) -> TrainState:
  """Copies a Linen train state (step, params, optimizer state, key) into `state`.

  The inverse of `to_linen_state`: a run started or restored through the
  Linen door continues through the NNX one with the same numbers. The values
  are copied, so the Linen state stays usable.

  Args:
    state: an NNX train state of the twin network and the same
      `TrainConfig` (updated in place).
    linen_state: a Linen state without a seeds axis.

  Returns:
    `state`.

  Raises:
    ValueError: for a seeds axis, or parameters or optimizer states that do
      not match (naming the first mismatch).
  """
  if jnp.ndim(linen_state.step) != 0:
    raise ValueError(
      f"linen_state has a seeds axis (step shape "
      f"{jnp.shape(linen_state.step)}); pass one seed's state "
      "(dann_jax.loop.seed_states)"
    )
  copy = lambda x: jnp.array(x, copy=True)
  paths = _linen_paths(state.model)
  if jax.tree.structure(_optimizer_state_to_linen(state.optimizer.opt_state, paths)) != jax.tree.structure(
    linen_state.opt_state
  ):
    raise ValueError(
      "linen_state.opt_state and the NNX optimizer state differ in "
      "structure; build both states from the same TrainConfig"
    )
  from_linen(state.model, jax.tree.map(copy, linen_state.params))

  def load(node, value):
    if isinstance(node, nnx.Variable):
      node.set_value(copy(value))
      return
    for path, variable in nnx.to_flat_state(node):
      name, layer_name, leaf = paths[path]
      variable.set_value(copy(value[name][layer_name][leaf]))

  jax.tree.map(load, state.optimizer.opt_state, linen_state.opt_state, is_leaf=_is_opt_node)
  state.optimizer.step.set_value(jnp.asarray(linen_state.step, state.optimizer.step.dtype))
  state.key.set_value(copy(linen_state.key))
  return state


def _training_view(model: nnx.Module) -> nnx.Module:
  return nnx.view(model, deterministic=False, use_running_average=False, raise_if_not_found=False)


def _evaluation_view(model: nnx.Module) -> nnx.Module:
  return nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)


def train_step(state: TrainState, batch: dict[str, jax.Array], axis_name: str | None = None):
  """One optimizer step on `state.method`'s loss (DANN: L_y + L_d through the GRL).

  The NNX counterpart of `dann_jax.train.train_step`, with the same loss
  (`dann_jax.methods.batch_loss`), optimizer, schedules, dropout key derivation and
  metrics. λ_p and μ_p are computed from `state.step` inside the step, so a
  jitted step compiles once for the whole run. The model runs in training
  mode (on an `nnx.view`) whatever mode it was left in.

  Args:
    state: the train state; updated in place.
    batch: `image`, `label`, `domain`, `label_mask` (see
      `dann_jax.objective.saddle_point_loss`).
    axis_name: the mapped axis when run inside a mapped transform (e.g.
      `jax.pmap` or `jax.vmap` of a function that `nnx.merge`s the state);
      gradients and statistics are then combined over it so every member
      takes the step of the global batch.

  Returns:
    `(state, metrics)`: `state` itself (so loops written for the Linen step
    run unchanged), and `loss`, `label_loss`, `domain_loss`,
    `domain_accuracy`, `lambda` and `learning_rate` (the values used).
  """
  step = state.optimizer.step[...]
  lam = state.adaptation_factor(step)
  step_key = jax.random.fold_in(state.key.get_value(), step)
  dropout_key = jax.random.fold_in(step_key, _DROPOUT_TAG)
  if axis_name is not None:
    dropout_key = jax.random.fold_in(dropout_key, lax.axis_index(axis_name))
  model = _training_view(state.model)
  # Dropout masks depend on the run key and the step only, as on the Linen
  # path: a resumed or re-run step draws the same masks.
  nnx.reseed(model, **{DROPOUT_STREAM: dropout_key})

  def loss_fn(model):
    class_logits, domain_logits = model(batch["image"], lam)
    return methods.batch_loss(state.method, class_logits, domain_logits, batch, axis_name=axis_name)

  grads, metrics = nnx.grad(loss_fn, has_aux=True)(model)
  if axis_name is not None:
    # Each member's loss is its share of the global mean: gradients add up.
    grads = lax.psum(grads, axis_name)
  state.optimizer.update(state.model, grads)
  if state.max_norm is not None:
    params = nnx.state(state.model, nnx.Param)
    clipped = clip_unit_norms(nnx.to_pure_dict(params), state.max_norm)
    nnx.replace_by_pure_dict(params, clipped)
    nnx.update(state.model, params)
  metrics = dict(
    metrics,
    **{"lambda": jnp.asarray(lam, jnp.float32), "learning_rate": jnp.asarray(state.learning_rate(step), jnp.float32)},
  )
  return state, metrics


def eval_step(state: TrainState, images: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """The number of correctly classified images (mask: which rows count).

  The model runs in evaluation mode (dropout off) whatever mode it was left
  in.
  """
  logits = _evaluation_view(state.model).classify(images)
  correct = jnp.argmax(logits, axis=-1) == labels
  if mask is not None:
    correct = correct & mask
  return jnp.sum(correct)


jit_train_step = nnx.jit(train_step, static_argnames="axis_name")
jit_eval_step = nnx.jit(eval_step)
