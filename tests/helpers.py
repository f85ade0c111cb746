"""Plain helpers shared by several test files (fixtures live in conftest.py).

pytest puts this folder on `sys.path` (no `__init__.py`, the default import mode), so tests use `from helpers import ...`.
"""

import jax
import jax.numpy as jnp
import numpy as np

from dann_jax.core import models, train

# A 4-step `dann-jax train` on the tiny stand-in MNIST (the `tiny_mnist` fixture).
TRAIN = ["train", "--source", "mnist", "--target", "mnist-m", "--steps", "4", "--batch-size", "8", "--no-progress"]


def image_batch(key, n=8):
  """A random batch of `n` 32x32x3 images in the train step's format, first half source."""
  k1, k2 = jax.random.split(key)
  domain = jnp.array([0] * (n // 2) + [1] * (n // 2), jnp.int32)
  return {
    "image": jax.random.normal(k1, (n, 32, 32, 3)),
    "label": jax.random.randint(k2, (n,), 0, 10),
    "domain": domain,
    "label_mask": domain == 0,
  }


def linen_state(config, batch, factory=models.mnist_dann):
  """A fresh Linen train state of `factory()`, initialised on `batch`'s images."""
  return train.create_train_state(factory(), config, batch["image"])


def assert_trees_close(a, b, atol=1e-5, rtol=1e-5):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


def table1_args(pairs, runs, results, *flags):
  """`dann-jax reproduce table1` over `pairs` (a list) at 4 steps, runs under `runs`, tables in `results`."""
  return [
    "reproduce",
    "table1",
    "--pairs",
    *pairs,
    "--steps",
    "4",
    "--runs",
    str(runs),
    "--results",
    str(results),
    *flags,
  ]
