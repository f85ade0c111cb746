"""dann_jax: domain-adversarial training of neural networks (DANN) in JAX.

The names below are imported on first use, so `import dann_jax` (and the
command line's `--help`) does not pay for importing JAX and Flax.

References: Ganin & Lempitsky, "Unsupervised Domain Adaptation by
Backpropagation", arXiv 1409.7495.
"""

import importlib

# public name -> the module that defines it
_EXPORTS = {
  "DANN": "dann_jax.models",
  "mnist_dann": "dann_jax.models",
  "svhn_dann": "dann_jax.models",
  "TrainConfig": "dann_jax.config",
  "gradient_reversal": "dann_jax.grl",
  "saddle_point_loss": "dann_jax.objective",
  "TrainState": "dann_jax.train",
  "create_train_state": "dann_jax.train",
  "eval_step": "dann_jax.train",
  "train_step": "dann_jax.train",
  "load_model": "dann_jax.inference",
  "predict": "dann_jax.inference",
  "evaluate": "dann_jax.inference",
}
__all__ = sorted([*_EXPORTS, "schedules", "nnx"])
__version__ = "0.1.0"


def __getattr__(name):
  if name in ("schedules", "nnx"):
    return importlib.import_module(f"dann_jax.{name}")
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module 'dann_jax' has no attribute {name!r}")


def __dir__():
  return __all__
