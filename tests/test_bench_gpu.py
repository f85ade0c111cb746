"""experiments/bench/bench_gpu.py: card names and its refusal of a missing cache."""

import importlib.util
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "bench" / "bench_gpu.py"
_spec = importlib.util.spec_from_file_location("bench_gpu", _SCRIPT)
bench_gpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_gpu)


@pytest.mark.parametrize(
  "kind, name",
  [
    ("NVIDIA H200", "h200"),
    ("NVIDIA H100 80GB HBM3", "h100"),
    ("NVIDIA A100-SXM4-40GB", "a100-sxm4-40gb"),
    ("cpu", "cpu"),
    ("", "gpu"),
  ],
)
def test_card_name(kind, name):
  assert bench_gpu.card_name(kind) == name


def test_missing_mnist_cache_is_refused_before_any_work(tmp_path, capsys):
  with pytest.raises(SystemExit):
    bench_gpu.main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "out")])
  assert "mnist.npz" in capsys.readouterr().err
  assert not (tmp_path / "out").exists()
