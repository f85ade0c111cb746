"""The networks runs train, by name: the paper's MNIST and SVHN nets, for the Linen door and bridged for the NNX one.

This is the one place that chooses the XLA:CPU-fast layers (`dann_jax.backend.xla_cpu.tuned`: the same functions; off
CPU the layers are the stock ones). The networks themselves are defined once, in `dann_jax.core.models`.
"""

from __future__ import annotations

from flax import nnx

from dann_jax.backend.xla_cpu import tuned
from dann_jax.core import nnx as dann_nnx
from dann_jax.core.models import DANN, mnist_dann, svhn_dann

NETWORKS = {"mnist": tuned(mnist_dann), "svhn": tuned(svhn_dann)}
# The same networks bridged to NNX (`dann_jax.core.nnx`): one definition, two front doors.
NNX_NETWORKS = {name: dann_nnx.bridged(factory) for name, factory in NETWORKS.items()}


def build(network: str, num_classes: int = 10) -> DANN:
  """The untrained Linen network `network` ("mnist" or "svhn")."""
  return NETWORKS[network](num_classes)


def build_nnx(
  network: str, num_classes: int = 10, input_shape: tuple[int, int, int] = (32, 32, 3), seed: int = 0
) -> dann_nnx.DANN:
  """`build(network)` bridged to NNX, initialised from `nnx.Rngs(seed)` (its weights are not a Linen
  network's; `dann_jax.core.nnx.from_linen` copies them in)."""
  return NNX_NETWORKS[network](num_classes, rngs=nnx.Rngs(seed), input_shape=tuple(input_shape))
