"""Judging a model without target labels: the validators (`validators`), choosing among runs and checkpoints
with them (`selection`), feature comparisons and the proxy A-distance (`analysis`, `divergence`), and the
subspace-alignment baseline (`baselines`)."""
