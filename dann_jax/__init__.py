"""dann_jax: domain-adversarial training of neural networks (DANN) in JAX.

References: Ganin & Lempitsky, "Unsupervised Domain Adaptation by
Backpropagation", arXiv 1409.7495.
"""

from dann_jax import schedules
from dann_jax.config import TrainConfig
from dann_jax.grl import gradient_reversal
from dann_jax.models import DANN, mnist_dann, svhn_dann
from dann_jax.objective import saddle_point_loss
from dann_jax.train import (TrainState, create_train_state, eval_step,
                            train_step)

__all__ = [
    "DANN", "TrainConfig", "TrainState", "create_train_state", "eval_step",
    "gradient_reversal", "mnist_dann", "saddle_point_loss", "schedules",
    "svhn_dann", "train_step",
]
__version__ = "0.1.0"
