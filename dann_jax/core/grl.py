"""The gradient reversal layer (GRL): identity forward, gradient times -λ backward.

The GRL is what turns one ordinary SGD step into a step towards the saddle point
of E = L_y - λ L_d: placed between the feature extractor and the domain
classifier, it lets the domain classifier descend L_d while the features ascend
it. It has no parameters.

References: Eq. (7)-(8), "pseudo-function" R_λ, of Ganin & Lempitsky,
arXiv 1409.7495 (Sec. 3.2).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gradient_reversal(x, lam):
  """Returns `x` unchanged; its backward pass multiplies cotangents by `-lam`.

  Args:
    x: an array or any pytree of arrays.
    lam: the adaptation factor λ, a Python float or a 0-d array. It is an
      ordinary (traced) argument, so changing it between calls of a jitted
      function does not recompile, and it may be batched by `jax.vmap`.

  Returns:
    `x`, as is.

  Raises:
    ValueError: if `lam` is None or not a scalar.
  """
  if lam is None or jnp.ndim(lam) != 0:
    shape = None if lam is None else jnp.shape(lam)
    raise ValueError(
      f"gradient_reversal: lam must be a scalar (a float or 0-d array), got "
      f"{'None' if lam is None else f'shape {shape}'}; to scale features "
      "differently, scale them before the layer"
    )
  return _reverse(x, lam)


@jax.custom_vjp
def _reverse(x, lam):
  del lam
  return x


def _forward(x, lam):
  return x, lam


def _backward(lam, cotangent):
  reversed_cotangent = jax.tree.map(lambda g: (-lam * g).astype(g.dtype), cotangent)
  # λ is a schedule value, not a parameter: no gradient flows into it.
  return reversed_cotangent, jnp.zeros_like(lam)


_reverse.defvjp(_forward, _backward)
