"""Building blocks shared by the paper's networks: max pooling and convolution.

`max_pool` is the one place the networks pool and `conv_general_dilated` the
one convolution they run, so that a faster formulation of the *same function*
lives here without touching the models. Both are drop-in replacements:

* `max_pool` computes `flax.linen.max_pool` as a running `jnp.maximum` over
  the entries of each window, one spatial axis after the other (a max over a
  window is the max over its rows of the max over its columns). XLA:CPU
  lowers the plain `reduce_window` gradient to `select_and_scatter`, which
  took ~42 ms for the first pool of the MNIST network on a 2-core CPU; the
  running max fuses into elementwise loops forwards and backwards. Windows
  that tile the axis (window == stride, the MNIST net) are taken by splitting
  the axis into (windows, window), whose gradient is one elementwise loop;
  overlapping ones (the SVHN net's 3x3/2) by strided slices, whose gradient
  pads and adds.
* `conv_general_dilated` has the signature of `jax.lax.conv_general_dilated`
  (pass it to `flax.linen.Conv(conv_general_dilated=...)`; parameter names and
  shapes are unchanged). On CPU it pads the output to one row taller than the
  input and slices the spare rows off; everywhere else it is the plain
  convolution. XLA:CPU (jax 0.10) hands a 2-D NHWC convolution to YNNPACK
  unless its output is larger than its input, and for these small-batch,
  few-channel shapes YNNPACK ran about 2x slower than the Eigen kernels XLA
  uses otherwise, forwards and for the kernel gradient. With the taller output
  the convolution and its kernel-gradient convolution go to Eigen; the extra
  work is kh rows of output per image (28 -> 33 rows for the first MNIST
  layer). Only unpadded ("VALID") convolutions take this path: for padded
  ones XLA rewrote the kernel gradient of the taller output into a generic,
  far slower convolution, so the SVHN network's "SAME" convolutions stay
  plain.
* `cpu_jit` avoids that waste where the library compiles its own functions
  (train steps, evaluation): on CPU it traces them under
  `plain_convolutions()` (plain convolutions, no spare rows) and compiles them
  with `EIGEN_CONVOLUTIONS`, an XLA option that takes YNNPACK off
  convolutions only, so every convolution, padded or not, runs on Eigen
  (MNIST step 60-66 -> 54-61 ms, SVHN step ~535 -> ~510 ms on 2 cores).

Ties in `max_pool`: where several entries of a window share the maximum,
`select_and_scatter` (the gradient of `nn.max_pool`) sends the whole gradient
to one of them, while the gradient of `jnp.maximum` splits it evenly between
its two arguments, so here tied entries share it (halving at each pairwise
maximum). Both are valid subgradients, the sum over the window is the same,
and they agree wherever the maximum is unique, which is almost surely the case
for pre-activations of a trained network; ties at 0 after a ReLU get a zero
gradient downstream of the ReLU either way.

References: the layers of the digit networks of Ganin & Lempitsky,
arXiv 1409.7495 (appendix / JMLR 2016 Fig. 4).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

# XLA:CPU debug options for this project's jitted steps: jax 0.10's default
# set of YNNPACK library fusions (individual dots and reductions) without
# individual convolutions, so that every convolution runs on XLA's Eigen
# kernels. Unknown to other backends' compilers only in effect, not in name:
# `cpu_jit` passes them on CPU only.
EIGEN_CONVOLUTIONS = {
    "xla_cpu_experimental_ynn_fusion_type":
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}

_trace = threading.local()


@contextlib.contextmanager
def plain_convolutions():
  """Within: `conv_general_dilated` is `lax.conv_general_dilated` as is.

  For functions compiled with `EIGEN_CONVOLUTIONS` (see `cpu_jit`), where the
  spare output row that steers a convolution away from YNNPACK is pure waste.
  Only tracing reads it; compiled functions keep what they were traced with.
  """
  previous = getattr(_trace, "plain", False)
  _trace.plain = True
  try:
    yield
  finally:
    _trace.plain = previous


class _CpuJit:
  """`jax.jit(fun)`, or on CPU: traced under `plain_convolutions()` and
  compiled with `EIGEN_CONVOLUTIONS`. The backend is looked up at the first
  call, so that importing the library does not initialise JAX."""

  def __init__(self, fun: Callable, jit_kwargs: dict[str, Any]):
    functools.update_wrapper(self, fun)
    self._fun, self._jit_kwargs, self._jitted = fun, jit_kwargs, None

  def _compiled(self):
    if self._jitted is None:
      if jax.default_backend() == "cpu":
        fun = self._fun

        @functools.wraps(fun)
        def traced(*args, **kwargs):
          with plain_convolutions():
            return fun(*args, **kwargs)

        self._jitted = jax.jit(traced, compiler_options=EIGEN_CONVOLUTIONS,
                               **self._jit_kwargs)
      else:
        self._jitted = jax.jit(self._fun, **self._jit_kwargs)
    return self._jitted

  def __call__(self, *args, **kwargs):
    return self._compiled()(*args, **kwargs)

  def lower(self, *args, **kwargs):
    return self._compiled().lower(*args, **kwargs)


def cpu_jit(fun: Callable | None = None, **jit_kwargs):
  """`jax.jit` that, on CPU, runs every convolution on XLA's Eigen kernels.

  Usable as `cpu_jit(f, donate_argnums=0)` or as a decorator
  (`@cpu_jit(static_argnames="n")`). Same results as `jax.jit(f)` to float32
  rounding; on other backends it is `jax.jit(f)`.
  """
  if fun is None:
    return lambda fun: _CpuJit(fun, jit_kwargs)
  return _CpuJit(fun, jit_kwargs)


def _max_pool_axis(x: jax.Array, axis: int, window: int, stride: int,
                   padding: str) -> jax.Array:
  """Max over windows of `window` entries every `stride` along one axis."""
  (low, high), = lax.padtype_to_pads((x.shape[axis],), (window,), (stride,),
                                     padding)
  if low or high:
    config = [(0, 0, 0)] * x.ndim
    config[axis] = (low, high, 0)
    x = lax.pad(x, jnp.array(-jnp.inf, x.dtype), config)
  size = (x.shape[axis] - window) // stride + 1
  if size <= 0:
    raise ValueError(
        f"max_pool {window=} is larger than the input's axis {axis} of size "
        f"{x.shape[axis]} with {padding=}; use 'SAME' padding or a smaller "
        "window")
  if window == stride:
    # Non-overlapping windows: split the axis into (size, window) and take the
    # running max over the window index. Same maxima in the same order as the
    # strided slices below, but XLA:CPU fuses its gradient into one
    # elementwise loop instead of padded scatters (first MNIST pool, fwd+bwd:
    # 12.8 -> 3.3 ms on 2 cores).
    x = lax.slice_in_dim(x, 0, size * window, axis=axis)
    x = x.reshape(x.shape[:axis] + (size, window) + x.shape[axis + 1:])
    take = lambda offset: lax.index_in_dim(x, offset, axis + 1, keepdims=False)
  else:
    take = lambda offset: lax.slice_in_dim(
        x, offset, offset + (size - 1) * stride + 1, stride, axis=axis)
  out = take(0)
  for offset in range(1, window):
    out = jnp.maximum(out, take(offset))
  return out


def max_pool(x: jax.Array, window: int, stride: int,
             padding: str = "VALID") -> jax.Array:
  """Max pooling over the two spatial axes of an NHWC batch.

  Equal to `nn.max_pool(x, (window, window), (stride, stride), padding)`
  for any sizes, including windows that overlap ("SAME" 3x3 stride 2) and
  sizes that the stride does not divide (the remainder is dropped for
  "VALID", padded with -inf for "SAME"). Gradients agree except at ties
  inside a window (see the module docstring).

  Args:
    x: (batch, height, width, channels).
    window: square window side.
    stride: step between windows along both axes.
    padding: "VALID" or "SAME".

  Returns:
    The pooled batch, (batch, out_height, out_width, channels).
  """
  if x.ndim != 4:
    raise ValueError(f"max_pool expects an NHWC batch; got shape {x.shape}")
  if padding not in ("VALID", "SAME"):
    raise ValueError(f"{padding=} must be 'VALID' or 'SAME'")
  x = _max_pool_axis(x, 1, window, stride, padding)
  return _max_pool_axis(x, 2, window, stride, padding)


def _spare_row_conv(lhs, rhs, window_strides, padding, lhs_dilation,
                    rhs_dilation, dimension_numbers, feature_group_count,
                    precision):
  """The CPU branch: one output row taller than the input, then sliced."""
  height = lhs.shape[1]
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2],
                                  window_strides, padding)
  (low, high), pads_w = padding
  out_height = height + low + high - rhs.shape[0] + 1
  spare = height + 1 - out_height
  out = lax.conv_general_dilated(
      lhs, rhs, window_strides, ((low, high + spare), pads_w),
      lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count, precision=precision)
  return out[:, :out_height]


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array,
                         window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]],
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers=None,
                         feature_group_count: int = 1,
                         batch_group_count: int = 1,
                         precision=None,
                         preferred_element_type=None) -> jax.Array:
  """`jax.lax.conv_general_dilated`, formulated for XLA:CPU's Eigen kernels.

  Same arguments and result as `jax.lax.conv_general_dilated`. The CPU-only
  formulation (see the module docstring) applies to the networks' case: a
  2-D NHWC/HWIO convolution with unit strides and dilations; anything else,
  and every non-CPU platform, runs the plain convolution.

  Returns:
    The convolution of `lhs` with `rhs`.
  """
  plain = lambda lhs, rhs: lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)
  nhwc = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
  unit = lambda v: v is None or all(d == 1 for d in v)
  applies = (
      lhs.ndim == 4 and rhs.ndim == 4
      and lax.conv_dimension_numbers(lhs.shape, rhs.shape,
                                     dimension_numbers) == nhwc
      and unit(window_strides) and unit(lhs_dilation)
      and unit(rhs_dilation) and batch_group_count == 1
      and preferred_element_type is None)
  if applies:
    pads = (lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides,
                                padding) if isinstance(padding, str)
            else padding)
    # With padding, the kernel-gradient convolution of the taller output was
    # rewritten by XLA into a slow generic (non-Eigen) convolution: 3 s per
    # SVHN step. Unpadded ("VALID") convolutions stay on Eigen.
    applies = not any(low or high for low, high in pads)
  if not applies or getattr(_trace, "plain", False):
    return plain(lhs, rhs)
  spare = lambda lhs, rhs: _spare_row_conv(
      lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
      dimension_numbers, feature_group_count, precision)
  return lax.platform_dependent(lhs, rhs, cpu=spare, default=plain)
