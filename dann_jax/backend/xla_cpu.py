"""XLA:CPU tuning: faster formulations of the networks' pooling and convolution, and the CPU jit.

Nothing here changes what is computed; it changes how XLA:CPU is asked to
compute it. `tuned(factory)` builds a network of `dann_jax.core.models` with the
layers below instead of stock Flax's; `cpu_jit` is the jit `dann_jax.training.loop`
and `dann_jax.training.evaluation` compile with. Both layers are drop-in replacements:

* `max_pool` computes `flax.linen.max_pool` as a selection: the index of
  each window's first maximal entry (row-major, as `select_and_scatter`
  picks it) is found without gradient, and the entry at that index is
  selected, so values and gradients equal the plain layer's, ties included
  (a window holding a NaN yields NaN like `reduce_window`, but sends its
  gradient to the NaN, where `select_and_scatter` picks another entry).
  XLA:CPU lowers the plain `reduce_window` gradient to `select_and_scatter`,
  which took ~42 ms for the first pool of the MNIST network on a 2-core CPU.
  Windows that tile the axes (window == stride, the MNIST net) are a masked
  sum over a (rows, window, cols, window) view, whose gradient is one
  elementwise select; overlapping ones (the SVHN net's 3x3/2) are pooled one
  axis at a time over strided slices.
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
  `plain_convolutions()` (no spare rows) and compiles them with
  `CPU_COMPILER_OPTIONS`, among them `EIGEN_CONVOLUTIONS`, an XLA option that
  takes YNNPACK off convolutions only, so every convolution, padded or not,
  runs on Eigen. In that context
  an unpadded convolution also gets a cheaper input gradient: the plain one
  is a convolution of the output gradient padded by k - 1 on both spatial
  axes (1.96x the useful multiply-adds for the MNIST net's second layer);
  here it is one padded in width only, onto the kh input rows stacked as
  channels, then kh shifted adds (1.4x; 12.9 -> 8.3 ms on 2 cores); and an
  input of at most 4 channels (the first layer) is convolved forwards with
  its kh rows stacked as channels (3 -> 15; 7.5 -> 4.8 ms). Same function
  and gradients to float32 rounding, forward- and reverse-mode.

References: the layers of the digit networks of Ganin & Lempitsky,
arXiv 1409.7495 (appendix / JMLR 2016 Fig. 4).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from dann_jax.backend.tracing import TraceFlag

# XLA:CPU debug options for this project's jitted steps: jax 0.10's default
# set of YNNPACK library fusions (individual dots and reductions) without
# individual convolutions, so that every convolution runs on XLA's Eigen
# kernels. Unknown to other backends' compilers only in effect, not in name:
# `cpu_jit` passes them on CPU only.
EIGEN_CONVOLUTIONS = {
  "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}

# What `cpu_jit` compiles with: `EIGEN_CONVOLUTIONS`, and copy insertion by
# region analysis. A step that donates its state updates each parameter in
# place; the default analysis copied parameters still read after their update
# was scheduled (21 copies in the SVHN net's step, among them its 8192x3072
# kernel, 8 ms; 11 with region analysis). Values are unchanged, bit for bit.
CPU_COMPILER_OPTIONS = {**EIGEN_CONVOLUTIONS, "xla_cpu_copy_insertion_use_region_analysis": True}

_PLAIN = TraceFlag()


def plain_convolutions():
  """Within: `conv_general_dilated` computes no spare output rows.

  For functions compiled with `EIGEN_CONVOLUTIONS` (see `cpu_jit`), where the
  spare output row that steers a convolution away from YNNPACK is pure waste.
  Unpadded convolutions get the row-stacked input gradient, and those over
  at most 4 input channels a row-stacked forward (module docstring).
  Only tracing reads it; compiled functions keep what they were traced with.
  """
  return _PLAIN.set()


class _CpuJit:
  """`jax.jit(fun)`, or on CPU: traced under `plain_convolutions()` and
  compiled with `CPU_COMPILER_OPTIONS`. The backend is looked up at the first
  call, so that importing the library does not initialise JAX.

  Called inside another transformation (any argument a tracer), it is the
  plain `jax.jit(fun)`: compiler options belong to the outermost jit."""

  def __init__(self, fun: Callable, jit_kwargs: dict[str, Any]):
    functools.update_wrapper(self, fun)
    self._fun, self._jit_kwargs, self._jitted = fun, jit_kwargs, None
    self._nested = jax.jit(fun, **jit_kwargs)

  def _compiled(self):
    if self._jitted is None:
      if jax.default_backend() == "cpu":
        self._jitted = jax.jit(_PLAIN.around(self._fun), compiler_options=CPU_COMPILER_OPTIONS, **self._jit_kwargs)
      else:
        self._jitted = self._nested
    return self._jitted

  def __call__(self, *args, **kwargs):
    jitted = self._compiled()
    if jitted is not self._nested and any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((args, kwargs))):
      return self._nested(*args, **kwargs)
    return jitted(*args, **kwargs)

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


def _pads_and_windows(x: jax.Array, axis: int, window: int, stride: int, padding: str) -> tuple[tuple[int, int], int]:
  """The (low, high) padding of one axis and the number of windows on it."""
  ((low, high),) = lax.padtype_to_pads((x.shape[axis],), (window,), (stride,), padding)
  size = (x.shape[axis] + low + high - window) // stride + 1
  if size <= 0:
    raise ValueError(
      f"max_pool {window=} is larger than the input's axis {axis} of size "
      f"{x.shape[axis]} with {padding=}; use 'SAME' padding or a smaller "
      "window"
    )
  return (low, high), size


def _fit_axis(x: jax.Array, axis: int, window: int, stride: int, pads: tuple[int, int], size: int) -> jax.Array:
  """Pads one axis with -inf ("SAME") or drops its remainder ("VALID" with
  window == stride), given its `_pads_and_windows`."""
  low, high = pads
  if low or high:
    config = [(0, 0, 0)] * x.ndim
    config[axis] = (low, high, 0)
    x = lax.pad(x, jnp.array(-jnp.inf, x.dtype), config)
  if window == stride:
    x = lax.slice_in_dim(x, 0, size * window, axis=axis)
  return x


def _first_max(entries: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
  """Elementwise maximum of `entries` and the index of the first entry that
  attains it; a NaN counts as maximal, as in `reduce_window`'s max."""
  best = entries[0]
  dtype = jnp.int8 if len(entries) <= 127 else jnp.int32
  index = jnp.zeros(best.shape, dtype)
  for i, entry in enumerate(entries[1:], 1):
    take = (entry > best) | (jnp.isnan(entry) & ~jnp.isnan(best))
    best = jnp.where(take, entry, best)
    index = jnp.where(take, jnp.asarray(i, dtype), index)
  return best, index


@jax.custom_jvp
def _max_over_tiles(x6: jax.Array) -> jax.Array:
  """Max over axes 2 and 4 of a (n, rows, window, cols, window, c) view."""
  return jnp.max(x6, axis=(2, 4))


@_max_over_tiles.defjvp
def _max_over_tiles_jvp(primals, tangents):
  # The tangent of the first maximal entry (row-major), as a masked sum over
  # the window axes: exactly one term is not 0. Transposed for reverse mode
  # it is one elementwise select writing the input's layout, where the
  # gradient of a running maximum pads and adds once per entry (first MNIST
  # pool + ReLU backward ~9 -> ~2 ms on 2 cores).
  (x6,), (t6,) = primals, tangents
  window = x6.shape[2]
  out, index = _first_max([x6[:, :, a, :, b, :] for a in range(window) for b in range(window)])
  position = jnp.arange(window * window, dtype=index.dtype)
  hit = index[:, :, None, :, None, :] == position.reshape(1, 1, window, 1, window, 1)
  return out, jnp.sum(jnp.where(hit, t6, 0), axis=(2, 4))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3, 4))
def _max_along(x: jax.Array, axis: int, window: int, stride: int, size: int) -> jax.Array:
  """Max over `size` windows of `window` entries every `stride` on `axis`."""
  return _first_max(_strided_entries(x, axis, window, stride, size))[0]


@_max_along.defjvp
def _max_along_jvp(axis, window, stride, size, primals, tangents):
  (x,), (t,) = primals, tangents
  out, index = _first_max(_strided_entries(x, axis, window, stride, size))
  entries = _strided_entries(t, axis, window, stride, size)
  selected = entries[-1]
  for i in range(window - 2, -1, -1):
    selected = jnp.where(index == i, entries[i], selected)
  return out, selected


def _strided_entries(x, axis, window, stride, size):
  return [lax.slice_in_dim(x, offset, offset + (size - 1) * stride + 1, stride, axis=axis) for offset in range(window)]


def max_pool(x: jax.Array, window: int, stride: int, padding: str = "VALID") -> jax.Array:
  """Max pooling over the two spatial axes of an NHWC batch.

  Equal to `nn.max_pool(x, (window, window), (stride, stride), padding)`
  in value and in gradient, for any sizes, including windows that overlap
  ("SAME" 3x3 stride 2) and sizes that the stride does not divide (the
  remainder is dropped for "VALID", padded with -inf for "SAME"). Like
  `nn.max_pool`'s gradient (`select_and_scatter`), each window's gradient goes
  to its first maximal entry in row-major order, also at ties (a NaN counts
  as maximal, for the gradient too). Forward- and reverse-mode
  differentiable. Off CPU (the backend JAX defaults to) it is
  `lax.reduce_window`, as `nn.max_pool` computes it.

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
  (row_pads, rows), (col_pads, cols) = (_pads_and_windows(x, axis, window, stride, padding) for axis in (1, 2))
  if jax.default_backend() != "cpu":
    # The formulation below is for XLA:CPU; GPU and TPU compilers have good
    # max-pool gradients of their own (H200: the plain step was a little
    # faster). Same values and gradients either way.
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1), (1, stride, stride, 1), padding)
  x = _fit_axis(x, 1, window, stride, row_pads, rows)
  x = _fit_axis(x, 2, window, stride, col_pads, cols)
  if window != stride:
    # Overlapping windows, one axis at a time: the first maximum of a window
    # in row-major order is, in the first row that holds the window's
    # maximum, that row's first maximal column; so a first-maximum pool over
    # columns, then one over rows, routes the gradient exactly like
    # `select_and_scatter`, with 2 * window strided slices, not window**2.
    return _max_along(_max_along(x, 2, window, stride, cols), 1, window, stride, rows)
  n, _, _, c = x.shape
  return _max_over_tiles(x.reshape(n, rows, window, cols, window, c))


def _spare_row_conv(
  lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, precision
):
  """The CPU branch: one output row taller than the input, then sliced."""
  height = lhs.shape[1]
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  (low, high), pads_w = padding
  out_height = height + low + high - rhs.shape[0] + 1
  spare = height + 1 - out_height
  out = lax.conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    ((low, high + spare), pads_w),
    lhs_dilation=lhs_dilation,
    rhs_dilation=rhs_dilation,
    dimension_numbers=dimension_numbers,
    feature_group_count=feature_group_count,
    precision=precision,
  )
  return out[:, :out_height]


_NHWC = ("NHWC", "HWIO", "NHWC")
_FEW_CHANNELS = 4


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _valid_conv(lhs: jax.Array, rhs: jax.Array, precision=None) -> jax.Array:
  """The unpadded, unit-stride NHWC/HWIO convolution, with an input gradient
  that computes less of the zero padding (see `_valid_conv_jvp`)."""
  if lhs.shape[3] <= _FEW_CHANNELS:
    # Eigen runs a convolution over 3 channels far below its rate over 32;
    # stacking the kh rows on the channel axis (3 -> 15 for the MNIST net's
    # first layer) costs a 7 MB copy and ran 7.5 -> 4.8 ms on 2 cores. Over
    # 32 channels the stacked form was slower (5.5 -> 9.7 ms).
    return _row_stacked_conv(lhs, rhs, precision)
  return lax.conv_general_dilated(lhs, rhs, (1, 1), "VALID", dimension_numbers=_NHWC, precision=precision)


def _row_stacked_conv(lhs: jax.Array, rhs: jax.Array, precision=None) -> jax.Array:
  """`_valid_conv` as a 1 x kw convolution over the kh input rows each output
  row sees, stacked on the channel axis: the same sums, in another order."""
  kh, kw, cin, cout = rhs.shape
  rows = lhs.shape[1] - kh + 1
  stacked = jnp.concatenate([lhs[:, a : a + rows] for a in range(kh)], axis=-1)
  kernel = rhs.transpose(1, 0, 2, 3).reshape(1, kw, kh * cin, cout)
  return lax.conv_general_dilated(stacked, kernel, (1, 1), "VALID", dimension_numbers=_NHWC, precision=precision)


def _valid_conv_jvp(precision, primals, tangents):
  # Reverse mode transposes these tangent maps; nothing here runs forwards
  # under `jax.grad`. The kernel's tangent map is the plain convolution, so
  # its transpose is the plain kernel-gradient convolution. The input's is
  # written row-stacked: its transpose is then a convolution padded in width
  # only (dy -> (n, rows, w, kh * cin)) followed by kh shifted adds over
  # rows, where the plain transpose pads both spatial axes by k - 1. For the
  # MNIST net's second layer that is 1.96x -> 1.4x the useful multiply-adds:
  # 12.9 -> 8.3 ms on 2 cores (XLA:CPU, Eigen).
  lhs, rhs = primals
  lhs_dot, rhs_dot = tangents
  out = _valid_conv(lhs, rhs, precision)
  out_dot = jnp.zeros_like(out)
  if not isinstance(rhs_dot, SymbolicZero):
    out_dot = out_dot + lax.conv_general_dilated(
      lhs, rhs_dot, (1, 1), "VALID", dimension_numbers=_NHWC, precision=precision
    )
  if not isinstance(lhs_dot, SymbolicZero):
    out_dot = out_dot + _row_stacked_conv(lhs_dot, rhs, precision)
  return out, out_dot


_valid_conv.defjvp(_valid_conv_jvp, symbolic_zeros=True)


def conv_general_dilated(
  lhs: jax.Array,
  rhs: jax.Array,
  window_strides: Sequence[int],
  padding: str | Sequence[tuple[int, int]],
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers=None,
  feature_group_count: int = 1,
  batch_group_count: int = 1,
  precision=None,
  preferred_element_type=None,
  out_sharding=None,
) -> jax.Array:
  """`jax.lax.conv_general_dilated`, formulated for XLA:CPU's Eigen kernels.

  Same arguments and result as `jax.lax.conv_general_dilated`. The CPU-only
  formulation (see the module docstring) applies to the networks' case: a
  2-D NHWC/HWIO convolution with unit strides and dilations; anything else,
  and any default backend other than CPU (looked up when tracing), runs the
  plain convolution.

  Returns:
    The convolution of `lhs` with `rhs`.
  """
  plain = lambda lhs, rhs: lax.conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=lhs_dilation,
    rhs_dilation=rhs_dilation,
    dimension_numbers=dimension_numbers,
    feature_group_count=feature_group_count,
    batch_group_count=batch_group_count,
    precision=precision,
    preferred_element_type=preferred_element_type,
    out_sharding=out_sharding,
  )
  nhwc = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
  unit = lambda v: v is None or all(d == 1 for d in v)
  applies = (
    lhs.ndim == 4
    and rhs.ndim == 4
    and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc
    and unit(window_strides)
    and unit(lhs_dilation)
    and unit(rhs_dilation)
    and batch_group_count == 1
    and preferred_element_type is None
    and out_sharding is None
  )
  if applies:
    pads = (
      lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
      if isinstance(padding, str)
      else padding
    )
    # With padding, the kernel-gradient convolution of the taller output was
    # rewritten by XLA into a slow generic (non-Eigen) convolution: 3 s per
    # SVHN step. Unpadded ("VALID") convolutions stay on Eigen.
    applies = not any(low or high for low, high in pads)
  if not applies or jax.default_backend() != "cpu":
    return plain(lhs, rhs)
  if _PLAIN.is_set():
    if feature_group_count != 1:
      return plain(lhs, rhs)
    return _valid_conv(lhs, rhs, precision)
  return _spare_row_conv(
    lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, precision
  )


def tuned(factory: Callable[..., Any]) -> Callable[..., Any]:
  """`factory` (e.g. `dann_jax.core.models.mnist_dann`) building its network with
  this module's `conv_general_dilated` and `max_pool`.

  The parameters are those of the stock network (same names and shapes), so
  states and checkpoints move between the two.
  """

  @functools.wraps(factory)
  def build(*args, **kwargs):
    return factory(*args, conv_general_dilated=conv_general_dilated, max_pool=max_pool, **kwargs)

  return build
