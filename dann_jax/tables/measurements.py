"""What the Table 1 harness measures on a trained run: linear-SVM heads, subspace alignment, the features comparison.

`run_record` computes, once per finished run, what its record keeps (the network head's accuracy, a linear-SVM head
retrained on the last hidden layer, and subspace alignment for source-only). `feature_analysis` compares source-only
and DANN features (proxy A-distances and a t-SNE figure like the paper's Figure 4) on a seed that finished cleanly,
and keeps the result beside the records.

References: Table 1 and Figure 4 of Ganin & Lempitsky, arXiv 1409.7495; subspace alignment, Fernando et al.,
ICCV 2013.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dann_jax.tables.records import (
  TableArgs,
  clean_seeds,
  failed,
  is_sa_run,
  read_json,
  records_folder,
  run_folder,
  write_json,
)

SVM_TRAIN = 10_000  # labelled images the SVM heads are fitted on
SA_SOURCE = 5_000  # source images for subspace alignment
# Figures like the paper's Fig. 4: MNIST-M on G_f's output, Syn -> SVHN on the
# label predictor's last hidden layer.
TSNE_LAYERS = {"mnist->mnist-m": "features", "syn-digits->svhn": "hidden"}


def _subsample(n: int, k: int, seed: int) -> np.ndarray:
  return np.sort(np.random.default_rng(seed).permutation(n)[:k])


def run_record(result, method: str, seed: int) -> dict:
  """What the table needs of one finished run, computed once from its state.

  The network head's target accuracy (from the run's summary), a linear-SVM
  head retrained on the label predictor's last hidden layer (on target train
  images for train-on-target, else source train images), the step the run
  collapsed at if it did (`dann_jax.training.health`), and for source-only subspace
  alignment on that layer. Kept as JSON beside the table, so the
  table can be rebuilt on a machine that no longer has the run folders.
  """
  from dann_jax.core.methods import get
  from dann_jax.training.evaluation import features
  from dann_jax.training.loop import seed_states
  from dann_jax.validation.baselines import linear_svm_accuracy, subspace_alignment

  data = result.data
  tgt = data.target_test
  labelled = data.target_train if get(method).labelled == "target" else data.source_train
  idx = _subsample(len(labelled), SVM_TRAIN, 0)
  state = seed_states(result.state)[0]
  train_x = features(state, labelled.images[idx], result.mean, "hidden")
  test_x = features(state, tgt.images, result.mean, "hidden")
  summary = result.summary
  record = {
    "pair": summary["pair"],
    "method": method,
    "seed": seed,
    "preset": summary["preset"],
    "steps": summary["steps"],
    "target_accuracy": summary["target_accuracy"]["mean"],
    "source_accuracy": summary["source_accuracy"]["mean"],
    "svm_accuracy": linear_svm_accuracy(train_x, labelled.labels[idx], test_x, tgt.labels),
    "train_seconds": summary.get("train_seconds"),
    "steps_run": summary.get("steps_run"),
    "machine": summary.get("machine"),
    "collapsed_at_step": summary["collapsed_at_step"][0],
  }
  if is_sa_run(method):
    keep = np.isin(idx, _subsample(len(data.source_train), SA_SOURCE, 1))
    sa = subspace_alignment(train_x[keep], labelled.labels[idx][keep], test_x, tgt.labels)
    record["sa"] = {"accuracy": sa.accuracy, "d": sa.d}
  return record


def feature_analysis(spec, args: TableArgs, records: dict, results: dict, data_of) -> tuple[dict | None, str]:
  """Proxy A-distances and the t-SNE figure of source-only vs DANN on one of
  `clean_seeds` (the first whose runs are here), computed once and kept
  beside the records.

  Returns:
    `(analysis, why_not)`: the analysis, or None and why there is none where
    a collapse or missing run folders explain it (else "").
  """
  from dann_jax.plots import tsne_panels
  from dann_jax.runner.runs import load_run
  from dann_jax.validation.analysis import compare_features

  clean = clean_seeds(args, records)
  if not clean:
    collapsed = any(failed(r) for m in ("source_only", "dann") for r in records.get(m, []))
    why = "waiting for a seed whose source-only and DANN runs finish without collapsing or diverging"
    return None, why if collapsed else ""
  path = records_folder(args, spec.name) / "analysis.json"
  analysis = read_json(path)
  if analysis is not None and analysis.get("seed") in clean:
    return analysis, ""
  for seed in clean:
    runs = {}
    for method in ("source_only", "dann"):
      folder = run_folder(args, spec.name, method, seed)
      if seed in results.get(method, {}):
        runs[method] = results[method][seed]
      elif (folder / "summary.json").exists():
        runs[method] = load_run(folder, data=data_of())
    if len(runs) == 2:
      break
  else:
    return None, f"the run folders of seeds {clean} are not on this machine"
  layer = TSNE_LAYERS.get(spec.name, "features")
  figure = Path(args.results) / "table1" / f"tsne_{spec.name.replace('->', '_to_')}_{args.preset}.png"
  comparison = compare_features([("source only", runs["source_only"]), ("DANN", runs["dann"])], layer=layer)
  tsne_panels(comparison.panels, figure, f"{spec.name}, {layer} (t-SNE)")
  analysis = {
    "seed": seed,
    "layer": layer,
    "proxy_a_distance": comparison.proxy_a_distance,
    "tsne": str(figure.relative_to(args.results)),
  }
  write_json(path, analysis)
  return analysis, ""
