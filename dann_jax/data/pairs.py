"""The paper's digit adaptation pairs, their networks, and the numbers the paper reports; pairs of a user's own data.

References: Table 1 of Ganin & Lempitsky, arXiv 1409.7495 v1 (target-domain
accuracy); ICML 2015 / JMLR 2016 Table 2 for the retrained MNIST-M, Syn->SVHN
and SVHN->MNIST rows; JMLR 2016 Sec. 5.1 for MNIST -> SVHN (about .25 without
adaptation, no gain from DANN).
"""

from __future__ import annotations

import dataclasses

from dann_jax.data import custom
from dann_jax.data.domains import KNOWN_DOMAINS

# Column names of results tables; "sa" is subspace alignment (Fernando et al.,
# ICCV 2013) on the source-only network's last hidden layer.
METHOD_COLUMNS = ("source_only", "sa", "dann", "target_only")


@dataclasses.dataclass(frozen=True)
class PairSpec:
  """One adaptation experiment.

  Attributes:
    source: the labelled source domain (a `dann_jax.data.KNOWN_DOMAINS` name,
      or a user's `folder:PATH` / `npz:PATH`).
    target: the unlabelled target domain (the same forms).
    network: "mnist" or "svhn": the paper uses the MNIST net for MNIST
      sources and the SVHN net otherwise.
    anneal_learning_rate: False for MNIST <-> SVHN, where the paper does not
      anneal.
    paper: the paper's target accuracies (arXiv v1) per method, if any.
    paper_icml: the retrained ICML 2015 / JMLR numbers, if any.
    note: what the paper says where it gives no table entry.
  """

  source: str
  target: str
  network: str
  anneal_learning_rate: bool = True
  paper: dict[str, float] | None = None
  paper_icml: dict[str, float] | None = None
  note: str = ""

  @property
  def name(self) -> str:
    return f"{self.source}->{self.target}"


# One row a pair: source, target, network, then the paper's target accuracies
# per method (source_only, sa, dann, target_only): arXiv v1 Table 1, and the
# retrained ICML 2015 / JMLR 2016 Table 2 where it has the row.
_MNIST_M_V1 = (0.5749, 0.6078, 0.8149, 0.9891)
_MNIST_M_ICML = (0.5225, 0.5690, 0.7666, 0.9596)
_TABLE = (
  ("mnist", "mnist-dilated", "mnist", (0.9678, 0.9702, 0.9830, 0.9878)),
  ("mnist", "mnist-max-bg", "mnist", (0.9173, 0.9197, 0.9476, 0.9848)),
  ("mnist", "mnist-m", "mnist", _MNIST_M_V1, _MNIST_M_ICML),
  # The same row on the MNIST-M the paper's authors distributed (imported
  # with `dann-jax data import mnist-m PATH`).
  ("mnist", "mnist-m-official", "mnist", _MNIST_M_V1, _MNIST_M_ICML),
  ("syn-digits", "svhn", "svhn", (0.8665, 0.8672, 0.9048, 0.9244), (0.8674, 0.8644, 0.9109, 0.9220)),
  ("svhn", "mnist", "svhn", (0.5919, 0.6157, 0.7107, 0.9951), (0.5490, 0.5932, 0.7385, 0.9942)),
  ("mnist", "svhn", "mnist"),
  # Offline extras (not in the paper): a rendered source and a second real
  # handwriting target that need no download.
  ("syn-digits", "mnist", "svhn"),
  ("mnist", "optdigits", "mnist"),
  # Offline extras (not in the paper) once the official USPS files are
  # imported (`dann-jax data import usps PATH`); networks by the paper's
  # rule, the MNIST net for MNIST sources and the SVHN net otherwise.
  ("usps", "mnist", "svhn"),
  ("mnist", "usps", "mnist"),
)
# MNIST <-> SVHN: the paper does not anneal the learning rate.
_NOT_ANNEALED = ("svhn->mnist", "mnist->svhn")
_NOTES = {"mnist->svhn": "JMLR: about .25 without adaptation; DANN gives no gain"}


def _spec(source, target, network, paper=None, paper_icml=None) -> PairSpec:
  """The PairSpec of one `_TABLE` row."""
  name = f"{source}->{target}"
  return PairSpec(
    source,
    target,
    network,
    anneal_learning_rate=name not in _NOT_ANNEALED,
    paper=dict(zip(METHOD_COLUMNS, paper)) if paper else None,
    paper_icml=dict(zip(METHOD_COLUMNS, paper_icml)) if paper_icml else None,
    note=_NOTES.get(name, ""),
  )


PAIRS: dict[str, PairSpec] = {spec.name: spec for spec in (_spec(*row) for row in _TABLE)}

NETWORK_NAMES = ("mnist", "svhn")
CUSTOM_NOTE = "your own data; no paper numbers"


def get_pair(source: str, target: str, *, network: str = "mnist") -> PairSpec:
  """The spec of `source -> target`.

  Args:
    source: a `KNOWN_DOMAINS` name, or a user's `folder:PATH` / `npz:PATH`.
    target: the same forms.
    network: "mnist" or "svhn", the network of a pair with a user's domain
      (the paper preset trains it; the quick preset trains the MNIST net on
      every pair). The paper's pairs have their own.

  Returns:
    One of `PAIRS`; or, when either side is `folder:` / `npz:`, a new spec
    of that pair (its paths made absolute) without paper numbers.

  Raises:
    ValueError: an unknown pair of built-in domains (the message lists the
      known pairs), an unknown domain name beside a user's domain, or an
      unknown network.
  """
  if custom.is_spec(source) or custom.is_spec(target):
    if network not in NETWORK_NAMES:
      raise ValueError(f"{network=} is not a network; use one of {', '.join(NETWORK_NAMES)}")
    sides = []
    for text in (source, target):
      if custom.is_spec(text):
        sides.append(custom.absolute(text))
      elif text in KNOWN_DOMAINS:
        sides.append(text)
      else:
        raise ValueError(
          f"unknown domain {text!r}; use one of {', '.join(KNOWN_DOMAINS)}, or your own data as folder:PATH or npz:PATH"
        )
    return PairSpec(*sides, network, note=CUSTOM_NOTE)
  name = f"{source}->{target}"
  if name not in PAIRS:
    raise ValueError(
      f"unknown pair {name!r}; known pairs: {', '.join(PAIRS)}; or your own data as folder:PATH or npz:PATH"
    )
  return PAIRS[name]
