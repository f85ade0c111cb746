"""Building blocks shared by the paper's networks.

`max_pool` is the one place the networks pool, so that a faster formulation of
the same function can be swapped in without touching the models.
"""

from __future__ import annotations

import flax.linen as nn
import jax


def max_pool(x: jax.Array, window: int, stride: int,
             padding: str = "VALID") -> jax.Array:
  """Max pooling over the two spatial axes of an NHWC batch."""
  return nn.max_pool(x, (window, window), strides=(stride, stride),
                     padding=padding)
