"""Training curves: what each panel shows, against numpy, and the PNG they make."""

import numpy as np
import pytest

from dann_jax.plots import curve_panels, training_curves

# Two seeds, three logged chunks; evaluations at steps 200 and 300.
HISTORY = [
  {
    "step": 100,
    "label_loss": [2.0, 1.0],
    "domain_loss": [0.7, 0.69],
    "domain_accuracy": [0.5, 0.52],
    "lambda": [0.1, 0.1],
  },
  {
    "step": 200,
    "label_loss": [1.0, 0.5],
    "domain_loss": [0.6, 0.65],
    "domain_accuracy": [0.6, 0.55],
    "lambda": [0.5, 0.5],
    "target_accuracy": [0.4, 0.6],
  },
  {
    "step": 300,
    "label_loss": [0.5, 0.3],
    "domain_loss": [0.5, 0.6],
    "domain_accuracy": [0.7, 0.6],
    "lambda": [0.8, 0.8],
    "target_accuracy": [0.5, 0.7],
    "source_accuracy": [0.9, 0.95],
  },
]


def _panel(panels, start):
  return next(p for p in panels if p["title"].startswith(start))


def test_seeds_are_drawn_as_mean_and_std():
  panels = curve_panels(HISTORY, label_chance=2.3)
  label = _panel(panels, "label loss")
  (line,) = label["lines"]
  losses = np.array([r["label_loss"] for r in HISTORY])
  np.testing.assert_allclose(line["mean"], losses.mean(axis=1))
  np.testing.assert_allclose(line["std"], losses.std(axis=1))
  assert line["seeds"] == 2 and line["steps"].tolist() == [100, 200, 300]
  assert label["chance"] == 2.3
  target = next(line for line in _panel(panels, "test accuracy")["lines"] if line["label"] == "target accuracy")
  assert target["steps"].tolist() == [200, 300] and target["mean"].tolist() == pytest.approx([0.5, 0.6])


def test_chance_lines_and_untrained_heads():
  dann = curve_panels(HISTORY)
  assert _panel(dann, "domain loss")["chance"] == pytest.approx(np.log(2))
  assert _panel(dann, "domain-classifier accuracy")["chance"] == 0.5
  assert not any(p["muted"] for p in dann)
  baseline = curve_panels(HISTORY, trained_domain=False)
  muted = [p["title"] for p in baseline if p["muted"]]
  assert muted == [
    "domain loss (not trained)",
    "domain-classifier accuracy (not trained)",
  ]
  # the schedules have their own panel
  assert _panel(baseline, "adaptation factor")["lines"][0]["mean"].tolist() == pytest.approx([0.1, 0.5, 0.8])


def test_one_seed_takes_plain_values_and_the_png_is_written(tmp_path):
  history = [{"step": s, "label_loss": 1.0 / s, "learning_rate": 1e-3} for s in (1, 2, 3)]
  panels = curve_panels(history)
  (line,) = _panel(panels, "label loss")["lines"]
  assert line["seeds"] == 1 and line["std"].tolist() == [0, 0, 0]
  assert _panel(panels, "domain loss")["lines"] == []
  training_curves(HISTORY, tmp_path / "curves.png", "dann", trained_domain=False, label_chance=2.3)
  from PIL import Image

  with Image.open(tmp_path / "curves.png") as image:
    assert image.size == (13 * 80, 6 * 80)
