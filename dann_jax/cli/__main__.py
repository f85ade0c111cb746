import sys

from dann_jax.cli import main

sys.exit(main())
