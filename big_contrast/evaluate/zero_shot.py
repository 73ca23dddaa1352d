"""Zero-shot classification for image-text models: class names x prompt templates -> classifier.

Knows nothing about the model or tokenizer: the caller passes `encode_text`, a function from a
list of strings to their [n, d] embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from big_contrast.evaluate import _validate
from big_contrast.evaluate._chunked import map_row_chunks
from big_contrast.evaluate.metrics import accuracy_from_ranks, label_ranks


def zero_shot_classifier(
  encode_text: Callable[[list[str]], np.ndarray],
  class_names: Sequence[str],
  templates: Sequence[str],
) -> np.ndarray:
  r"""Class embeddings from an ensemble of prompt templates (as in CLIP).

  For class c with name n_c and templates t_1..t_T (each with one "{}" slot):

  .. math:: e_c = \mathrm{normalize}\Big(\frac{1}{T} \sum_t \mathrm{normalize}(f(t(n_c)))\Big)

  where f is `encode_text`. `encode_text` is called once per class with its T prompts.

  Args:
    encode_text: list[str] of length T -> [T, d] array.
    class_names: C names, e.g. ["cat", "dog"].
    templates: T format strings, e.g. ["a photo of a {}.", "a drawing of a {}."].

  Returns:
    [C, d] float32 array of unit-norm class embeddings.
  """
  if len(class_names) == 0 or len(templates) == 0:
    raise ValueError("zero_shot_classifier needs at least one class name and one template.")
  bad = [t for t in templates if t.count("{}") != 1]
  if bad:
    raise ValueError(f"Each template needs exactly one '{{}}' slot for the class name; got {bad}.")
  embeddings = []
  for name in class_names:
    prompts = [t.format(name) for t in templates]
    text = np.asarray(encode_text(prompts), np.float32)
    if text.ndim != 2 or text.shape[0] != len(prompts):
      raise ValueError(
        f"encode_text returned shape {text.shape} for {len(prompts)} prompts; "
        "it must return [num_prompts, d]."
      )
    embeddings.append(_validate.l2_normalize(text).mean(axis=0))
  return _validate.l2_normalize(np.stack(embeddings))


@jax.jit
def _zero_shot_ranks(image_features, labels, class_embeddings):
  return label_ranks(image_features @ class_embeddings.T, labels)


def zero_shot_accuracy(
  image_features, labels, class_embeddings, *, batch_size: int = 1024
) -> dict[str, float]:
  """Accuracy of predicting argmax_c cos(image, class_embeddings[c]).

  Both image features and class embeddings are L2-normalised here.

  Args:
    image_features: [n, d]; labels: [n] int labels in [0, C).
    class_embeddings: [C, d], e.g. from `zero_shot_classifier`.

  Returns:
    {"top1", "top5" (only when C >= 10), "mean_per_class_recall"} in [0, 1];
    mean_per_class_recall is the mean over classes present in `labels` of their top-1 recall.
  """
  image_features = _validate.as_features(image_features, "image_features")
  class_embeddings = _validate.as_features(class_embeddings, "class_embeddings")
  _validate.check_same_dim(image_features, class_embeddings, "image_features", "class_embeddings")
  num_classes = class_embeddings.shape[0]
  labels = _validate.as_labels(labels, "labels", image_features.shape[0], num_classes)
  classes = jnp.asarray(_validate.l2_normalize(class_embeddings))
  ranks = map_row_chunks(
    lambda x, y: _zero_shot_ranks(x, y, classes),
    (_validate.l2_normalize(image_features), labels),
    batch_size,
  )
  result = accuracy_from_ranks(ranks, labels, num_classes)
  result["mean_per_class_recall"] = result.pop("mean_per_class")
  return result
