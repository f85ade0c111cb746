"""dann_jax: domain-adversarial training of neural networks (DANN) in JAX.

The package is laid out by layer, each importing only the ones listed before it:
- `data`: where pixels come from, the paper's domains, a user's own domains, the pairs and batching;
- `backend`: the platform (XLA:CPU-friendly layers, devices, multi-process start-up);
- `core`: the algorithm (gradient reversal, schedules, objective, methods, networks, the train state and step);
- `training`: running steps (host loop, devices, checkpoints, evaluation, the guard);
- `validation`: label-free validators and selection, feature analysis, the subspace-alignment baseline;
- `runner`: one run end to end (presets, run folders, logs, summaries, `adapt`, loading a model back);
- `tables`: the paper's Table 1 harness;
- `cli`: the `dann-jax` command.
`io`, `names` and `plots` are leaves that any layer may use.

The names below are imported on first use, so `import dann_jax` (and the
command line's `--help`) does not pay for importing JAX and Flax. The
module paths of the flat layout (`dann_jax.loop`, `dann_jax.grl`, ...) are
the same module objects as their places in the layers (`dann_jax.training.loop`,
`dann_jax.core.grl`, ...), so either spelling imports, patches and pickles alike.

References: Ganin & Lempitsky, "Unsupervised Domain Adaptation by
Backpropagation", arXiv 1409.7495.
"""

import importlib
import importlib.abc
import importlib.util
import sys

# public name -> the module that defines it
_EXPORTS = {
  "DANN": "dann_jax.core.models",
  "mnist_dann": "dann_jax.core.models",
  "svhn_dann": "dann_jax.core.models",
  "TrainConfig": "dann_jax.core.config",
  "gradient_reversal": "dann_jax.core.grl",
  "saddle_point_loss": "dann_jax.core.objective",
  "TrainState": "dann_jax.core.train",
  "create_train_state": "dann_jax.core.train",
  "eval_step": "dann_jax.core.train",
  "train_step": "dann_jax.core.train",
  "load_model": "dann_jax.runner.inference",
  "predict": "dann_jax.runner.inference",
  "evaluate": "dann_jax.runner.inference",
}

# flat module name -> its place in the layers
FLAT_NAMES = {
  "grl": "core.grl",
  "schedules": "core.schedules",
  "objective": "core.objective",
  "methods": "core.methods",
  "models": "core.models",
  "networks": "core.networks",
  "nnx": "core.nnx",
  "config": "core.config",
  "train": "core.train",
  "xla_cpu": "backend.xla_cpu",
  "devices": "backend.devices",
  "distributed": "backend.distributed",
  "distributed_topology": "backend.topology",
  "loop": "training.loop",
  "parallel": "training.parallel",
  "evaluation": "training.evaluation",
  "checkpoint": "training.checkpoint",
  "guard": "training.guard",
  "health": "training.health",
  "tensorboard": "training.tensorboard",
  "validators": "validation.validators",
  "selection": "validation.selection",
  "analysis": "validation.analysis",
  "divergence": "validation.divergence",
  "baselines": "validation.baselines",
  "presets": "runner.presets",
  "runs": "runner.runs",
  "run_folder": "runner.folder",
  "run_log": "runner.log",
  "run_summary": "runner.summary",
  "candidates": "runner.candidates",
  "adapt": "runner.adapt",
  "ranking": "runner.ranking",
  "inference": "runner.inference",
  "report": "runner.report",
  "reproduce": "tables.reproduce",
  "table_harness": "tables.harness",
  "table_measurements": "tables.measurements",
  "table_records": "tables.records",
  "table_render": "tables.render",
  "pairs": "data.pairs",
  "pair_data": "data.pair_data",
}

__all__ = sorted([*_EXPORTS, "schedules", "nnx"])
__version__ = "0.1.0"


class _FlatName(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Imports `dann_jax.<flat name>` as the very module object at its place in the layers."""

  def __init__(self):
    self._own_specs = {}

  def find_spec(self, fullname, path=None, target=None):
    package, _, name = fullname.rpartition(".")
    if package != __name__ or name not in FLAT_NAMES:
      return None
    return importlib.util.spec_from_loader(fullname, self)

  def create_module(self, spec):
    module = importlib.import_module(f"{__name__}.{FLAT_NAMES[spec.name.rpartition('.')[2]]}")
    self._own_specs[module.__name__] = module.__spec__
    return module

  def exec_module(self, module):
    # The import system has just stamped the flat name's spec on the module;
    # give it back the spec under which it was executed.
    module.__spec__ = self._own_specs.pop(module.__name__)


if not any(isinstance(finder, _FlatName) for finder in sys.meta_path):
  sys.meta_path.append(_FlatName())


def __getattr__(name):
  if name in FLAT_NAMES:
    return importlib.import_module(f"{__name__}.{name}")
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module 'dann_jax' has no attribute {name!r}")


def __dir__():
  return __all__
