"""Proxy A-distance between the feature distributions of two domains.

A linear classifier is trained to tell source features from target features
on half of each; its test error ε on the other half gives the proxy
A-distance 2 (1 - 2 ε): about 0 when the domains are indistinguishable, 2 when
they are linearly separable.

References: Ben-David, Blitzer, Crammer & Pereira, "Analysis of
representations for domain adaptation", NIPS 2006; used for DANN features in
Ganin et al., JMLR 2016, Sec. 5.1.
"""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC


def proxy_a_distance(source_x: np.ndarray, target_x: np.ndarray, seed: int = 0, c: float = 1.0) -> float:
  """2 (1 - 2 ε) for the held-out error ε of a linear domain classifier.

  Args:
    source_x: (n_s, D) source features.
    target_x: (n_t, D) target features; the larger set is subsampled so both
      domains weigh the same.
    seed: seed of the subsampling, split and solver.
    c: the SVM's regularisation constant.

  Returns:
    The proxy A-distance, in [-2, 2] (about 0 to 2 in practice).
  """
  n = min(len(source_x), len(target_x))
  if n < 4:
    raise ValueError(f"need at least 4 samples per domain, got {n}")
  rng = np.random.default_rng(seed)
  xs = source_x[rng.permutation(len(source_x))[:n]]
  xt = target_x[rng.permutation(len(target_x))[:n]]
  x = np.concatenate([xs, xt])
  y = np.concatenate([np.zeros(n), np.ones(n)])
  order = rng.permutation(2 * n)
  x, y = x[order], y[order]
  half = n
  scaler = StandardScaler().fit(x[:half])
  clf = LinearSVC(C=c, dual="auto", max_iter=5000, random_state=seed)
  clf.fit(scaler.transform(x[:half]), y[:half])
  error = np.mean(clf.predict(scaler.transform(x[half:])) != y[half:])
  return float(2.0 * (1.0 - 2.0 * error))
