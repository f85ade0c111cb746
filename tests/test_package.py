"""The package's shape: no import loops, a light command line, names that agree."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dann_jax

PACKAGE = Path(dann_jax.__file__).parent


def _module_name(path: Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
  """module -> the dann_jax modules it imports (top-level or inside functions)."""
  modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
  graph = {}
  for name, path in modules.items():
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module:
        targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
      elif isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      else:
        continue
      deps |= {t for t in targets if t in modules and t != name}
    graph[name] = deps
  return graph


def test_no_module_imports_one_that_imports_it_back():
  graph = _import_graph()
  # Package __init__ files only re-export names; an edge into them is not a
  # dependency of the package's own modules.
  deps = {
    m: {d for d in ds if not PACKAGE.joinpath(*d.split(".")[1:], "__init__.py").exists()} for m, ds in graph.items()
  }

  def reachable(start):
    seen, todo = set(), [start]
    while todo:
      for d in deps.get(todo.pop(), ()):
        if d not in seen:
          seen.add(d)
          todo.append(d)
    return seen

  loops = sorted(m for m in deps if m in reachable(m))
  assert not loops, f"modules on an import loop: {loops}"


def test_help_does_not_import_jax():
  code = (
    "import sys; from dann_jax.cli import build_parser; build_parser(); "
    "print('jax' in sys.modules, 'flax' in sys.modules)"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
  assert out == ["False", "False"]


def test_the_cli_offers_the_library_names():
  import argparse

  from dann_jax import names
  from dann_jax.cli import build_parser, select
  from dann_jax.core import methods
  from dann_jax.validation import selection

  train = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
  choices = {a.dest: a.choices for a in train._actions}
  assert tuple(choices["preset"]) == names.PRESETS
  assert tuple(choices["api"]) == names.APIS
  assert tuple(choices["parallel"]) == names.PARALLEL_KINDS
  assert methods.names()[: len(names.BUILTIN_METHODS)] == names.BUILTIN_METHODS
  assert select.CRITERIA == selection.CRITERIA


def test_malloc_tuning_respects_the_user():
  from dann_jax.cli import wants_malloc_tuning

  glibc = os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
  assert wants_malloc_tuning({}) == (glibc and sys.platform == "linux")
  assert not wants_malloc_tuning({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
  assert not wants_malloc_tuning({"DANN_JAX_MALLOC_TUNING": "0"})


_FAULTS_PER_CALL = """
import resource, jax, jax.numpy as jnp

def step(a, b):
  c = a @ b  # a 128 MB temporary
  return (c.T @ a).sum() + c.sum(axis=1)[:4].sum()

f = jax.jit(step)
a, b = jnp.ones((4096, 128)), jnp.ones((128, 8192))
for _ in range(3):
  f(a, b).block_until_ready()
faults = []
for _ in range(9):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(a, b).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults)[4])
"""


@pytest.mark.skipif(
  not (sys.platform == "linux" and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")),
  reason="GLIBC_TUNABLES is read by glibc on Linux only",
)
def test_malloc_tuning_keeps_large_temporaries_mapped():
  # A jitted function whose 128 MB temporary XLA:CPU allocates per call:
  # under the tuning, the memory of one call is reused by the next (no fresh
  # pages in the median call; without it, ~33,000 page faults in every call).
  from dann_jax.cli import MALLOC_TUNING

  env = dict(os.environ, GLIBC_TUNABLES=MALLOC_TUNING, JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, "-c", _FAULTS_PER_CALL], env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  faults = int(done.stdout.split()[-1])
  assert faults < 0.01 * (128 << 20) / 4096, f"{faults} page faults in the median call"


def test_lazy_exports_resolve():
  assert dann_jax.TrainConfig().batch_size == 128
  assert callable(dann_jax.schedules.adaptation_factor)
  from dann_jax import data

  assert "mnist-m" in data.KNOWN_DOMAINS


def test_version_is_the_installed_distributions(capsys):
  from importlib.metadata import version

  import dann_jax
  from dann_jax.cli import main

  with pytest.raises(SystemExit) as done:
    main(["--version"])
  assert done.value.code == 0
  assert capsys.readouterr().out.strip() == f"dann-jax {version('dann_jax')}" == f"dann-jax {dann_jax.__version__}"
