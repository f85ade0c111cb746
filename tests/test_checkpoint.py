"""Checkpoint faults: damaged steps are reported and skipped, a save that dies midway leaves the previous one usable."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dann_jax.core.config import TrainConfig
from dann_jax.core.models import DANN, MLP
from dann_jax.core.train import create_train_state
from dann_jax.training import checkpoint


def _state(step=0, seed=0):
  model = DANN(
    features=MLP(hidden=(), outputs=6),
    label_predictor=MLP(hidden=(), outputs=3),
    domain_classifier=MLP(hidden=(), outputs=1),
  )
  state = create_train_state(model, TrainConfig(total_steps=10, seed=seed), jnp.zeros((2, 5)))
  return state.replace(step=jnp.asarray(step, jnp.int32))


def _damage(directory, step):
  """Truncates every data file of one saved step to 10 bytes."""
  for path in (directory / str(step)).rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(path.read_bytes()[:10])


def test_damaged_newest_step_is_reported_and_the_previous_one_used(tmp_path, capsys):
  first, second = _state(1, seed=0), _state(2, seed=1)
  checkpoint.save_checkpoint(tmp_path, first, max_to_keep=None)
  checkpoint.save_checkpoint(tmp_path, second, max_to_keep=None)
  _damage(tmp_path, 2)
  restored = checkpoint.restore_checkpoint(tmp_path, _state())
  assert int(restored.step) == 1
  jax.tree.map(np.testing.assert_array_equal, restored.params, first.params)
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and str(tmp_path) in err
  assert "damaged steps (step 2:" in err and "restored step 1, the newest readable one" in err
  with pytest.raises(ValueError, match=r"cannot read the checkpoint .* \(step 2: .*\); other steps there: \[1\]"):
    checkpoint.restore_checkpoint(tmp_path, _state(), step=2)


def test_no_readable_step_is_one_clear_error(tmp_path):
  checkpoint.save_checkpoint(tmp_path, _state(3))
  _damage(tmp_path, 3)
  with pytest.raises(ValueError) as info:
    checkpoint.restore_checkpoint(tmp_path, _state())
  message = str(info.value)
  assert str(tmp_path) in message and "no readable step is left" in message and "\n" not in message


def test_a_save_that_fails_midway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
  from orbax.checkpoint._src.path import async_path

  checkpoint.save_checkpoint(tmp_path, _state(1, seed=0))

  async def disk_full(src, dst):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(async_path, "rename", disk_full)
  with pytest.raises(Exception):
    checkpoint.save_checkpoint(tmp_path, _state(2, seed=1))
  monkeypatch.undo()
  assert checkpoint.latest_step(tmp_path) == 1
  restored = checkpoint.restore_checkpoint(tmp_path, _state())
  jax.tree.map(np.testing.assert_array_equal, restored.params, _state(seed=0).params)


_KILLED_SAVE = """
import sys, time
import jax.numpy as jnp
from orbax.checkpoint._src.path import async_path
sys.path.insert(0, {tests!r})
from test_checkpoint import _state
from dann_jax.training import checkpoint
checkpoint.save_checkpoint({directory!r}, _state(1))
async def stuck(src, dst):
  print("renaming", flush=True)
  time.sleep(120)
async_path.rename = stuck
checkpoint.save_checkpoint({directory!r}, _state(2, seed=1))
"""


def test_a_save_killed_midway_leaves_the_previous_checkpoint_and_no_temporary(tmp_path):
  directory = tmp_path / "ckpt"
  code = _KILLED_SAVE.format(tests=str(__import__("pathlib").Path(__file__).parent), directory=str(directory))
  child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
  try:
    assert child.stdout.readline().strip() == "renaming"
  finally:
    child.kill()
    child.wait(timeout=30)
  assert any("tmp" in p.name for p in directory.iterdir())  # the killed save's leftovers
  assert checkpoint.latest_step(directory) == 1
  restored = checkpoint.restore_checkpoint(directory, _state())
  assert int(restored.step) == 1
  assert sorted(p.name for p in directory.iterdir()) == ["1"]  # the next manager removed them


def test_restore_into_a_template_of_another_seed_takes_every_saved_value(tmp_path):
  saved = _state(3, seed=0)
  checkpoint.save_checkpoint(tmp_path, saved)
  restored = checkpoint.restore_checkpoint(tmp_path, _state(0, seed=7))
  for a, b in zip(jax.tree.leaves(restored.params), jax.tree.leaves(saved.params)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(jax.random.key_data(restored.key), jax.random.key_data(saved.key))
  assert int(restored.step) == 3
  # The next step's randomness is the saved run's, not the template's.
  np.testing.assert_array_equal(
    jax.random.key_data(jax.random.fold_in(restored.key, 3)), jax.random.key_data(jax.random.fold_in(saved.key, 3))
  )


def test_abandoned_reads_of_a_damaged_checkpoint_print_no_traceback(tmp_path):
  # orbax's abandoned reads report "Event loop is closed" through sys.unraisablehook when they finish, on
  # their own threads and at their own time; one such report is sent by hand so that the check is not a race.
  code = (
    "import sys, pathlib\n"
    f"sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})\n"
    "from test_checkpoint import _state, _damage\n"
    "from dann_jax import checkpoint\n"
    f"d = pathlib.Path({str(tmp_path)!r})\n"
    "checkpoint.save_checkpoint(d, _state(1), max_to_keep=None)\n"
    "checkpoint.save_checkpoint(d, _state(2, seed=1), max_to_keep=None)\n"
    "_damage(d, 2)\n"
    "assert int(checkpoint.restore_checkpoint(d, _state()).step) == 1\n"
    "class Report:\n"
    "  def __init__(self, error): self.error = error\n"
    "  def __del__(self): raise self.error\n"  # Python hands what __del__ raises to sys.unraisablehook
    "Report(RuntimeError('Event loop is closed'))\n"
    "Report(OSError('something else'))\n"
  )
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  assert "Event loop is closed" not in done.stderr
  assert "OSError: something else" in done.stderr  # other reports still reach the default hook
  assert "restored step 1, the newest readable one" in done.stderr
