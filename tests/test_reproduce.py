"""The Table 1 harness keeps a record per finished run, so the table survives the loss of its run folders."""

import json
import shutil
from pathlib import Path

import pytest
from helpers import table1_args

from dann_jax.cli import main


def _train(runs, method):
  out = runs / "mnist_to_mnist-dilated" / f"{method}_s0"
  assert (
    main(
      [
        "train",
        "--source",
        "mnist",
        "--target",
        "mnist-dilated",
        "--method",
        method.replace("_", "-"),
        "--steps",
        "4",
        "--batch-size",
        "8",
        "--no-progress",
        "--out",
        str(out),
      ]
    )
    == 0
  )
  return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_records_rebuild_the_table_without_the_run_folders(tiny_mnist, tmp_path, capsys):
  runs, results = tmp_path / "runs", tmp_path / "results"
  summaries = {m: _train(runs, m) for m in ("source_only", "dann", "target_only")}
  table_args = table1_args(["mnist->mnist-dilated"], runs, results, "--table-only", "--no-progress")
  assert main(table_args) == 0
  first = json.loads((results / "table1_quick.json").read_text())
  records = results / "table1" / "records" / "quick_4steps" / "mnist_to_mnist-dilated"
  assert sorted(p.name for p in records.iterdir()) == [
    "analysis.json",
    "dann_s0.json",
    "source_only_s0.json",
    "target_only_s0.json",
  ]
  so = json.loads((records / "source_only_s0.json").read_text())
  assert so["collapsed_at_step"] is None and all(s["collapsed_at_step"] == [None] for s in summaries.values())
  assert so["target_accuracy"] == summaries["source_only"]["target_accuracy"]["mean"]
  assert 0.0 <= so["svm_accuracy"] <= 1.0 and "accuracy" in so["sa"] and so["steps"] == 4
  cells = first["pairs"]["mnist->mnist-dilated"]
  assert cells["dann"] == summaries["dann"]["target_accuracy"]["per_seed"]
  assert set(cells) == {"source_only", "dann", "target_only", "sa", "status"} and cells["status"] == {}
  row = first["details"][0]
  so_mean, to_mean = (summaries[m]["target_accuracy"]["mean"] for m in ("source_only", "target_only"))
  if to_mean != so_mean:
    assert row["gap_covered"]["dann"] == pytest.approx(
      (summaries["dann"]["target_accuracy"]["mean"] - so_mean) / (to_mean - so_mean)
    )
  assert (results / row["tsne"]).read_bytes()[:4] == b"\x89PNG"

  # a run whose summary predates `collapsed_at_step`: its record reads it from metrics.jsonl
  summary_path = runs / "mnist_to_mnist-dilated" / "dann_s0" / "summary.json"
  old = json.loads(summary_path.read_text())
  del old["collapsed_at_step"]
  summary_path.write_text(json.dumps(old))
  metrics = summary_path.parent / "metrics.jsonl"
  kept_metrics, kept_record = metrics.read_text(), (records / "dann_s0.json").read_text()
  metrics.write_text("".join(json.dumps({"step": s, "label_loss": v}) + "\n" for s, v in ((2, 0.1), (4, 2.3))))
  (records / "dann_s0.json").unlink()
  assert main(table_args) == 0
  rebuilt = json.loads((records / "dann_s0.json").read_text())
  assert rebuilt["collapsed_at_step"] == 4 and rebuilt["steps_run"] == 4
  metrics.write_text(kept_metrics)
  (records / "dann_s0.json").write_text(kept_record)

  shutil.rmtree(runs)  # a later session: the run folders are gone, the records remain
  assert main(table_args) == 0
  again = json.loads((results / "table1_quick.json").read_text())
  assert again["pairs"] == first["pairs"]
  for key in ("network_head", "svm_head", "gap_covered", "proxy_a_distance", "tsne", "sa_dimension"):
    assert again["details"][0].get(key) == row.get(key)
  assert "seed 0: not started" not in (results / "table1_quick.md").read_text()

  # two seeds asked for, one finished: the table shows the finished seed and names the other
  assert (
    main(table1_args(["mnist->mnist-dilated"], runs, results, "--table-only", "--no-progress", "--seeds", "2")) == 0
  )
  partial = json.loads((results / "table1_quick.json").read_text())["pairs"]["mnist->mnist-dilated"]
  assert partial["dann"] == first["pairs"]["mnist->mnist-dilated"]["dann"]
  assert partial["status"] == {m: "seed 1: not started" for m in ("source_only", "dann", "target_only")}
  text = (results / "table1_quick.md").read_text()
  dann_mean = summaries["dann"]["target_accuracy"]["mean"]
  assert f"| DANN | {dann_mean:.4f} [0.9830]; seed 1: not started |" in text


def _record(method, seed, accuracy, collapsed_at_step=None):
  record = {
    "pair": "mnist->mnist-dilated",
    "method": method,
    "seed": seed,
    "preset": "quick",
    "steps": 4,
    "target_accuracy": accuracy,
    "source_accuracy": 0.9,
    "svm_accuracy": accuracy,
    "train_seconds": 1.0,
    "machine": "test",
    "collapsed_at_step": collapsed_at_step,
  }
  if method == "source_only":
    record["sa"] = {"accuracy": accuracy, "d": 2}
  return record


def test_a_collapsed_seed_is_named_and_kept_out_of_the_feature_analysis(tmp_path):
  runs, results = tmp_path / "runs", tmp_path / "results"
  records = results / "table1" / "records" / "quick_4steps" / "mnist_to_mnist-dilated"
  records.mkdir(parents=True)
  for record in (
    _record("source_only", 0, 0.6),
    _record("dann", 0, 0.1, collapsed_at_step=4100),
    _record("target_only", 0, 0.9),
    _record("source_only", 1, 0.7),
    _record("dann", 1, 0.8) | {"steps_run": 2},  # resumed half-way: 1 s for 2 of its 4 steps
  ):
    (records / f"{record['method']}_s{record['seed']}.json").write_text(json.dumps(record))
  flags = ("--table-only", "--no-progress", "--seeds", "2")
  assert main(table1_args(["mnist->mnist-dilated"], runs, results, *flags)) == 0
  table = json.loads((results / "table1_quick.json").read_text())
  row = table["details"][0]
  assert row["collapsed"] == {"dann": [{"seed": 0, "step": 4100}]}
  # the collapsed seed counts in the mean as trained
  assert table["pairs"]["mnist->mnist-dilated"]["dann"] == [0.1, 0.8]
  assert row["gap_covered"]["dann"] == pytest.approx((0.45 - 0.65) / (0.9 - 0.65))
  assert row["train_seconds"]["dann"] == pytest.approx((1.0 + 2.0) / 2)
  # seed 1 is clean, but its run folders are not here to analyse
  assert "proxy_a_distance" not in row and not (records / "analysis.json").exists()
  text = (results / "table1_quick.md").read_text()
  assert "| DANN | 0.4500 ± 0.3500 (0.100/0.800) [0.9830]; seed 0 collapsed at step 4,100 |" in text
  assert "proxy A-distance and t-SNE: the run folders of seeds [1] are not on this machine" in text

  # an analysis kept from seed 0, before its collapse was known, is not used; one of seed 1 is
  analysis = {"seed": 0, "layer": "features", "proxy_a_distance": {"source only": 1.5, "DANN": 0.0}, "tsne": "t.png"}
  (records / "analysis.json").write_text(json.dumps(analysis))
  assert main(table1_args(["mnist->mnist-dilated"], runs, results, *flags)) == 0
  assert "proxy_a_distance" not in json.loads((results / "table1_quick.json").read_text())["details"][0]
  (records / "analysis.json").write_text(json.dumps(analysis | {"seed": 1}))
  assert main(table1_args(["mnist->mnist-dilated"], runs, results, *flags)) == 0
  row = json.loads((results / "table1_quick.json").read_text())["details"][0]
  assert row["analysis_seed"] == 1 and row["proxy_a_distance"]["DANN"] == 0.0
  assert "t-SNE (seed 1): [t.png](t.png)" in (results / "table1_quick.md").read_text()

  # no clean seed: the table says what it waits for
  (records / "dann_s1.json").unlink()
  assert main(table1_args(["mnist->mnist-dilated"], runs, results, *flags)) == 0
  text = (results / "table1_quick.md").read_text()
  assert "waiting for a seed whose source-only and DANN runs finish without collapsing" in text


def test_clean_seeds_have_both_runs_finished_without_a_collapse():
  from dann_jax.tables.reproduce import TableArgs, _clean_seeds

  args = TableArgs(seeds=[0, 1, 2, 3], pairs=["mnist->mnist-dilated"])
  records = {
    "source_only": [_record("source_only", s, 0.6) for s in (0, 1, 2, 3)],
    "dann": [_record("dann", 0, 0.1, 4100), _record("dann", 2, 0.8), _record("dann", 3, 0.8)],
  }
  assert _clean_seeds(args, records) == [2, 3]  # seed 1's DANN has not finished
  records["source_only"][2]["collapsed_at_step"] = 300
  assert _clean_seeds(args, records) == [3]


def test_a_diverged_seed_is_recorded_once_and_left_out_of_the_mean(tiny_mnist, tmp_path, monkeypatch):
  import dann_jax.runner.runs
  from dann_jax.training.loop import Diverged

  runs, results = tmp_path / "runs", tmp_path / "results"
  records = results / "table1" / "records" / "quick_4steps" / "mnist_to_mnist-dilated"
  records.mkdir(parents=True)
  for record in (_record("source_only", 0, 0.6), _record("dann", 0, 0.8), _record("target_only", 0, 0.9)):
    (records / f"{record['method']}_s{record['seed']}.json").write_text(json.dumps(record))
  calls = []

  def diverging(spec, method, out_dir, **kwargs):
    calls.append((method, kwargs["seeds"]))
    raise Diverged(2806)

  monkeypatch.setattr(dann_jax.runner.runs, "train_or_reuse", diverging)
  argv = table1_args(["mnist->mnist-dilated"], runs, results, "--no-progress", "--seeds", "2", "--methods", "dann")
  assert main(argv) == 0
  assert calls == [("dann", [1])]
  kept = json.loads((records / "dann_s1.json").read_text())
  assert kept["diverged_at_step"] == 2806 and kept["target_accuracy"] is None and kept["steps"] == 4
  table = json.loads((results / "table1_quick.json").read_text())
  cells = table["pairs"]["mnist->mnist-dilated"]
  assert cells["dann"] == [0.8] and cells["diverged"] == {"dann": [{"seed": 1, "step": 2806}]}
  assert "dann" not in cells["status"]  # finished, if badly
  text = (results / "table1_quick.md").read_text()
  assert "| DANN | 0.8000 [0.9830]; seed 1 diverged at step 2,806 (not in the mean) |" in text
  assert "A diverged seed's loss became non-finite" in text
  assert main(argv) == 0 and len(calls) == 1  # the record stands: not trained again

  # a run folder that diverged elsewhere (no record here): read from its diverged.json, not trained
  folder = runs / "mnist_to_mnist-dilated" / "source_only_s1"
  folder.mkdir(parents=True)
  (folder / "diverged.json").write_text(json.dumps({"step": 77}))
  assert main(table1_args(["mnist->mnist-dilated"], runs, results, "--no-progress", "--seeds", "2")) == 0
  assert len(calls) == 2 and calls[-1] == ("target_only", [1])  # only the run with nothing to read
  cells = json.loads((results / "table1_quick.json").read_text())["pairs"]["mnist->mnist-dilated"]
  assert cells["diverged"]["source_only"] == [{"seed": 1, "step": 77}]


def test_table_only_without_pairs_tabulates_the_pairs_that_have_runs(tmp_path):
  from dann_jax.cli.reproduce import main as reproduce_main

  runs, results = tmp_path / "runs", tmp_path / "results"
  records = results / "table1" / "records" / "quick_4steps" / "mnist_to_mnist-dilated"
  records.mkdir(parents=True)
  for method in ("source_only", "dann", "target_only"):
    (records / f"{method}_s0.json").write_text(json.dumps(_record(method, 0, 0.5)))
  (runs / "mnist_to_mnist-max-bg" / "dann_s0").mkdir(parents=True)  # begun, nothing logged yet
  (runs / "mnist_to_mnist-m").mkdir(parents=True)  # an empty folder is not a run
  flags = ["--steps", "4", "--runs", str(runs), "--results", str(results), "--table-only", "--no-progress"]
  assert reproduce_main(flags) == 0
  table = json.loads((results / "table1_quick.json").read_text())
  assert list(table["pairs"]) == ["mnist->mnist-dilated", "mnist->mnist-max-bg"]
  assert table["pairs"]["mnist->mnist-dilated"]["dann"] == [0.5]
  assert table["pairs"]["mnist->mnist-max-bg"]["status"]["dann"] == "seed 0: not started"

  # the command is written as a shell would need it: a quoted pair is not a redirection
  assert reproduce_main([*flags, "--pairs", "mnist->mnist-dilated"]) == 0
  command = json.loads((results / "table1_quick.json").read_text())["command"]
  assert "--pairs 'mnist->mnist-dilated'" in command


def test_table_only_writes_under_the_runs_folder_by_default_and_prints_the_table(
  tiny_mnist, tmp_path, capsys, monkeypatch
):
  monkeypatch.chdir(tmp_path)
  argv = ["reproduce", "table1", "--pairs", "mnist->mnist-dilated", "--steps", "4", "--table-only", "--no-progress"]
  assert main(argv) == 0
  out = capsys.readouterr().out
  stem = Path("runs/table1_quick/table1_quick")
  assert (tmp_path / stem.with_suffix(".md")).exists() and (tmp_path / stem.with_suffix(".json")).exists()
  assert not (tmp_path / "experiments").exists()  # nothing tracked is written unless asked
  assert f"wrote {stem.with_suffix('.md')} and {stem.with_suffix('.json')}" in out
  assert "| method | mnist->mnist-dilated |" in out and "{" not in out.splitlines()[0]
  assert main([*argv, "--json"]) == 0
  assert json.loads(capsys.readouterr().out.splitlines()[0])["pair"] == "mnist->mnist-dilated"
