"""Shared fixtures: an isolated, offline data directory and a tiny stand-in for genuine MNIST (fetched or not)."""

import gzip
import os

# The suite runs in parallel workers (pytest -n 2): on a GPU machine, do not let
# each worker preallocate most of the accelerator's memory.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np
import pytest

from dann_jax.data import sources


@pytest.fixture
def offline_data_dir(tmp_path, monkeypatch):
  """A fresh `$DANN_JAX_DATA` and an empty tfds dir; pip cannot reach an index (no network in tests)."""
  data_dir = tmp_path / "dann_jax_data"
  monkeypatch.setenv("DANN_JAX_DATA", str(data_dir))
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds_empty"))
  monkeypatch.setenv("PIP_NO_INDEX", "1")
  monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no_links"))
  return data_dir


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
  """A directory of tiny IDX files (40 train, 20 test digits) that the checksum checks accept as MNIST.

  The published md5s and histograms are replaced by those of the tiny arrays, so the real verification code runs.
  Returns (idx_dir, arrays).
  """
  rng = np.random.default_rng(0)
  arrays = {}
  for split, n in (("train", 40), ("test", 20)):
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 6:22, 10:18] = rng.integers(0, 256, size=(n, 16, 8))  # a blob of "ink" in the middle
    arrays[f"{split}_images"] = images
    arrays[f"{split}_labels"] = (np.arange(n) % 10).astype(np.uint8)
  idx_dir = tmp_path / "idx"
  idx_dir.mkdir()
  for name in sources.MNIST_IDX_MD5:
    split = "train" if name.startswith("train") else "test"
    kind = "images" if "images" in name else "labels"
    data = sources.idx_bytes(arrays[f"{split}_{kind}"])
    if kind == "images":
      (idx_dir / f"{name}.gz").write_bytes(gzip.compress(data))
    else:
      (idx_dir / name).write_bytes(data)
  monkeypatch.setattr(sources, "MNIST_IDX_MD5", sources.mnist_idx_md5s(arrays))
  monkeypatch.setattr(
    sources,
    "MNIST_LABEL_HISTOGRAM",
    {split: tuple(np.bincount(arrays[f"{split}_labels"], minlength=10).tolist()) for split in sources.SPLITS},
  )
  return idx_dir, arrays


@pytest.fixture
def tiny_mnist(offline_data_dir, fake_mnist):
  """`fake_mnist` fetched into `offline_data_dir` by `dann-jax data fetch mnist`; returns the data dir."""
  from dann_jax.cli import main

  idx_dir, _ = fake_mnist
  assert main(["data", "fetch", "mnist", "--idx-dir", str(idx_dir), "--no-mirror"]) == 0
  return offline_data_dir
