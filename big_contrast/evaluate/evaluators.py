"""Evaluators of a frozen encoder: the end of every run, periodic evaluation, the CLI.

`EVALUATORS` is the one table from an evaluator's name to its function and the
modalities it needs from the encoder; `run` calls those whose needs the encoder
meets (an image-only model gets no zero-shot row); one that cannot run on the
given data (it raises ValueError) is recorded as skipped, with the reason, and
the others still run. Each function takes
`(config, encoder)` — the config says which data and splits, the encoder is an
`Encoder` — extracts features over the mesh (`features.py`) and calls the pure
functions of `big_contrast.evaluate`:

  linear_probe    backbone features → multinomial logistic probe (L2 swept on a
                  held-out part of the probe split; with `config.eval.probe_last_blocks`
                  the features too, among concatenations of the last blocks); with
                  `config.eval.baselines` also raw pixels and the same encoder at random
                  initialisation
  knn             weighted cosine kNN on backbone features
  zero_shot       class-name prompts through the text tower
  zero_shot_multilabel  the same prompts scored against multi-hot `labels`: each
                  image's cosine with every class embedding is that class's score,
                  macro and micro mAP (`average_precision`)
  retrieval       image↔caption Recall@{1,5,10} on the eval split
  diagnostics     effective rank, uniformity (and image-caption alignment) of the
                  eval split's embeddings
  lee_similarity  text models on the bundled Lee corpus (`bc_lee`): Spearman
                  correlation of document-embedding cosines with the 50×50 human
                  similarity ratings, beside TF-IDF and LSA baselines

Knows nothing of the trainer: it is handed an encoder.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from big_contrast import losses
from big_contrast.data import lee, pipeline
from big_contrast.evaluate import features, text_similarity
from big_contrast.evaluate.diagnostics import effective_rank
from big_contrast.evaluate.encoder import Encoder
from big_contrast.evaluate.knn import knn_accuracy
from big_contrast.evaluate.linear_probe import held_out_score
from big_contrast.evaluate.linear_probe import linear_probe as fit_linear_probe
from big_contrast.evaluate.multilabel_probe import average_precision, multilabel_probe
from big_contrast.evaluate.retrieval import retrieval_recall
from big_contrast.evaluate.zero_shot import zero_shot_accuracy, zero_shot_classifier
from big_contrast.models import vit

log = logging.getLogger(__name__)

EvaluatorFn = Callable[[ml_collections.ConfigDict, Encoder], dict[str, float]]

# Every `config.eval` key the evaluators read (`config_lib.eval_config` builds the block).
DEFAULTS: dict[str, Any] = {
  "batch_size": 256,  # global batch of feature extraction
  "at_end": ("linear_probe",),  # the evaluators of the end-of-run evaluation
  "probe_split": "train",  # the split probes and kNN fit on; they score config.data.eval_split
  "baselines": False,  # linear_probe also on raw pixels and on the model at random init
  "raw_pixels_size": None,  # raw-pixel baseline: average-pool images to this side first
  "zero_shot_templates": (),  # prompts with one {} for the class name; none: no zero-shot
  # Class names of the zero-shot prompts; () takes them from the dataset's ClassLabel.
  "zero_shot_class_names": (),
  "knn_k": 20,  # neighbours of the kNN evaluator
  # Candidate probe features: the last n blocks' pooled outputs, concatenated (DINO's
  # linear evaluation), for each n here; the probe keeps the candidate that scores best on
  # its held-out part of the probe split (`linear_probe.held_out_score`). (1,): the final
  # block only, as `encode_image` reads it.
  "probe_last_blocks": (1,),
}


@dataclasses.dataclass(frozen=True)
class Evaluator:
  fn: EvaluatorFn
  needs: frozenset[str]  # modalities the encoder must embed


def _scalars(prefix: str, d: dict) -> dict[str, float]:
  return {f"{prefix}/{k}": float(v) for k, v in d.items() if np.isscalar(v)}


def _probe(train: dict, test: dict, seed: int) -> dict[str, float]:
  """Multinomial probe on `label`, or one-vs-rest on multi-hot `labels` when that is all."""
  if "label" in train:
    return fit_linear_probe(
      train["features"], train["label"], test["features"], test["label"], seed=seed
    )
  if "labels" in train:
    return multilabel_probe(
      train["features"], train["labels"], test["features"], test["labels"], seed=seed
    )
  raise ValueError(
    "the probe needs a 'label' or multi-hot 'labels' field in the eval data (config.data.label_key)"
  )


def probe_blocks(config: ml_collections.ConfigDict, *, warn: bool = True) -> tuple[int, ...]:
  """The usable candidates of `config.eval.probe_last_blocks`, or a clear error.

  A ViT offers its `depth` blocks (one with pool='map', whose head pools only the
  last), a ResNet one. Candidates beyond that are dropped, with a warning (a
  recipe's (1, 2) on a tower shrunk to one block probes the one); none left, or a
  malformed list, is an error naming the key.
  """
  raw = config.eval.probe_last_blocks
  try:
    blocks = tuple(int(n) for n in raw)
  except (TypeError, ValueError):
    blocks = ()
  if not blocks or min(blocks) < 1 or len(set(blocks)) != len(blocks):
    raise ValueError(
      f"config.eval.probe_last_blocks={raw!r} must list distinct block counts >= 1, "
      "e.g. (1,) or (1, 2)"
    )
  image = config.model.get("image")
  if image is None or max(blocks) == 1:
    return blocks
  name = image.get("name", "vit")
  offered = 1
  if name == "vit" and image.get("pool", "gap") != "map":
    offered = image.get("depth")
    if offered is None and image.get("variant"):
      offered = vit.parse_variant(image["variant"])["depth"]
    if offered is None:
      return blocks  # the tower's own constructor names what is missing
  usable = tuple(n for n in blocks if n <= offered)
  if not usable:
    raise ValueError(
      f"config.eval.probe_last_blocks={blocks}: the {name} image tower "
      f"(config.model.image) offers the last {offered} block(s) at most"
    )
  if warn and usable != blocks:
    print(
      f"WARNING: config.eval.probe_last_blocks={blocks}: the {name} image tower offers "
      f"{offered} block(s); probing {usable}",
      flush=True,
    )
  return usable


def _probe_best_blocks(train: dict, test: dict, blocks: tuple[int, ...], seed: int) -> dict:
  """Probes the last n of the block features [N, blocks, w] for each n; keeps the best
  held-out one. Ties go to the candidate listed first. The chosen n is returned as
  `last_blocks`.
  """

  def last(d: dict, n: int) -> dict:
    x = d["features"][:, -n:]
    return {**d, "features": x.reshape(len(x), -1)}

  results = {n: _probe(last(train, n), last(test, n), seed) for n in blocks}
  best = max(blocks, key=lambda n: held_out_score(results[n]))  # first of equals
  return {**results[best], "last_blocks": best}


def linear_probe(config, encoder: Encoder) -> dict[str, float]:
  train_split, test_split = config.eval.probe_split, config.data.eval_split
  blocks = probe_blocks(config)

  def probe(enc: Encoder) -> dict[str, float]:
    if blocks == (1,):
      return _probe(
        features.image_features(config, enc, train_split),
        features.image_features(config, enc, test_split),
        config.seed,
      )
    deepest = max(blocks)
    return _probe_best_blocks(
      features.image_features(config, enc, train_split, last_blocks=deepest),
      features.image_features(config, enc, test_split, last_blocks=deepest),
      blocks,
      config.seed,
    )

  results = _scalars("probe", probe(encoder))
  if config.eval.baselines:
    raw = _probe(
      features.raw_pixels(config, train_split), features.raw_pixels(config, test_split), config.seed
    )
    rnd = probe(encoder.random_init(config.seed + 1))
    for prefix, d in (("probe_raw_pixels", raw), ("probe_random_init", rnd)):
      results.update(
        {
          f"{prefix}/{k}": float(v)
          for k, v in d.items()
          if k in ("top1", "macro_map", "last_blocks")
        }
      )
  return results


def knn(config, encoder: Encoder) -> dict[str, float]:
  """kNN accuracy; with fewer train points than `eval.knn_k` it votes over all of them
  (k = n, the limit of the k-neighbourhood), says so and records the k used as `knn/k`."""
  train = features.image_features(config, encoder, config.eval.probe_split)
  test = features.image_features(config, encoder, config.data.eval_split)
  if "label" not in train:
    raise ValueError("kNN needs a 'label' field in the eval data (config.data.label_key)")
  k, n = config.eval.knn_k, len(train["features"])
  if n and k > n:
    print(
      f"WARNING: kNN: config.eval.knn_k={k} but {config.eval.probe_split!r} has {n} points; "
      f"voting over all {n}",
      flush=True,
    )
  return _scalars(
    "knn",
    knn_accuracy(
      train["features"],
      train["label"],
      test["features"],
      test["label"],
      k=k,
      mesh=encoder.mesh,
    ),
  )


def _zero_shot_classes(config, encoder: Encoder) -> np.ndarray:
  """[C, d] class embeddings: `config.eval.zero_shot_templates` for each class name."""
  encode = encoder.fn("encode_text")
  names = list(config.eval.zero_shot_class_names) or pipeline.class_names(config.data)
  return zero_shot_classifier(
    lambda texts: np.asarray(encode(encoder.tokenize(texts))),
    names,
    list(config.eval.zero_shot_templates),
  )


def zero_shot(config, encoder: Encoder) -> dict[str, float]:
  if not config.eval.zero_shot_templates:
    return {}
  classifier = _zero_shot_classes(config, encoder)
  emb = features.image_features(config, encoder, config.data.eval_split, projected=True)
  return _scalars("zero_shot", zero_shot_accuracy(emb["features"], emb["label"], classifier))


def zero_shot_multilabel(config, encoder: Encoder) -> dict[str, float]:
  """Zero-shot multi-label: cos(image, class prompt embedding) as scores, mAP over `labels`.

  Class names come from `config.eval.zero_shot_class_names`, else from the
  dataset's ClassLabel; the eval split must carry multi-hot `labels`
  (e.g. `bc_digits_grid`, whose names are the ten digits' words).
  """
  if not config.eval.zero_shot_templates:
    return {}
  classes = _zero_shot_classes(config, encoder)
  emb = features.image_features(config, encoder, config.data.eval_split, projected=True)
  if "labels" not in emb:
    raise ValueError(
      f"zero_shot_multilabel needs multi-hot 'labels' in {config.data.name!r}'s "
      f"{config.data.eval_split!r} split; it has {sorted(emb)}"
    )
  if emb["labels"].shape[1] != classes.shape[0]:
    raise ValueError(
      f"{classes.shape[0]} class names (config.eval.zero_shot_class_names) for "
      f"{emb['labels'].shape[1]} labels of {config.data.name!r}"
    )
  scores = emb["features"] @ classes.T  # both L2-normalised: cosines
  return {
    f"zero_shot_multilabel/{average}_map": average_precision(scores, emb["labels"], average)
    for average in ("macro", "micro")
  }


def retrieval(config, encoder: Encoder) -> dict[str, float]:
  """Each eval example's image against its caption; all other captions are negatives."""
  img, txt = features.image_text_embeddings(config, encoder, config.data.eval_split)
  _, caption_group = np.unique(txt["text_id"], return_inverse=True)
  if caption_group.max() + 1 == len(caption_group):
    matches = np.arange(len(caption_group))  # text i describes image i
  else:  # identical captions are positives of every image that carries one
    matches = caption_group[:, None] == caption_group[None, :]  # [texts, images]
  return _scalars(
    "retrieval", retrieval_recall(img["features"], txt["features"], text_to_image=matches)
  )


# Uniformity compares every pair: beyond this many rows, the first ones (by index) stand in.
_MAX_UNIFORMITY_ROWS = 4096


def diagnostics(config, encoder: Encoder) -> dict[str, float]:
  """Effective rank and uniformity (Wang & Isola, t = 2) of the eval split's embeddings;
  for image-text models also the alignment (α = 2) of each image with its caption."""
  split = config.data.eval_split
  txt = None
  if {"image", "text"} <= encoder.modalities:
    img, txt = features.image_text_embeddings(config, encoder, split)
  elif "text" in encoder.modalities:
    img = features.text_embeddings(config, encoder, split)
  else:
    img = features.image_features(config, encoder, split, projected=True)
  z = img["features"]
  out = {
    "diagnostics/effective_rank": float(effective_rank(z)),
    "diagnostics/uniformity": float(losses.uniformity(jnp.asarray(z[:_MAX_UNIFORMITY_ROWS]))),
  }
  if txt is not None:
    out["diagnostics/alignment"] = float(
      losses.alignment(jnp.asarray(z), jnp.asarray(txt["features"]))
    )
  return out


def lee_similarity(config, encoder: Encoder) -> dict[str, float]:
  """Lee et al. (2005) document similarity: ρ(embedding cosine, human ratings), and baselines'.

  A document's embedding is the mean of its sentences' projected embeddings. Baselines
  that need no training, for scale: `tfidf` (whole documents, stop words removed),
  `tfidf_sentences` (the same vectors per sentence, pooled per document as ours are) and
  `lsa` (those sentence vectors reduced to the embedding's dimension by an SVD fitted on
  the train split's sentences, then pooled: what a dense embedding of this size reaches
  from word co-occurrence alone). The 50 rated documents are the only evaluation set:
  choosing settings on these numbers overfits them.
  """
  if config.data.name != "bc_lee":
    return {}
  human = lee.human_similarity()
  emb = features.text_embeddings(config, encoder, config.data.eval_split)
  docs = text_similarity.mean_by_doc(emb["features"], emb["doc"])
  if len(docs) != len(human):
    raise ValueError(
      f"the eval split has {len(docs)} documents, the ratings {len(human)}: "
      "set config.data.eval_split='test'"
    )
  train_sentences = lee.train_sentences()
  test = [
    (d, s) for d, document in enumerate(lee.documents("test")) for s in lee.sentences(document)
  ]
  sentences, sentence_doc = [s for _, s in test], np.array([d for d, _ in test])
  tfidf = text_similarity.tfidf_similarity
  similarities = {
    "": text_similarity.cosine_matrix(docs),
    "_tfidf": tfidf(lee.documents("train"), lee.documents("test")),
    "_tfidf_sentences": tfidf(train_sentences, sentences, doc=sentence_doc),
    "_lsa": tfidf(train_sentences, sentences, doc=sentence_doc, dim=docs.shape[1]),
  }
  iu = np.triu_indices(len(human), 1)
  # Pearson too: the literature on this corpus reports it (the ratings are heavily
  # tied at low values, which lowers Spearman's ρ for every method).
  out = {}
  for suffix, sim in similarities.items():
    out[f"lee/spearman{suffix}"] = text_similarity.upper_spearman(sim, human)
    out[f"lee/pearson{suffix}"] = float(np.corrcoef(sim[iu], human[iu])[0, 1])
  return out


IMAGE, TEXT = frozenset({"image"}), frozenset({"text"})

EVALUATORS: dict[str, Evaluator] = {
  "linear_probe": Evaluator(linear_probe, IMAGE),
  "knn": Evaluator(knn, IMAGE),
  "zero_shot": Evaluator(zero_shot, IMAGE | TEXT),
  "zero_shot_multilabel": Evaluator(zero_shot_multilabel, IMAGE | TEXT),
  "retrieval": Evaluator(retrieval, IMAGE | TEXT),
  "diagnostics": Evaluator(diagnostics, frozenset()),
  "lee_similarity": Evaluator(lee_similarity, TEXT),
}


def run(
  names: Sequence[str], config: ml_collections.ConfigDict, encoder: Encoder
) -> dict[str, Any]:
  """The named evaluators that apply to `encoder`, as one flat dict of results.

  An evaluator that cannot run on the given data says so with a ValueError (a
  probe on data without labels, too few examples for a fit, ...): it is
  recorded under `results["skipped"][name]` with the reason, a warning is
  printed, and the others still run. Any other exception is a bug and propagates.
  """
  unknown = [n for n in names if n not in EVALUATORS]
  if unknown:
    raise ValueError(f"unknown evaluator(s) {unknown}; expected some of {sorted(EVALUATORS)}")
  results: dict[str, Any] = {}
  skipped: dict[str, str] = {}
  for name in names:
    if not EVALUATORS[name].needs <= encoder.modalities:
      continue
    try:
      results.update(EVALUATORS[name].fn(config, encoder))
    except ValueError as e:
      skipped[name] = (str(e).splitlines() or [type(e).__name__])[0]
      log.warning("evaluator %s skipped: %s", name, skipped[name])
      print(f"WARNING: evaluator {name!r} skipped: {skipped[name]}", flush=True)
  if skipped:
    results["skipped"] = skipped
  return results


def evaluate_run(config: ml_collections.ConfigDict, encoder: Encoder) -> dict[str, Any]:
  """The end-of-run evaluation: `config.eval.at_end` evaluators, after the checkpoint's step."""
  return {"step": encoder.step, **run(list(config.eval.at_end), config, encoder)}


def format_table(results: dict[str, Any]) -> str:
  """A two-column table of the scalar results."""
  rows = [(k, v) for k, v in results.items() if isinstance(v, (int, float))]
  width = max(len(k) for k, _ in rows)
  lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
  for k, v in rows:
    lines.append(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
  return "\n".join(lines)
