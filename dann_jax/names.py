"""The names the library accepts for its choices, in one place that imports nothing heavy.

The command line reads its choices from here, so `dann-jax --help` does not
import JAX; the library modules that act on a name import it from here too,
so a name is spelled once.
"""

# Presets of `dann_jax.runner.presets.make_config`: the paper's protocol, and a CPU-sized departure from it.
PRESETS = ("quick", "paper")
# The front doors a run can train through: `dann_jax.core.train` (Linen) and
# `dann_jax.core.nnx`. Checkpoints are in the Linen layout either way.
APIS = ("linen", "nnx")
# Multi-device runners of `dann_jax.training.parallel`: a device mesh with sharded batches, or `jax.pmap`.
PARALLEL_KINDS = ("sharding", "pmap")
# The methods `dann_jax.core.methods` registers itself (a user registers more, or
# names one as "package.module:ATTRIBUTE").
BUILTIN_METHODS = ("dann", "source_only", "target_only")
# The `RunConfig` fields that `make_config(overrides=...)` sets beside the
# `TrainConfig` ones (positive integers).
RUN_FIELDS = ("eval_every", "eval_size")
# `TrainConfig` fields that `make_config` sets from its own arguments (the
# evaluation cadence and the quick preset's note follow `steps`): field -> argument.
OWN_ARGUMENTS = {"method": "method", "total_steps": "steps", "seed": "seeds"}

# Every validator, in the order reports list them; all but reverse validation
# are computed from one pass of the model over the label-free view.
CRITERIA = (
  "source-risk",
  "dev",
  "dev-normalized",
  "entropy",
  "info-max",
  "bnm",
  "snd",
  "class-ami",
  "reverse-validation",
)
# The validator `dann-jax adapt` and `select` use unless told otherwise, chosen
# by the validator benchmark: the best weighted Spearman averaged over its five
# pairs and three seeds (experiments/results/selection/validators.md).
DEFAULT_CRITERION = "bnm"
