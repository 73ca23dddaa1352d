"""Representation diagnostics computed from a feature matrix alone.

Alignment and uniformity (Wang & Isola 2020) live in `big_contrast.losses`, beside the
objectives they come from; this module holds what has no loss counterpart.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from big_contrast.evaluate import _validate


def effective_rank(
  features, *, spectrum: Literal["covariance", "features"] = "covariance", center: bool = True
) -> float:
  r"""Effective rank (Roy & Vetterli 2007): exp of the entropy of the normalised spectrum.

  .. math::
      p_i = \frac{\sigma_i}{\sum_j \sigma_j}, \qquad
      \mathrm{erank} = \exp\Big(-\sum_i p_i \log p_i\Big)

  with σ the eigenvalues of the feature covariance X_c^T X_c / n (`spectrum="covariance"`,
  the default) or the singular values of the centred feature matrix X_c itself
  (`spectrum="features"`, RankMe's choice), both from one SVD of X_c.
  It lies in [1, min(n, d)]: d for an isotropic cloud, 1 when all variance lies on one line.
  The covariance spectrum weighs dominant directions more, so its value is the lower of the two.

  Args:
    features: [n, d] embeddings.
    center: subtract the mean feature first (False: use the raw second-moment matrix).

  Returns:
    The effective rank, a float (computed in float64).
  """
  x = _validate.as_features(features, "features").astype(np.float64)
  if center:
    x = x - x.mean(axis=0)
  singular_values = np.linalg.svd(x, compute_uv=False)
  if spectrum == "features":
    sigma = singular_values
  elif spectrum == "covariance":
    sigma = singular_values**2 / x.shape[0]
  else:
    raise ValueError(f"Unknown spectrum {spectrum!r}; use 'covariance' or 'features'.")
  total = sigma.sum()
  if total <= 0:
    raise ValueError("features have zero variance; the effective rank is undefined.")
  p = sigma[sigma > 0] / total
  return float(np.exp(-np.sum(p * np.log(p))))
