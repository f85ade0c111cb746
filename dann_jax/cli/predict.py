"""`dann-jax predict RUN_DIR --images SPEC`: a trained model's predictions (and accuracy, where labels exist)."""

from __future__ import annotations

import csv
import io
from pathlib import Path


def register(subparsers) -> None:
  p = subparsers.add_parser(
    "predict",
    help="apply a trained model to images: predictions, accuracy and confusion matrix where labels exist",
    description="Predict the class of each image with a run's model (a `dann-jax train` folder, or `dann-jax "
    "adapt`'s OUT/chosen_s0), preprocessed as in training (resized to 32x32x3, minus the run's pixel mean). Writes "
    "one CSV row per image (its file for a folder, else its index; the class; its probability; the true label if "
    "known) and prints the accuracy and the confusion matrix when labels exist.",
  )
  p.add_argument("run", help="the run folder")
  p.add_argument(
    "--images", required=True, help="folder:PATH (class subfolders or flat), npz:PATH, or a domain name (mnist-m)"
  )
  p.add_argument("--split", choices=("train", "test"), default="test", help="split of a domain name (default test)")
  p.add_argument(
    "--checkpoint", default="final", help="final (default: the newest step), best (--keep-best) or a step number"
  )
  p.add_argument("--out", default=None, help="CSV to write (default RUN/predictions.csv)")
  p.add_argument("--data-dir", default=None, help="data cache (default $DANN_JAX_DATA or ~/.cache/dann_jax)")
  p.set_defaults(func=run)


def run(args) -> int:
  from dann_jax.io import write_text_atomic
  from dann_jax.runner.inference import load_model, predict, scores

  model = load_model(args.run, args.checkpoint, data_dir=args.data_dir)
  preds = predict(model, args.images, split=args.split, data_dir=args.data_dir)
  out = Path(args.out) if args.out else Path(args.run) / "predictions.csv"
  names = preds.class_names or tuple(str(i) for i in range(preds.probabilities.shape[-1]))
  rows = [["image", "class", "probability", "label"]]
  for i, c in enumerate(preds.classes):
    label = "" if preds.labels is None or preds.labels[i] < 0 else names[preds.labels[i]]
    rows.append([preds.paths[i] if preds.paths else i, names[c], f"{preds.probabilities[i, c]:.4f}", label])
  buffer = io.StringIO()
  csv.writer(buffer, lineterminator="\n").writerows(rows)
  write_text_atomic(out, buffer.getvalue())
  print(f"{len(preds.classes):,} images, checkpoint step {model.step:,} of {args.run}; predictions: {out}")
  if preds.labels is not None:
    result = scores(preds.labels, preds.classes, len(names))
    confusion = result["confusion"]
    print(f"accuracy {result['accuracy']:.4f} on the {result['count']:,} labelled images")
    width = max(max(len(n) for n in names), len(str(confusion.max()))) + 1
    print("confusion (rows: true class, columns: predicted)")
    print(" " * width + "".join(f"{n:>{width}}" for n in names))
    for name, row in zip(names, confusion):
      print(f"{name:>{width}}" + "".join(f"{v:>{width}}" for v in row))
  return 0
