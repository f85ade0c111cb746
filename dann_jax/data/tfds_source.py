"""tensorflow-datasets as a source of pixels: reading a prepared dataset into numpy, and preparing one.

Reading never downloads: `read_tfds` opens a dataset already prepared as array_record with `tfds.data_source`
(random access, no TensorFlow needed) and fails with the command that prepares it. `prepare_tfds` is the one step
that needs the web and TensorFlow (`pip install 'dann-jax[tfds]'`). tensorflow_datasets is imported only when one of
them is called. Caching a read split under the data root is `sources.load_tfds_cached`.

References: Netzer et al. 2011 (SVHN, tfds `svhn_cropped`); LeCun et al. (MNIST, tfds `mnist`).
"""

from __future__ import annotations

import logging

import numpy as np

_TFDS_FETCH_COMMAND = {"mnist": "dann-jax data fetch mnist --tfds", "svhn_cropped": "dann-jax data fetch svhn"}


def _tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (heavy; only on this path)

  return tfds


def read_tfds(
  name: str, split: str, *, tfds_dir: str | None = None, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
  """Reads a prepared tfds dataset into numpy arrays (images uint8, labels int64), never downloading.

  Uses `tfds.data_source` (random access over array_record; works without TensorFlow).

  Raises:
    FileNotFoundError: the dataset is not prepared in `tfds_dir` (tfds's default, or $TFDS_DATA_DIR) as
      array_record.
  """
  tfds = _tfds()
  # Probing an unprepared dataset makes tfds warn about version folders it looked for; the error below says it all.
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    source = tfds.data_source(
      name, split=split, data_dir=tfds_dir, download=False, builder_kwargs={"file_format": "array_record"}
    )
  except (KeyError, NotImplementedError, AssertionError, FileNotFoundError, tfds.core.DatasetNotFoundError) as e:
    raise FileNotFoundError(
      f"tfds dataset {name!r} is not prepared as array_record in {tfds_dir or 'the tfds data dir'} ({e}); "
      f"prepare it with `{_TFDS_FETCH_COMMAND.get(name, 'dann-jax data fetch ' + name)}` "
      "(needs the web and `pip install 'dann-jax[tfds]'`)"
    ) from None
  finally:
    absl_logger.setLevel(level)
  images, labels = [], []
  for start in range(0, len(source), chunk):
    records = [source[i] for i in range(start, min(start + chunk, len(source)))]
    images.append(np.stack([np.asarray(r["image"], np.uint8) for r in records]))
    labels.append(np.asarray([r["label"] for r in records], np.int64))
  if not images:
    raise FileNotFoundError(f"tfds dataset {name!r} split {split!r} is empty")
  return np.concatenate(images), np.concatenate(labels)


def prepare_tfds(name: str, *, tfds_dir: str | None = None) -> None:
  """Downloads and prepares a tfds dataset as array_record (the one step that needs the web and TensorFlow)."""
  tfds = _tfds()
  builder = tfds.builder(name, data_dir=tfds_dir, file_format="array_record")
  try:
    builder.download_and_prepare()
  except ImportError as e:
    raise FileNotFoundError(
      f"preparing tfds {name!r} needs TensorFlow ({e}); install it with `pip install 'dann-jax[tfds]'`"
    ) from None
