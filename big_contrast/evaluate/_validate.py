"""Input checks shared by the evaluators: turn array-likes into the shapes and dtypes they need.

Every evaluator takes plain arrays (numpy or jax) and must fail with a message that names the
argument and the fix, rather than broadcasting silently or indexing out of range.
"""

from __future__ import annotations

import numpy as np


def as_features(x, name: str) -> np.ndarray:
  """Returns `x` as a finite float32 host array of shape [n, d]."""
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"{name} must have shape [n, d], got shape {x.shape}.")
  if x.shape[0] == 0:
    raise ValueError(f"{name} is empty (shape {x.shape}); it needs at least one row.")
  x = x.astype(np.float32, copy=False)
  if not np.isfinite(x).all():
    raise ValueError(f"{name} contains NaN or inf; check the encoder outputs.")
  return x


def as_labels(y, name: str, n: int, num_classes: int | None = None) -> np.ndarray:
  """Returns integer class labels [n] as int32, checked against `num_classes` when given."""
  y = np.asarray(y)
  if y.ndim != 1 or y.shape[0] != n:
    raise ValueError(f"{name} must have shape [{n}] to match its features, got {y.shape}.")
  if not np.issubdtype(y.dtype, np.integer):
    if np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
      y = y.astype(np.int64)
    else:
      raise ValueError(f"{name} must hold integer class ids, got dtype {y.dtype}.")
  if num_classes is not None and y.size and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(
      f"{name} has labels in [{y.min()}, {y.max()}], outside [0, num_classes={num_classes}); "
      "pass the right num_classes or remap the labels to 0..num_classes-1."
    )
  if y.size and y.min() < 0:
    raise ValueError(f"{name} has negative label {y.min()}; labels must be 0..num_classes-1.")
  return y.astype(np.int32)


def as_multi_hot(y, name: str, n: int, num_classes: int | None = None) -> np.ndarray:
  """Returns multi-hot targets [n, C] as float32 in {0, 1}."""
  y = np.asarray(y)
  if y.ndim != 2 or y.shape[0] != n:
    raise ValueError(f"{name} must have shape [{n}, num_classes] (multi-hot), got {y.shape}.")
  if num_classes is not None and y.shape[1] != num_classes:
    raise ValueError(f"{name} has {y.shape[1]} columns, expected num_classes={num_classes}.")
  if not np.isin(y, (0, 1)).all():
    raise ValueError(f"{name} must be multi-hot (only 0/1 or False/True entries).")
  return y.astype(np.float32)


def infer_num_classes(*labels: np.ndarray) -> int:
  """The number of classes implied by integer labels: max label + 1."""
  return int(max(int(y.max()) for y in labels if y.size)) + 1


def check_same_dim(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
  if a.shape[1] != b.shape[1]:
    raise ValueError(
      f"{name_a} has feature dimension {a.shape[1]} but {name_b} has {b.shape[1]}; "
      "they must come from the same embedding space."
    )


def train_test_classes(train_x, train_y, test_x, test_y, num_classes: int | None):
  """Checked (train_x, train_y, test_x, test_y, num_classes) of a single-label evaluation."""
  train_x = as_features(train_x, "train_x")
  test_x = as_features(test_x, "test_x")
  check_same_dim(train_x, test_x, "train_x", "test_x")
  train_y = as_labels(train_y, "train_y", train_x.shape[0], num_classes)
  test_y = as_labels(test_y, "test_y", test_x.shape[0], num_classes)
  num_classes = num_classes or infer_num_classes(train_y, test_y)
  return train_x, train_y, test_x, test_y, num_classes


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
  """Rows divided by their L2 norm (zero rows stay zero)."""
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)
