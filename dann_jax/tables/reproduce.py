"""Table 1 of Ganin & Lempitsky (arXiv 1409.7495): every digit pair, all four methods.

For each pair: source-only, DANN and train-on-target networks (one run per
seed), subspace alignment on the
source-only network's last hidden layer, linear-SVM heads retrained on that
layer for every method (as the paper did), the fraction of the
source-only -> train-on-target gap that SA and DANN cover, proxy A-distances
and a t-SNE of source-only vs DANN features (the paper's Figure 4).

Runs go to `<runs>/<pair>/<method>_s<seed>/`: a finished run is reused, an unfinished
one continues from its last checkpoint, so an interrupted table resumes where
it stopped. What the table needs of each finished run (accuracies, SVM head,
SA) is kept as a small JSON record under `<results>/table1/records/`, and the
t-SNE figures beside them, so the table can be rebuilt, and extended with runs
done elsewhere (e.g. on a GPU machine), without the run folders.
`table_only=True` trains nothing and writes the table from the finished runs
and records; the other cells say how far their runs got. A pair
whose data is missing on this machine is reported as "not run: <reason>".

This module is the harness's public face; its rooms are `dann_jax.tables.records` (the options, where runs and
records are, the records themselves), `dann_jax.tables.measurements` (SVM heads, subspace alignment and the features
comparison on a trained run), `dann_jax.tables.render` (rows, markdown and JSON) and `dann_jax.tables.harness` (training
or reusing the runs, writing the table); the command's options are `dann_jax.cli.reproduce`'s.

Command: `dann-jax reproduce table1 --preset paper --seeds 3` (see
`dann-jax reproduce table1 --help`).
"""

from __future__ import annotations

from dann_jax.tables.harness import reproduce_table1, run_pair
from dann_jax.tables.measurements import SA_SOURCE, SVM_TRAIN, TSNE_LAYERS, feature_analysis, run_record
from dann_jax.tables.records import SA_RUN, TRAINED, TableArgs, diverged_record
from dann_jax.tables.records import clean_seeds as _clean_seeds
from dann_jax.tables.render import LABELS, pair_row, summary_json, to_markdown

__all__ = [
  "LABELS",
  "SA_RUN",
  "SA_SOURCE",
  "SVM_TRAIN",
  "TRAINED",
  "TSNE_LAYERS",
  "TableArgs",
  "_clean_seeds",
  "diverged_record",
  "feature_analysis",
  "pair_row",
  "reproduce_table1",
  "run_pair",
  "run_record",
  "summary_json",
  "to_markdown",
]
