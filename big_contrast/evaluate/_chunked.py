"""Row-chunked evaluation, so similarity matrices stay [batch, n] however many queries there are."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def map_row_chunks(fn: Callable, rows: tuple[np.ndarray, ...], batch_size: int) -> np.ndarray:
  """Applies `fn` to aligned row chunks of `rows` and concatenates the results along axis 0.

  The last chunk is zero-padded to `batch_size` rows (and its padding dropped from the output),
  so a jitted `fn` compiles once. `fn` must be row-wise: output row i depends on input row i.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  n = rows[0].shape[0]
  batch_size = min(batch_size, n)
  pad = -n % batch_size
  padded = [np.concatenate([r, np.zeros((pad, *r.shape[1:]), r.dtype)]) if pad else r for r in rows]
  outputs = [
    np.asarray(fn(*(r[i : i + batch_size] for r in padded))) for i in range(0, n + pad, batch_size)
  ]
  return np.concatenate(outputs)[:n]
