"""`dann-jax train --api nnx`: the NNX front door end to end, against the Linen one."""

import json

import pytest
from helpers import TRAIN, assert_trees_close

from dann_jax.cli import main
from dann_jax.runner import presets
from dann_jax.runner.runs import load_run
from dann_jax.training import checkpoint


def _rows(out):
  return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_nnx_and_linen_runs_give_the_same_numbers(tiny_mnist, tmp_path, capsys):
  runs = {}
  for api in ("linen", "nnx"):
    out = tmp_path / api
    assert main(TRAIN + ["--api", api, "--keep-best", "source-risk", "--out", str(out)]) == 0
    assert json.loads((out / "run.json").read_text())["api"] == api
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    runs[api] = out
  linen, nnx = (json.loads((runs[a] / "summary.json").read_text()) for a in ("linen", "nnx"))
  for key in ("target_accuracy", "source_accuracy", "source_val_accuracy"):
    assert nnx[key]["per_seed"] == pytest.approx(linen[key]["per_seed"])
  assert nnx["best"]["score"] == pytest.approx(linen["best"]["score"])
  for a, b in zip(_rows(runs["linen"]), _rows(runs["nnx"])):
    assert a.keys() == b.keys()
    assert [b[k] for k in a] == pytest.approx([a[k] for k in a], rel=1e-5)
  # The checkpoints share the Linen layout: load_run reads both alike.
  states = {api: load_run(out).state for api, out in runs.items()}
  assert int(states["nnx"].step) == 4
  assert_trees_close(states["nnx"].params, states["linen"].params, atol=1e-6)
  assert_trees_close(states["nnx"].opt_state, states["linen"].opt_state, atol=1e-6)
  # Selection and t-SNE read an NNX run as a Linen one.
  capsys.readouterr()
  ranking = tmp_path / "ranking.json"
  assert main(["select", str(runs["nnx"]), "--criterion", "source-risk", "--out", str(ranking)]) == 0
  assert json.loads(ranking.read_text())["ranking"][0]["score"] == (pytest.approx(nnx["best"]["final_score"]))
  png = tmp_path / "tsne.png"
  assert main(["plot", "tsne", str(runs["nnx"]), "--out", str(png), "-n", "12"]) == 0
  assert png.read_bytes()[:4] == b"\x89PNG"

  # A run resumes only through the door it was trained with.
  for api, other in (("linen", "nnx"), ("nnx", "linen")):
    capsys.readouterr()
    assert main(TRAIN + ["--api", other, "--keep-best", "source-risk", "--out", str(runs[api]), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dann-jax: error: cannot resume") and (err.count("\n") == 1)
    assert f"--api {api} --resume" in err


class Stop(Exception):
  """Stands for a run killed between its first and second checkpoints."""


@pytest.mark.slow
def test_interrupted_nnx_run_resumes_with_the_same_numbers(tiny_mnist, tmp_path, monkeypatch):
  # Evaluations, and so checkpoints, at steps 2 and 4.
  monkeypatch.setattr(presets, "_eval_every", lambda total: 2)
  args = TRAIN + ["--api", "nnx"]
  straight, stopped = tmp_path / "straight", tmp_path / "stopped"
  assert main(args + ["--out", str(straight)]) == 0

  save = checkpoint.save_checkpoint

  def stop_after_step_2(directory, state, **kwargs):
    if int(state.step) > 2:
      raise Stop(int(state.step))
    return save(directory, state, **kwargs)

  monkeypatch.setattr(checkpoint, "save_checkpoint", stop_after_step_2)
  with pytest.raises(Stop):
    main(args + ["--out", str(stopped)])
  assert checkpoint.all_steps(stopped / "checkpoint") == [2]
  assert not (stopped / "summary.json").exists()
  monkeypatch.setattr(checkpoint, "save_checkpoint", save)

  assert main(args + ["--out", str(stopped), "--resume"]) == 0
  assert checkpoint.all_steps(stopped / "checkpoint") == [2, 4]
  summaries = [json.loads((out / "summary.json").read_text()) for out in (straight, stopped)]
  assert summaries[1]["steps_run"] == 2
  assert summaries[1]["target_accuracy"] == summaries[0]["target_accuracy"]
  assert _rows(stopped) == _rows(straight)
  resumed, uninterrupted = (load_run(out).state for out in (stopped, straight))
  assert_trees_close(resumed.params, uninterrupted.params, rtol=0, atol=0)
  assert_trees_close(resumed.opt_state, uninterrupted.opt_state, rtol=0, atol=0)


@pytest.mark.parametrize(
  "flags", [["--seeds", "2"], ["--devices", "2"], ["--parallel", "pmap"], ["--seeds", "3", "--devices", "4"]]
)
def test_unsupported_flags_are_one_clear_error(flags, tmp_path, capsys):
  out = tmp_path / "x"
  assert main(TRAIN + ["--api", "nnx", *flags, "--out", str(out)]) == 2
  err = capsys.readouterr().err
  assert err.startswith("dann-jax: error: --api nnx trains one seed on one device: drop ") and err.count("\n") == 1
  assert all(flag in err for flag in flags) and "--api linen" in err
  assert not out.exists()


def test_cli_apis_are_the_library_ones():
  from dann_jax.cli.train import APIS
  from dann_jax.runner.presets import APIS as LIBRARY_APIS

  assert APIS == LIBRARY_APIS


def test_library_refuses_several_seeds_with_nnx(tmp_path):
  from dann_jax.data.pairs import PAIRS
  from dann_jax.runner.runs import train_pair

  with pytest.raises(ValueError, match="api='nnx' trains one seed"):
    train_pair(PAIRS["mnist->mnist-m"], "dann", out_dir=tmp_path / "x", seeds=[0, 1], api="nnx")
  with pytest.raises(ValueError, match="unknown api='jax'"):
    train_pair(PAIRS["mnist->mnist-m"], "dann", out_dir=tmp_path / "x", api="jax")
  assert not (tmp_path / "x").exists()
