"""Train state, the jitted train and eval steps, multi-step scans, and the loop.

`train_step(state, batch) -> (state, metrics)` is a pure function: the step
count lives in the state, and λ_p and μ_p are computed from it inside the step,
so a jitted step compiles once for the whole run. The same step runs under
`jax.jit`, `jax.vmap` (several seeds in one program), `jax.pmap` with an
`axis_name`, and `jax.jit` over a sharded batch.

References: Algorithm of Sec. 3.2 (updates (4)-(6)) and the training protocol
of Sec. 5 of Ganin & Lempitsky, arXiv 1409.7495.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from dann_jax import schedules
from dann_jax.config import TrainConfig
from dann_jax.data.batching import sample_batch
from dann_jax.layers import cpu_jit
from dann_jax.objective import saddle_point_loss

# Tags folded into the run key to derive independent streams.
_DROPOUT_STREAM = 1
DATA_STREAM = 2


class TrainState(struct.PyTreeNode):
  """Everything a step reads and writes, as one pytree.

  Attributes:
    step: the number of steps taken (int32 scalar).
    params: `{"features", "label_predictor", "domain_classifier"}` parameters.
    opt_state: the optax state.
    model_state: non-parameter variable collections (e.g. `batch_stats`).
    key: the run's PRNG key; per-step keys are `fold_in(key, step)`.
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
  method: str = struct.field(pytree_node=False, default="dann")
  max_norm: float | None = struct.field(pytree_node=False, default=None)


def make_schedules(config: TrainConfig):
  """The (learning rate, adaptation factor) schedules of `config`."""
  if config.anneal_learning_rate:
    lr = schedules.annealed_learning_rate(
        config.total_steps, config.learning_rate, config.lr_alpha,
        config.lr_beta)
  else:
    lr = schedules.constant_learning_rate(config.learning_rate)
  if config.method == "dann":
    lam = schedules.adaptation_factor(config.total_steps, config.gamma,
                                      config.lam_max, config.lam_warmup)
  else:
    # Without a domain term λ only scales a gradient that is never used.
    lam = schedules.constant_adaptation_factor(0.0)
  return lr, lam


def make_optimizer(config: TrainConfig,
                   learning_rate: optax.Schedule) -> optax.GradientTransformation:
  """SGD with momentum on the annealed rate (optionally with L2 weight decay)."""
  parts = []
  if config.weight_decay:
    parts.append(optax.add_decayed_weights(config.weight_decay))
  if config.optimizer == "sgd":
    parts.append(optax.sgd(learning_rate, momentum=config.momentum))
  else:
    parts.append(optax.adam(learning_rate, b1=config.adam_b1))
  return optax.chain(*parts)


def create_train_state(model: nn.Module, config: TrainConfig,
                       sample_images: jax.Array,
                       key: jax.Array | None = None) -> TrainState:
  """Initialises parameters and optimizer state for `model` and `config`.

  Args:
    model: a `dann_jax.models.DANN` (or any module with its call signature).
    config: the run's hyper-parameters.
    sample_images: a batch with the input shape (values unused).
    key: the run's key; `jax.random.key(config.seed)` if None.

  Returns:
    The state at step 0.
  """
  if key is None:
    key = jax.random.key(config.seed)
  init_key, run_key = jax.random.split(key)
  variables = model.init({"params": init_key, "dropout": init_key},
                         sample_images, 0.0, train=False)
  variables = dict(variables)
  params = variables.pop("params")
  variables.pop("intermediates", None)
  lr, lam = make_schedules(config)
  tx = make_optimizer(config, lr)
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
      model_state=variables, key=run_key, apply_fn=model.apply, tx=tx,
      adaptation_factor=lam, learning_rate=lr, method=config.method,
      max_norm=config.max_norm)


def _clip_unit_norms(params, max_norm: float):
  """Projects each unit's incoming weight vector onto the l2 ball of `max_norm`."""
  def clip(path, w):
    if getattr(path[-1], "key", None) != "kernel":
      return w
    fan_in_axes = tuple(range(w.ndim - 1))
    norms = jnp.sqrt(jnp.sum(w * w, axis=fan_in_axes, keepdims=True))
    return w * jnp.minimum(1.0, max_norm / jnp.maximum(norms, 1e-12))
  return jax.tree_util.tree_map_with_path(clip, params)


def train_step(state: TrainState, batch: dict[str, jax.Array],
               axis_name: str | None = None):
  """One SGD step on L_y + L_d through the GRL (the paper's updates (4)-(6)).

  Args:
    state: the train state.
    batch: `image`, `label`, `domain`, `label_mask` (see
      `dann_jax.objective.saddle_point_loss`).
    axis_name: the mapped axis when run inside `jax.pmap`; gradients and
      statistics are then combined over it so every device takes the step of
      the global batch.

  Returns:
    `(new_state, metrics)` with `loss`, `label_loss`, `domain_loss`,
    `domain_accuracy`, `lambda` and `learning_rate` (the values used).
  """
  lam = state.adaptation_factor(state.step)
  step_key = jax.random.fold_in(state.key, state.step)
  dropout_key = jax.random.fold_in(step_key, _DROPOUT_STREAM)
  if axis_name is not None:
    dropout_key = jax.random.fold_in(dropout_key,
                                     jax.lax.axis_index(axis_name))
  mutable = list(state.model_state)

  def loss_fn(params):
    variables = {"params": params, **state.model_state}
    out = state.apply_fn(variables, batch["image"], lam, train=True,
                         rngs={"dropout": dropout_key},
                         mutable=mutable or False)
    (class_logits, domain_logits), new_model_state = (
        out if mutable else (out, state.model_state))
    loss, metrics = saddle_point_loss(class_logits, domain_logits, batch,
                                      method=state.method,
                                      axis_name=axis_name)
    return loss, (metrics, new_model_state)

  grads, (metrics, model_state) = jax.grad(loss_fn, has_aux=True)(
      state.params)
  if axis_name is not None:
    # Each device's loss is its share of the global mean: gradients add up.
    grads = jax.lax.psum(grads, axis_name)
    model_state = jax.lax.pmean(model_state, axis_name)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  if state.max_norm is not None:
    params = _clip_unit_norms(params, state.max_norm)
  metrics = dict(metrics, loss=_total(metrics, state.method), **{
      "lambda": jnp.asarray(lam, jnp.float32),
      "learning_rate": jnp.asarray(state.learning_rate(state.step),
                                   jnp.float32)})
  new_state = state.replace(step=state.step + 1, params=params,
                            opt_state=opt_state, model_state=model_state)
  return new_state, metrics


def _total(metrics, method):
  if method == "dann":
    return metrics["label_loss"] + metrics["domain_loss"]
  return metrics["label_loss"]


def train_steps(state: TrainState, batches: dict[str, jax.Array]):
  """Runs one step per leading index of `batches` in a single `lax.scan`.

  Args:
    state: the train state.
    batches: a batch dict whose arrays carry a leading steps axis (K, B, ...).

  Returns:
    `(state, metrics)` with each metric stacked to shape (K,).
  """
  return jax.lax.scan(train_step, state, batches)


def step_on_pair(state: TrainState, pair, batch_size: int):
  """One step on a batch sampled on the device from `pair` (see `train_on_pair`)."""
  data_key = jax.random.fold_in(state.key, DATA_STREAM)
  return train_step(state, sample_batch(pair, data_key, state.step,
                                        batch_size))


def train_on_pair(state: TrainState, pair, num_steps: int, batch_size: int):
  """Runs `num_steps` steps in one `lax.scan`, sampling batches on the device.

  Args:
    state: the train state.
    pair: a `dann_jax.data.DomainPair` of device-resident source and target.
    num_steps: the number of steps (static).
    batch_size: samples per step (static), half source and half target.

  Returns:
    `(state, metrics)` with each metric stacked to shape (num_steps,).
  """
  return jax.lax.scan(lambda s, _: step_on_pair(s, pair, batch_size), state,
                      None, length=num_steps)


def train_on_pair_stepwise(state: TrainState, pair, num_steps: int,
                           batch_size: int):
  """`train_on_pair` as a host loop of jitted steps: same numbers, CPU-fast.

  XLA:CPU runs convolutions inside a `while` loop (what `lax.scan` lowers to)
  several times slower than the same convolutions at top level (measured
  here: a 5x5 convolution's gradient took 375 ms per iteration in a scan,
  45 ms unrolled), so on CPU one dispatch per step beats one per chunk. The
  batches are still sampled on the device; only the step loop is on the host.
  """
  step = (jit_step_on_pair if state.step.ndim == 0
          else jit_step_on_pair_seeds)
  metrics = []
  for _ in range(num_steps):
    state, m = step(state, pair, batch_size)
    metrics.append(m)
  stack_axis = state.step.ndim  # the steps axis goes after a seeds axis
  return state, jax.tree.map(lambda *xs: jnp.stack(xs, axis=stack_axis),
                             *metrics)


def eval_step(state: TrainState, images: jax.Array, labels: jax.Array,
              mask: jax.Array | None = None) -> jax.Array:
  """The number of correctly classified images (mask: which rows count)."""
  variables = {"params": state.params, **state.model_state}
  logits = state.apply_fn(variables, images, train=False,
                          method="classify")
  correct = jnp.argmax(logits, axis=-1) == labels
  if mask is not None:
    correct = correct & mask
  return jnp.sum(correct)


def first_non_finite(metrics: dict[str, Any], first_step: int) -> int | None:
  """The first step whose loss is not finite in stacked `metrics`, or None."""
  losses = np.asarray(metrics["loss"]).reshape(len(metrics["loss"]), -1)
  bad = np.flatnonzero(~np.isfinite(losses).all(axis=1))
  return None if bad.size == 0 else first_step + int(bad[0])


def check_finite(metrics: dict[str, Any], first_step: int) -> None:
  """Raises FloatingPointError naming the first step with a non-finite loss."""
  step = first_non_finite(metrics, first_step)
  if step is not None:
    raise FloatingPointError(
        f"the loss became non-finite at step {step}; training stopped. Lower "
        "the learning rate (or lam_max), or check the inputs for NaN/inf.")


def chunk_sizes(start: int, stop: int, every: int) -> Iterator[int]:
  """Splits steps [start, stop) into chunks that end on multiples of `every`."""
  step = start
  while step < stop:
    size = min(every - step % every, stop - step)
    yield size
    step += size


# Jitted entry points. `cpu_jit` is `jax.jit`, except that on CPU it runs the
# convolutions on XLA's Eigen kernels (see `dann_jax.layers`).
jit_train_step = cpu_jit(train_step, static_argnames="axis_name",
                         donate_argnums=0)
jit_train_steps = cpu_jit(train_steps, donate_argnums=0)
jit_train_on_pair = cpu_jit(train_on_pair, static_argnums=(2, 3),
                            donate_argnums=0)
jit_step_on_pair = cpu_jit(step_on_pair, static_argnums=2, donate_argnums=0)


def check_labels(labels, num_classes: int, what: str) -> None:
  """Raises ValueError if any label lies outside [0, num_classes)."""
  labels = np.asarray(labels)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(
        f"{what} labels must lie in [0, {num_classes}); found values in "
        f"[{labels.min()}, {labels.max()}]. Relabel the data or build the "
        f"model with num_classes={int(labels.max()) + 1}.")


def fit(state: TrainState, pair, *, num_steps: int, batch_size: int,
        num_classes: int, chunk: int = 100,
        callback: Callable[[TrainState, dict[str, np.ndarray]], None]
        | None = None, runner: Callable | None = None) -> TrainState:
  """Trains from `state.step` up to `num_steps`, one jitted scan per chunk.

  Args:
    state: the starting state (step 0, or restored from a checkpoint); with a
      leading seeds axis if it was built by `replicate_seeds`.
    pair: a `dann_jax.data.DomainPair` on the device.
    num_steps: the step to stop at.
    batch_size: samples per step, half source and half target.
    num_classes: the label predictor's number of classes (labels are checked).
    chunk: steps per compiled scan; chunks end on multiples of it, so a resumed
      run takes the same chunks.
    callback: called on the host after each chunk with the new state and the
      chunk's stacked metrics (evaluation, logging, checkpoints).
    runner: `(state, pair, num_steps, batch_size) -> (state, metrics)` running
      one chunk; by default the jitted `train_on_pair` (or its vmapped form for
      a seeds axis). `dann_jax.parallel` provides multi-device runners.

  Returns:
    The state at `num_steps`.

  Raises:
    ValueError: for an odd batch size or labels outside [0, num_classes).
    FloatingPointError: naming the first step whose loss is not finite.
  """
  if batch_size <= 0 or batch_size % 2:
    raise ValueError(f"{batch_size=} must be even: half source, half target")
  check_labels(pair.source_labels, num_classes, "source")
  check_labels(pair.target_labels, num_classes, "target")
  steps_axis = state.step.ndim  # 1 with a leading seeds axis
  run = runner or default_runner(seeds_axis=steps_axis == 1)
  start = int(np.asarray(state.step).reshape(-1)[0])
  for size in chunk_sizes(start, num_steps, chunk):
    first = int(np.asarray(state.step).reshape(-1)[0])
    state, metrics = run(state, pair, size, batch_size)
    metrics = jax.device_get(metrics)
    if steps_axis:
      metrics = {k: np.moveaxis(v, 0, -1) for k, v in metrics.items()}
    check_finite(metrics, first)
    if callback is not None:
      callback(state, metrics)
  return state


def default_runner(seeds_axis: bool = False) -> Callable:
  """The single-device chunk runner: one scan per chunk on accelerators, and
  a host loop of jitted steps on CPU (see `train_on_pair_stepwise`)."""
  if jax.default_backend() == "cpu":
    return train_on_pair_stepwise
  return jit_train_on_pair_seeds if seeds_axis else jit_train_on_pair


def replicate_seeds(make_state: Callable[[jax.Array], TrainState],
                    seeds) -> TrainState:
  """Stacks the states of several seeds along a leading axis for `jax.vmap`.

  Args:
    make_state: `key -> TrainState`, e.g. a partial of `create_train_state`.
    seeds: the integer seeds; each run gets `jax.random.key(seed)`.

  Returns:
    One state whose arrays have a leading axis of len(seeds).
  """
  seeds = list(seeds)
  if not seeds:
    raise ValueError("seeds is empty; give at least one seed (--seeds K >= 1)")
  keys = jnp.stack([jax.random.key(int(s)) for s in seeds])
  return jax.vmap(make_state)(keys)


def seed_states(state: TrainState) -> list[TrainState]:
  """The single-seed states of a state with (or without) a seeds axis."""
  if state.step.ndim == 0:
    return [state]
  return [jax.tree.map(lambda x, i=i: x[i], state)
          for i in range(state.step.shape[0])]


def train_on_pair_seeds(state: TrainState, pair, num_steps: int,
                        batch_size: int):
  """`train_on_pair` for states with a leading seeds axis, in one program."""
  return jax.vmap(
      lambda s: train_on_pair(s, pair, num_steps, batch_size))(state)


def step_on_pair_seeds(state: TrainState, pair, batch_size: int):
  """`step_on_pair` for states with a leading seeds axis."""
  return jax.vmap(lambda s: step_on_pair(s, pair, batch_size))(state)


jit_train_on_pair_seeds = cpu_jit(train_on_pair_seeds, static_argnums=(2, 3),
                                  donate_argnums=0)
jit_step_on_pair_seeds = cpu_jit(step_on_pair_seeds, static_argnums=2,
                                 donate_argnums=0)
