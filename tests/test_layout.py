"""The package's layers: the flat module names still import, and each layer imports only the ones below it."""

import ast
import importlib
from pathlib import Path

import pytest

import dann_jax

PACKAGE = Path(dann_jax.__file__).parent
# bottom to top; a module may import its own layer, the layers below it, and the leaves
LAYERS = ("data", "backend", "core", "training", "validation", "runner", "tables", "cli")
LEAVES = {"io", "names", "plots"}


@pytest.mark.parametrize("flat, layered", sorted(dann_jax.FLAT_NAMES.items()))
def test_a_flat_name_is_the_layered_module_itself(flat, layered):
  old = importlib.import_module(f"dann_jax.{flat}")
  new = importlib.import_module(f"dann_jax.{layered}")
  assert old is new
  assert old.__name__ == old.__spec__.name == f"dann_jax.{layered}"
  assert Path(old.__spec__.origin) == PACKAGE / (layered.replace(".", "/") + ".py")
  assert getattr(dann_jax, flat) is new


def test_the_flat_spellings_users_write_still_work():
  from dann_jax.loop import fit

  from dann_jax import grl
  from dann_jax.training.loop import fit as layered_fit

  assert fit is layered_fit
  assert grl.gradient_reversal is dann_jax.gradient_reversal


def test_every_flat_name_points_at_a_module_file_and_no_flat_file_is_left():
  for flat, layered in dann_jax.FLAT_NAMES.items():
    assert (PACKAGE / (layered.replace(".", "/") + ".py")).is_file(), layered
    assert not (PACKAGE / f"{flat}.py").exists(), f"dann_jax/{flat}.py shadows its flat name"
  top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
  assert top == LEAVES


def _imported_layers(path: Path) -> set[str]:
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dann_jax"):
      parts = node.module.split(".")
      names |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names}
    elif isinstance(node, ast.Import):
      names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("dann_jax.")}
  return names


def test_each_layer_imports_only_the_layers_below_it_and_the_leaves():
  wrong = []
  for i, layer in enumerate(LAYERS):
    allowed = set(LAYERS[: i + 1]) | LEAVES | {"__version__"}
    for path in sorted((PACKAGE / layer).glob("*.py")):
      for name in sorted(_imported_layers(path) - allowed):
        wrong.append(f"{path.relative_to(PACKAGE)} imports dann_jax.{name}")
  for leaf in LEAVES:
    wrong += [f"{leaf}.py imports dann_jax.{n}" for n in sorted(_imported_layers(PACKAGE / f"{leaf}.py"))]
  assert not wrong, "\n".join(wrong)
