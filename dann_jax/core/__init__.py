"""The algorithm: gradient reversal, the paper's schedules, the saddle-point objective, methods, networks,
and the train state with its jitted step. Nothing here reads files or loops over steps.

References: Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", arXiv 1409.7495.
"""
