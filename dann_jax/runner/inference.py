"""Using a trained model: class predictions, and accuracy where labels exist, on new images.

A run folder (from `dann-jax train`, or `dann-jax adapt`'s `chosen_s<seed>/`)
holds everything a prediction needs: the network (run.json), the weights (its
checkpoints) and the preprocessing, i.e. the pixel mean of the run's training
images, recomputed from the data run.json names. Images are read as for
training: a built-in domain by name, a user's `folder:PATH` (class subfolders,
or a flat folder of unlabelled images) or `npz:PATH`, resized to 32x32x3.

  model = dann_jax.load_model("runs/adapt/chosen_s0")
  preds = dann_jax.predict(model, "folder:data/camera")     # classes, probabilities, paths
  scores = dann_jax.evaluate(model, "mnist-m", split="test")  # accuracy and confusion matrix
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Model:
  """A trained state with its preprocessing and class names."""

  state: Any
  mean: np.ndarray
  class_names: tuple[str, ...]
  run_dir: str
  step: int


@dataclasses.dataclass(frozen=True)
class Predictions:
  """Per image: the predicted class and the class probabilities.

  Attributes:
    classes: (N,) predicted class indices.
    probabilities: (N, classes) softmax of the label predictor.
    labels: (N,) known labels (-1 where unknown), or None when no image has one.
    class_names: the name of each class index.
    paths: each image's file for a folder, else None.
  """

  classes: np.ndarray
  probabilities: np.ndarray
  labels: np.ndarray | None
  class_names: tuple[str, ...]
  paths: tuple[str, ...] | None = None


def load_model(run_dir: str | os.PathLike, checkpoint: str | int = "final", *, data_dir=None) -> Model:
  """The model of a run folder at one of its checkpoints.

  Args:
    run_dir: a folder written by `dann-jax train` or `adapt`.
    checkpoint: "final" (the newest step), "best" (the `--keep-best` state) or a step number.
    data_dir: the data cache folder (the run's training data gives its pixel mean).

  Raises:
    FileNotFoundError: no run, or no such checkpoint.
    ValueError: a damaged run folder, or a bad `checkpoint`.
  """
  from dann_jax.data.custom import class_names
  from dann_jax.runner.runs import load_run
  from dann_jax.training import checkpoint as ckpt

  run_dir = Path(run_dir)
  result = load_run(run_dir, data_dir=data_dir)
  state = result.state
  if checkpoint == "best":
    if not (run_dir / "best").is_dir():
      raise FileNotFoundError(f"{run_dir} has no best/ checkpoint; it was trained without --keep-best: use 'final'")
    state = ckpt.restore_checkpoint(run_dir / "best", state)
  elif checkpoint != "final":
    try:
      step = int(checkpoint)
    except (TypeError, ValueError):
      raise ValueError(f"checkpoint={checkpoint!r} must be 'final', 'best' or a step number") from None
    steps = ckpt.all_steps(run_dir / "checkpoint")
    if step not in steps:
      raise FileNotFoundError(f"{run_dir} has no checkpoint at step {step}; its steps: {steps}")
    state = ckpt.restore_checkpoint(run_dir / "checkpoint", state, step)
  if np.asarray(state.step).ndim:
    raise ValueError(f"{run_dir} holds several seeds; predict from a single-seed run")
  return Model(state, result.mean, class_names(result.data.source_train), str(run_dir), int(state.step))


def read_images(spec: str, *, split: str = "test", class_names=None, data_dir=None):
  """(images, labels or None, paths or None) of a domain name, `folder:PATH` or `npz:PATH`.

  A folder's class subfolders (an .npz's labels) are matched to `class_names`; `split` picks a built-in domain's
  split."""
  from dann_jax.data import custom
  from dann_jax.data.domains import KNOWN_DOMAINS, load_domain

  if custom.is_spec(spec):
    kind, _, path = spec.partition(":")
    if kind == "folder":
      domain = custom.load_folder(path, classes=class_names or None)
      paths = tuple(str(p) for p in custom.image_paths(path, classes=class_names or None))
    else:
      domain, paths = custom.load_npz(path, classes=class_names or None), None
  elif spec in KNOWN_DOMAINS:
    domain, paths = load_domain(spec, split, data_dir=data_dir), None
  else:
    raise ValueError(f"images {spec!r}: give folder:PATH, npz:PATH or a domain name ({', '.join(KNOWN_DOMAINS)})")
  labels = np.asarray(domain.labels)
  return domain.images, (labels if np.any(labels >= 0) else None), paths


def predict(model: Model, images, *, split: str = "test", data_dir=None) -> Predictions:
  """Predictions of `model` on `images`: a uint8 (N, 32, 32, 3) array, a domain name, `folder:` or `npz:`."""
  from dann_jax.training.evaluation import features
  from dann_jax.validation.selection import softmax

  labels = paths = None
  if isinstance(images, str):
    images, labels, paths = read_images(images, split=split, class_names=model.class_names, data_dir=data_dir)
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
    raise ValueError(f"images of dtype {images.dtype} and shape {images.shape}: give uint8 (N, 32, 32, 3)")
  probabilities = softmax(features(model.state, images, model.mean, "logits")).astype(np.float32)
  _check_label_range(labels, probabilities.shape[-1])
  return Predictions(np.argmax(probabilities, -1), probabilities, labels, model.class_names, paths)


def _check_label_range(labels, num_classes: int) -> None:
  if labels is not None and np.max(labels, initial=-1) >= num_classes:
    raise ValueError(
      f"the images' labels reach {int(np.max(labels))} but the model predicts {num_classes} classes: their label "
      "sets differ; give images of the model's own classes"
    )


def evaluate(model: Model, images, labels=None, *, split: str = "test", data_dir=None) -> dict[str, Any]:
  """Accuracy and confusion matrix of `model` on labelled images (rows with label -1 are left out).

  Returns:
    {"accuracy", "count", "confusion": (classes, classes) counts, rows true class, columns predicted}.

  Raises:
    ValueError: no image has a label.
  """
  preds = predict(model, images, split=split, data_dir=data_dir)
  labels = preds.labels if labels is None else np.asarray(labels)
  if labels is None or not np.any(labels >= 0):
    raise ValueError("no image has a label: evaluate needs labelled images (class subfolders, or labels in the .npz)")
  _check_label_range(labels, preds.probabilities.shape[-1])
  return scores(labels, preds.classes, preds.probabilities.shape[-1])


def scores(labels: np.ndarray, classes: np.ndarray, num_classes: int) -> dict[str, Any]:
  """Accuracy and confusion matrix of predicted `classes` against `labels` (-1: unknown, left out)."""
  labels, classes = np.asarray(labels), np.asarray(classes)
  known = labels >= 0
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels[known], classes[known]), 1)
  return {
    "accuracy": float(np.mean(classes[known] == labels[known])),
    "count": int(known.sum()),
    "confusion": confusion,
  }
