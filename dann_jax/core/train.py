"""Train state, optimizer, and the train and eval steps.

`train_step(state, batch) -> (state, metrics)` is a pure function: the step
count lives in the state, and λ_p and μ_p are computed from it inside the step,
so a jitted step compiles once for the whole run. The same step runs under
`jax.jit`, `jax.vmap` (several seeds in one program), `jax.pmap` with an
`axis_name`, and `jax.jit` over a sharded batch. How steps are strung together
(chunks, seeds, devices, the choice of jit) is `dann_jax.training.loop`'s business.

References: Algorithm of Sec. 3.2 (updates (4)-(6)) and the training protocol
of Sec. 5 of Ganin & Lempitsky, arXiv 1409.7495.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from dann_jax.core import methods, models, schedules
from dann_jax.core.config import TrainConfig

# The run key's streams, each `fold_in(run_key, tag)`: the steps' keys come from STEP_STREAM
# and the sampled batches from DATA_STREAM (`dann_jax.training.loop`), so no step's key is
# the key the batches are drawn from. Within a step's key, dropout draws from DROPOUT_STREAM.
STEP_STREAM = 1
DATA_STREAM = 2
DROPOUT_STREAM = 1


def step_key(run_key: jax.Array, step: jax.Array) -> jax.Array:
  """The key of step `step`: `fold_in(fold_in(run_key, STEP_STREAM), step)`."""
  return jax.random.fold_in(jax.random.fold_in(run_key, STEP_STREAM), step)


class TrainState(struct.PyTreeNode):
  """Everything a step reads and writes, as one pytree.

  Attributes:
    step: the number of steps taken (int32 scalar).
    params: `{"features", "label_predictor", "domain_classifier"}` parameters.
    opt_state: the optax state.
    model_state: non-parameter variable collections (e.g. `batch_stats`).
    key: the run's PRNG key; per-step keys are `step_key(key, step)`.
    method: the `dann_jax.core.methods.Method` whose loss the step descends.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any
  key: jax.Array
  apply_fn: Callable = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)
  adaptation_factor: optax.Schedule = struct.field(pytree_node=False)
  learning_rate: optax.Schedule = struct.field(pytree_node=False)
  method: methods.Method = struct.field(pytree_node=False, default=methods.DANN)
  max_norm: float | None = struct.field(pytree_node=False, default=None)


def make_schedules(config: TrainConfig):
  """The (learning rate, adaptation factor) schedules of `config`."""
  if config.anneal_learning_rate:
    lr = schedules.annealed_learning_rate(config.total_steps, config.learning_rate, config.lr_alpha, config.lr_beta)
  else:
    lr = optax.constant_schedule(config.learning_rate)
  if methods.get(config.method).adversarial:
    lam = schedules.adaptation_factor(config.total_steps, config.gamma, config.lam_max, config.lam_warmup)
  else:
    # Without a domain term λ only scales a gradient that is never used.
    lam = optax.constant_schedule(0.0)
  return lr, lam


def make_optimizer(config: TrainConfig, learning_rate: optax.Schedule) -> optax.GradientTransformation:
  """SGD with momentum on the annealed rate (optionally with L2 weight decay)."""
  parts = []
  if config.weight_decay:
    parts.append(optax.add_decayed_weights(config.weight_decay))
  if config.optimizer == "sgd":
    parts.append(optax.sgd(learning_rate, momentum=config.momentum))
  else:
    parts.append(optax.adam(learning_rate, b1=config.adam_b1))
  return optax.chain(*parts)


def init_variables(model: nn.Module, rngs: dict[str, jax.Array], sample_images: jax.Array) -> dict[str, Any]:
  """`model.init(rngs, sample_images, 0.0, train=False)`, compiled once per network.

  Run eagerly, `init` compiles each operation of the network on its own: 6.4 s
  for the SVHN net and 2.9 s for the MNIST net on a 2-core CPU, against 2.6
  and 1.7-2.0 s as one jitted function (the module a static argument: equal
  networks share the compilation), with the same values bit for bit. The
  jitted init runs on one zero row of the sample's shape (the parameters do not
  depend on the values or the batch size). A module that cannot be hashed is
  initialised eagerly on `sample_images`.
  """
  try:
    hash(model)
  except TypeError:
    return model.init(rngs, sample_images, 0.0, train=False)
  # One zero row: the values are unused, and one input shape per network keeps it one compilation.
  return _jitted_init(model, rngs, jnp.zeros((1, *jnp.shape(sample_images)[1:]), jnp.result_type(sample_images)))


@functools.partial(jax.jit, static_argnums=0)
def _jitted_init(model: nn.Module, rngs: dict[str, jax.Array], sample_images: jax.Array) -> dict[str, Any]:
  return model.init(rngs, sample_images, 0.0, train=False)


def create_train_state(
  model: nn.Module, config: TrainConfig, sample_images: jax.Array, key: jax.Array | None = None
) -> TrainState:
  """Initialises parameters and optimizer state for `model` and `config`.

  Args:
    model: a `dann_jax.core.models.DANN` (or any module with its call signature).
    config: the run's hyper-parameters.
    sample_images: a batch with the input shape (values unused).
    key: the run's key; `jax.random.key(config.seed)` if None.

  Returns:
    The state at step 0.
  """
  if key is None:
    key = jax.random.key(config.seed)
  init_key, run_key = jax.random.split(key)
  variables = init_variables(model, {"params": init_key, "dropout": init_key}, sample_images)
  variables = dict(variables)
  params = variables.pop("params")
  variables.pop("intermediates", None)
  lr, lam = make_schedules(config)
  tx = make_optimizer(config, lr)
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=tx.init(params),
    model_state=variables,
    key=run_key,
    apply_fn=model.apply,
    tx=tx,
    adaptation_factor=lam,
    learning_rate=lr,
    method=methods.get(config.method),
    max_norm=config.max_norm,
  )


def clip_unit_norms(params, max_norm: float):
  """Projects each unit's incoming weight vector onto the l2 ball of `max_norm`."""

  def clip(path, w):
    if getattr(path[-1], "key", None) != "kernel":
      return w
    fan_in_axes = tuple(range(w.ndim - 1))
    norms = jnp.sqrt(jnp.sum(w * w, axis=fan_in_axes, keepdims=True))
    return w * jnp.minimum(1.0, max_norm / jnp.maximum(norms, 1e-12))

  return jax.tree_util.tree_map_with_path(clip, params)


def labelled_rows_for(method: methods.Method, module: Any, labelled_rows) -> tuple[int, int] | None:
  """The `labelled_rows` to pass to the network's call (as `models.row_blocks`):
  the step's promise, where the method reads no other row's class logits and
  the network takes it; else None (the label predictor sees every row)."""
  if labelled_rows is None or not method.labelled_logits_only or not models.takes_labelled_rows(module):
    return None
  return models.row_blocks(labelled_rows)


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  axis_name: str | None = None,
  labelled_rows: int | tuple[int, int] | None = None,
):
  """One optimizer step on `state.method`'s loss; for DANN, on L_y + L_d
  through the GRL (the paper's updates (4)-(6)).

  Args:
    state: the train state.
    batch: `image`, `label`, `domain`, `label_mask` (see
      `dann_jax.core.objective.saddle_point_loss`).
    axis_name: the mapped axis when run inside `jax.pmap`; gradients and
      statistics are then combined over it so every device takes the step of
      the global batch.
    labelled_rows: static; a promise that the rows the method's labels come
      from (`methods.label_rows`) are exactly the batch's first
      `labelled_rows` (as `methods.labelled_prefix` says of the loop's
      batches), or with `(blocks, n)` the first n of each of `blocks` equal
      row blocks (a multi-device runner's layout). For a method with
      `labelled_logits_only` (DANN) the label predictor then runs on those
      rows alone: the same step, to float rounding, for less work (about 15%
      of the SVHN net's step on a 2-core CPU).

  Returns:
    `(new_state, metrics)` with `loss`, `label_loss`, `domain_loss` and
    `domain_accuracy` (not for a method that skips the domain classifier,
    `labelled_rows_only`), `lambda` and `learning_rate` (the values used).

  Labels in rows the method trains on must lie in [0, classes). `fit` checks
  every label once where the data enter; an eager call raises `ValueError`;
  under your own `jax.jit` the check is a `checkify` check, a no-op unless the
  step is wrapped: `err, out = checkify.checkify(jax.jit(train_step))(state,
  batch); err.throw()` (`from jax.experimental import checkify`). The
  library's jitted steps (`dann_jax.training.loop`) leave it out: their callers
  check labels where the data enter, and the check's effect would keep each
  call off jit's C++ dispatch path.
  """
  lam = state.adaptation_factor(state.step)
  dropout_key = jax.random.fold_in(step_key(state.key, state.step), DROPOUT_STREAM)
  if axis_name is not None:
    dropout_key = jax.random.fold_in(dropout_key, jax.lax.axis_index(axis_name))
  mutable = list(state.model_state)
  prefix = labelled_rows_for(state.method, getattr(state.apply_fn, "__self__", None), labelled_rows)
  rows = {} if prefix is None else {"labelled_rows": prefix}

  def loss_fn(params):
    variables = {"params": params, **state.model_state}
    train = dict(train=True, rngs={"dropout": dropout_key}, mutable=mutable or False)
    if state.method.labelled_rows_only:  # no domain classifier
      out = state.apply_fn(variables, batch["image"], method="classify", **train)
      (class_logits, new_model_state), domain_logits = (out if mutable else (out, state.model_state)), None
    else:
      out = state.apply_fn(variables, batch["image"], lam, **rows, **train)
      (class_logits, domain_logits), new_model_state = out if mutable else (out, state.model_state)
      if prefix is not None:
        class_logits = models.spread_labelled(class_logits, batch["image"].shape[0], prefix)
    loss, metrics = methods.batch_loss(state.method, class_logits, domain_logits, batch, axis_name=axis_name)
    return loss, (metrics, new_model_state)

  grads, (metrics, model_state) = jax.grad(loss_fn, has_aux=True)(state.params)
  if axis_name is not None:
    # Each device's loss is its share of the global mean: gradients add up.
    grads = jax.lax.psum(grads, axis_name)
    model_state = jax.lax.pmean(model_state, axis_name)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  if state.max_norm is not None:
    params = clip_unit_norms(params, state.max_norm)
  metrics = dict(
    metrics,
    **{
      "lambda": jnp.asarray(lam, jnp.float32),
      "learning_rate": jnp.asarray(state.learning_rate(state.step), jnp.float32),
    },
  )
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state)
  return new_state, metrics


def eval_step(state: TrainState, images: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """The number of correctly classified images (mask: which rows count)."""
  variables = {"params": state.params, **state.model_state}
  logits = state.apply_fn(variables, images, train=False, method="classify")
  correct = jnp.argmax(logits, axis=-1) == labels
  if mask is not None:
    correct = correct & mask
  return jnp.sum(correct)
