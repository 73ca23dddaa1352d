"""Evaluation of frozen encoders: linear/multi-label probes, kNN, zero-shot, retrieval, diagnostics.

Two layers:
  * pure functions of feature arrays (numpy or jax) returning python numbers or
    dicts of them: `linear_probe`, `knn_accuracy`, `zero_shot_accuracy`, ...;
  * the model-facing part: `Encoder` / `load_encoder` (a frozen model on the
    mesh), `features` (extraction over a dataset split) and `evaluators` (the
    named evaluators a run or `python -m big_contrast.evaluate` calls).
"""

from big_contrast.evaluate.diagnostics import effective_rank
from big_contrast.evaluate.encoder import Encoder, load_encoder
from big_contrast.evaluate.knn import knn_accuracy
from big_contrast.evaluate.linear_probe import (
  DEFAULT_L2_GRID,
  fit_logistic,
  fit_ridge,
  held_out_score,
  linear_probe,
)
from big_contrast.evaluate.metrics import accuracy_from_ranks, label_ranks
from big_contrast.evaluate.multilabel_probe import (
  average_precision,
  f1_scores,
  fit_multilabel_logistic,
  multilabel_probe,
)
from big_contrast.evaluate.retrieval import retrieval_recall
from big_contrast.evaluate.zero_shot import zero_shot_accuracy, zero_shot_classifier

__all__ = [
  "DEFAULT_L2_GRID",
  "Encoder",
  "accuracy_from_ranks",
  "average_precision",
  "effective_rank",
  "f1_scores",
  "fit_logistic",
  "fit_multilabel_logistic",
  "fit_ridge",
  "held_out_score",
  "knn_accuracy",
  "label_ranks",
  "linear_probe",
  "load_encoder",
  "multilabel_probe",
  "retrieval_recall",
  "zero_shot_accuracy",
  "zero_shot_classifier",
]
