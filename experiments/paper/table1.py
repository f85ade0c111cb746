"""Table 1 of Ganin & Lempitsky: the harness is `dann_jax.tables.reproduce`; this script is its command line.

Run (same options as `dann-jax reproduce table1`):
  python experiments/paper/table1.py --preset paper --seeds 3 --pairs 'mnist->mnist-m'
"""

import sys

from dann_jax.cli.reproduce import main

if __name__ == "__main__":
  sys.exit(main())
