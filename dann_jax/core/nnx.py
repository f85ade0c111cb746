"""The Flax NNX front door: the Linen networks bridged to NNX, an NNX train state, and its step.

The networks are defined once, in Linen (`dann_jax.core.models`); this module wraps
them with `flax.nnx.bridge.ToNNX`, so an NNX network here is its Linen twin run
through NNX: the same layers (stock, or `dann_jax.backend.xla_cpu.tuned`'s), and
parameters under exactly the Linen names (`nnx.state(model, nnx.Param)` is the
Linen `params` tree). Nor does it own anything of the algorithm: the gradient
reversal layer is in the Linen `DANN`, the loss is the run's
`dann_jax.core.methods.Method`, the optimizer and the schedules are those
`dann_jax.core.train` builds from a `dann_jax.core.config.TrainConfig`, and the step
hands the Linen dropout layers the very key the Linen step does. So the same
weights, batches and config take the same steps through either door, dropout
included: the SVHN network draws the Linen step's masks.

* `bridge(linen_model, rngs=...)` wraps a `dann_jax.core.models.DANN`; `mnist_dann`
  and `svhn_dann` are the paper's networks bridged (`bridged` makes such a
  factory of any Linen one). Like the Linen factories they take
  `conv_general_dilated` and `max_pool`, so
  `dann_jax.backend.xla_cpu.tuned(mnist_dann)(rngs=...)` builds the CPU-tuned network.
  A bridged network is called as the Linen one is applied: `model(x, lam,
  train=...)`, `model.classify(x)`, `model.embed(x)`; with `train=True` and
  dropout, pass the dropout key as `rngs=key`.
* `to_linen` / `from_linen` read and write its parameters as the Linen params.
* `TrainState` holds the model, its `nnx.Optimizer`, the run key and the
  schedules; `train_step(state, batch)` takes one step in place and returns
  `(state, metrics)` with the Linen step's metrics; `jit_train_step` is it
  under `nnx.jit`. `dann_jax.training.loop.fit` trains such a state in chunks
  (`dann_jax.training.loop.nnx_runner`), as `dann-jax train --api nnx` does.
* `to_linen_state` / `from_linen_state` move a whole train state (step,
  weights, optimizer state, run key) between the doors: NNX runs are
  checkpointed, evaluated and resumed through the Linen layout.

Training and evaluation modes are the Linen `train` argument, not a state of
the network (`model.eval()` / `model.train()` change nothing): `train_step`
always trains and `eval_step` always evaluates.

Typical use::

    from flax import nnx
    from dann_jax.core import nnx as dann_nnx
    from dann_jax.core.config import TrainConfig

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
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax import lax

from dann_jax.core import methods, models, train
from dann_jax.core.config import TrainConfig
from dann_jax.core.train import (
  DROPOUT_STREAM,
  clip_unit_norms,
  labelled_rows_for,
  make_optimizer,
  make_schedules,
  step_key,
)

# The three parts of a DANN, as they are named in both front doors.
PARTS = ("features", "label_predictor", "domain_classifier")

# The type of this module's networks: a Linen module wrapped for NNX.
DANN = nnx.bridge.ToNNX


def bridge(module: nn.Module, *, rngs: nnx.Rngs | jax.Array, input_shape: Sequence[int] | None = None) -> DANN:
  """`module`, a Linen `dann_jax.core.models.DANN`, as an initialised NNX module.

  Args:
    module: the Linen network (or any module with its call signature).
    rngs: the parameter initialisation key: a `jax.random.key` initialises as
      `module.init({"params": key}, ...)` does (the Linen
      `train.create_train_state`'s weights, given its init key), an
      `nnx.Rngs` through its `params` (or default) stream.
    input_shape: the shape of one input, e.g. (32, 32, 3), set on the module
      (which checks it on every call); `module.input_shape` if None.

  Returns:
    The bridged network, holding only the Linen parameters (no RNG state).

  Raises:
    ValueError: without an input shape.
  """
  if input_shape is not None and hasattr(module, "input_shape"):
    module = module.clone(input_shape=tuple(input_shape))
  shape = getattr(module, "input_shape", None) if input_shape is None else input_shape
  if shape is None:
    raise ValueError(f"{input_shape=}: give the shape of one input, e.g. (32, 32, 3), to initialise the network")
  key = rngs if isinstance(rngs, jax.Array) else rngs.params()
  model = nnx.bridge.ToNNX(module)
  nnx.bridge.lazy_init(model, jnp.zeros((1, *shape)), 0.0, train=False, rngs=key)
  return model


def bridged(factory: Callable[..., nn.Module]) -> Callable[..., DANN]:
  """The NNX factory of a Linen one: `factory(...)` bridged (`bridge`).

  The result takes `factory`'s arguments plus keyword-only `rngs` and
  `input_shape` (default (32, 32, 3), the paper's), e.g.
  `bridged(models.mnist_dann)(rngs=nnx.Rngs(0))`.
  """

  @functools.wraps(factory)
  def build(*args, rngs: nnx.Rngs | jax.Array, input_shape: Sequence[int] = models.INPUT_SHAPE, **kwargs) -> DANN:
    return bridge(factory(*args, **kwargs), rngs=rngs, input_shape=input_shape)

  build.__doc__ = (
    f"{factory.__doc__}\n\nBridged to NNX by `dann_jax.core.nnx.bridged`: also takes `rngs` and `input_shape`."
  )
  return build


# The paper's networks (`dann_jax.core.models.mnist_dann` / `svhn_dann`) in NNX.
mnist_dann = bridged(models.mnist_dann)
svhn_dann = bridged(models.svhn_dann)


# ----------------------------------------------------------------------------
# Linen <-> NNX: the bridged parameters already are the Linen tree.


def to_linen(model: DANN) -> dict[str, Any]:
  """The parameters of a bridged network as its Linen `params` collection.

  Usable as `dann_jax.core.train.TrainState.params` or with
  `model.to_nnx__module.apply({"params": ...}, ...)`; the arrays are shared.
  """
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _path_name(path: tuple) -> str:
  return "params" + "".join(f"[{k!r}]" for k in path)


def from_linen(model: DANN, params: dict[str, Any]) -> DANN:
  """Copies the Linen `params` of the network `model` bridges into `model`.

  The inverse of `to_linen`: `to_linen(from_linen(model, params))` equals
  `params` exactly.

  Args:
    model: a bridged network (updated in place; its optimizer states, if any,
      are not touched).
    params: the Linen `params` collection (e.g. `TrainState.params`), with
      exactly the network's layer names and shapes.

  Returns:
    `model`.

  Raises:
    ValueError: naming the missing, extra and misshapen entries.
  """
  state = nnx.state(model, nnx.Param)
  expected = nnx.traversals.flatten_mapping(nnx.to_pure_dict(state))
  top = sorted({path[0] for path in expected})
  if not isinstance(params, Mapping) or sorted(params) != top:
    got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
    raise ValueError(f"params must hold exactly {top}; got {got}. Pass the 'params' collection, not the variables dict")
  given = nnx.traversals.flatten_mapping(params)
  wrong = [
    f"{_path_name(path)} has shape {None if path not in given else jnp.shape(given[path])}, the model expects "
    f"{None if path not in expected else expected[path].shape}"
    for path in sorted(set(expected) | set(given), key=str)
    if path not in given or path not in expected or jnp.shape(given[path]) != expected[path].shape
  ]
  if wrong:
    raise ValueError(
      f"{'; '.join(wrong)}. Bridge the network these params come from (mnist_dann or svhn_dann, same num_classes "
      "and input_shape)"
    )
  values = {path: jnp.asarray(given[path], want.dtype) for path, want in expected.items()}
  nnx.replace_by_pure_dict(state, nnx.traversals.unflatten_mapping(values))
  nnx.update(model, state)
  return model


# ----------------------------------------------------------------------------
# Training


class RunKey(nnx.Variable):
  """The run's PRNG key: state to carry and checkpoint, never trained."""


class TrainState(nnx.Pytree):
  """The model, its optimizer, the run key, and the run's schedules.

  The NNX counterpart of `dann_jax.core.train.TrainState`: `train_step` updates
  it in place. Build it with `create_train_state`.

  Attributes:
    model: the bridged network being trained.
    optimizer: its `nnx.Optimizer` over the `nnx.Param`s; `optimizer.step`
      counts the steps taken.
    key: the run's PRNG key (a `RunKey` variable); per-step keys are
      `dann_jax.core.train.step_key(key, step)`.
    learning_rate: the schedule `step -> μ_p`.
    adaptation_factor: the schedule `step -> λ_p`.
    method: the `dann_jax.core.methods.Method` whose loss the step descends.
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

  The optimizer is `dann_jax.core.train.make_optimizer`'s chain on
  `dann_jax.core.train.make_schedules`' rate, as on the Linen path. The initial
  weights are the model's own (from the `rngs` it was built with, or copied
  in by `from_linen`).

  Args:
    model: a bridged network, e.g. `mnist_dann(rngs=nnx.Rngs(config.seed))`.
    config: the run's hyper-parameters.
    key: the run's key; `jax.random.key(config.seed)` if None. As in
      `dann_jax.core.train.create_train_state`, it is split in two and the second
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


def _is_opt_node(x) -> bool:
  return isinstance(x, (nnx.State, nnx.Variable))


def _optimizer_state_to_linen(opt_state):
  """An `nnx.Optimizer`'s optax state with plain arrays: its parameter-shaped
  parts are `nnx.State`s of the Linen tree, so they become the Linen dicts."""
  convert = lambda node: node.get_value() if isinstance(node, nnx.Variable) else nnx.to_pure_dict(node)
  return jax.tree.map(convert, opt_state, is_leaf=_is_opt_node)


def _check_optimizer_structure(state: TrainState, linen_opt_state, what: str) -> None:
  if jax.tree.structure(_optimizer_state_to_linen(state.optimizer.opt_state)) != jax.tree.structure(linen_opt_state):
    raise ValueError(
      f"the NNX optimizer state and {what} differ in structure; build both states from the same TrainConfig"
    )


def to_linen_state(state: TrainState, template: train.TrainState) -> train.TrainState:
  """The Linen `dann_jax.core.train.TrainState` of an NNX train state.

  Step, parameters, optimizer state and run key move over exactly (the
  arrays are shared, not copied), so the Linen evaluation, selection and
  checkpoint code reads an NNX run, and `from_linen_state` takes it back.

  Args:
    state: an NNX train state.
    template: a Linen state of the bridged network and the same `TrainConfig`
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
      "train state carries parameters only. Build the template with "
      "models.mnist_dann or models.svhn_dann"
    )
  _check_optimizer_structure(state, template.opt_state, "template.opt_state")
  return template.replace(
    step=jnp.asarray(state.step, template.step.dtype),
    params=to_linen(state.model),
    opt_state=_optimizer_state_to_linen(state.optimizer.opt_state),
    key=state.key.get_value(),
  )


def from_linen_state(state: TrainState, linen_state: train.TrainState) -> TrainState:
  """Copies a Linen train state (step, params, optimizer state, key) into `state`.

  The inverse of `to_linen_state`: a run started or restored through the
  Linen door continues through the NNX one with the same numbers. The values
  are copied, so the Linen state stays usable.

  Args:
    state: an NNX train state of the same network and `TrainConfig`
      (updated in place).
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
      "(dann_jax.training.loop.seed_states)"
    )
  _check_optimizer_structure(state, linen_state.opt_state, "linen_state.opt_state")
  copy = lambda x: jnp.array(x, copy=True)
  from_linen(state.model, jax.tree.map(copy, linen_state.params))

  def load(node, value):
    if isinstance(node, nnx.Variable):
      node.set_value(copy(value))
      return
    for path, variable in nnx.to_flat_state(node):
      variable.set_value(copy(functools.reduce(lambda tree, k: tree[k], path, value)))

  jax.tree.map(load, state.optimizer.opt_state, linen_state.opt_state, is_leaf=_is_opt_node)
  state.optimizer.step.set_value(jnp.asarray(linen_state.step, state.optimizer.step.dtype))
  state.key.set_value(copy(linen_state.key))
  return state


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  axis_name: str | None = None,
  labelled_rows: int | tuple[int, int] | None = None,
):
  """One optimizer step on `state.method`'s loss (DANN: L_y + L_d through the GRL).

  The NNX counterpart of `dann_jax.core.train.train_step`, with the same loss
  (`dann_jax.core.methods.batch_loss`), optimizer, schedules, dropout key and
  metrics. λ_p and μ_p are computed from `state.step` inside the step, so a
  jitted step compiles once for the whole run. The model runs in training
  mode.

  Args:
    state: the train state; updated in place.
    batch: `image`, `label`, `domain`, `label_mask` (see
      `dann_jax.core.objective.saddle_point_loss`).
    axis_name: the mapped axis when run inside a mapped transform (e.g.
      `jax.pmap` or `jax.vmap` of a function that `nnx.merge`s the state);
      gradients and statistics are then combined over it so every member
      takes the step of the global batch.
    labelled_rows: static; the Linen step's promise of where the labelled
      rows are (the label predictor then runs on them alone).

  Returns:
    `(state, metrics)`: `state` itself (so loops written for the Linen step
    run unchanged), and the Linen step's metrics.
  """
  step = state.optimizer.step[...]
  lam = state.adaptation_factor(step)
  dropout_key = jax.random.fold_in(step_key(state.key.get_value(), step), DROPOUT_STREAM)
  if axis_name is not None:
    dropout_key = jax.random.fold_in(dropout_key, lax.axis_index(axis_name))

  prefix = labelled_rows_for(state.method, getattr(state.model, "to_nnx__module", None), labelled_rows)
  rows = {} if prefix is None else {"labelled_rows": prefix}

  def loss_fn(model):
    # `ToNNX` hands a bare key to Linen as its "params" stream, which Linen's
    # `make_rng("dropout")` falls back to when no "dropout" stream is given
    # (`flax.linen.Module.make_rng`): the masks of the Linen step's
    # `rngs={"dropout": dropout_key}`, bit for bit.
    if state.method.labelled_rows_only:  # no domain classifier, as in the Linen step
      class_logits, domain_logits = model.classify(batch["image"], train=True, rngs=dropout_key), None
    else:
      class_logits, domain_logits = model(batch["image"], lam, train=True, rngs=dropout_key, **rows)
      if prefix is not None:
        class_logits = models.spread_labelled(class_logits, batch["image"].shape[0], prefix)
    return methods.batch_loss(state.method, class_logits, domain_logits, batch, axis_name=axis_name)

  grads, metrics = nnx.grad(loss_fn, has_aux=True)(state.model)
  if axis_name is not None:
    # Each member's loss is its share of the global mean: gradients add up.
    grads = lax.psum(grads, axis_name)
  state.optimizer.update(state.model, grads)
  if state.max_norm is not None:
    from_linen(state.model, clip_unit_norms(to_linen(state.model), state.max_norm))
  metrics = dict(
    metrics,
    **{"lambda": jnp.asarray(lam, jnp.float32), "learning_rate": jnp.asarray(state.learning_rate(step), jnp.float32)},
  )
  return state, metrics


def eval_step(state: TrainState, images: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """The number of correctly classified images (mask: which rows count), in evaluation mode."""
  logits = state.model.classify(images, train=False)
  correct = jnp.argmax(logits, axis=-1) == labels
  if mask is not None:
    correct = correct & mask
  return jnp.sum(correct)


jit_train_step = nnx.jit(train_step, static_argnames="axis_name")
jit_eval_step = nnx.jit(eval_step)
