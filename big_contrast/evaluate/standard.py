"""Evaluators over a trained model: the end of every run, and `python -m big_contrast.evaluate`.

Each evaluator reads the run's config, the model (`train.Trainee`) and its
state, extracts frozen features over the mesh, and calls the pure functions of
`big_contrast.evaluate`:

  linear_probe  backbone features → multinomial logistic probe (L2 swept on a
                held-out part of the probe split); with `config.eval.baselines`
                also raw pixels and the same encoder at random initialisation
  knn           weighted cosine kNN on backbone features
  zero_shot     image-text models: class-name prompts through the text tower
  retrieval     image-text models: image↔caption Recall@{1,5,10} on the eval split
  diagnostics   effective rank, uniformity (and image-caption alignment) of the
                eval split's embeddings
  lee_similarity  text models on the bundled Lee corpus (`bc_lee`): Spearman
                correlation of document-embedding cosines with the 50×50 human
                similarity ratings, beside a TF-IDF bag-of-words baseline
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from big_contrast import evaluate, losses
from big_contrast.data import augment, pipeline
from big_contrast.data import tokenizer as tokenizer_lib
from big_contrast.evaluate import extract as extract_lib

EVALUATORS = ("linear_probe", "knn", "zero_shot", "retrieval", "diagnostics", "lee_similarity")


def _eval_batches(config, split: str, kind: str, tokenizer=None):
  n_proc = jax.process_count()
  if config.eval.batch_size % n_proc:
    raise ValueError(
      f"config.eval.batch_size={config.eval.batch_size} must be divisible by the {n_proc} processes"
    )
  return pipeline.eval_batches(
    config.data,
    split,
    kind=kind,
    batch_size=config.eval.batch_size // n_proc,
    tokenizer=tokenizer,
    text_max_len=config.get("text", {}).get("max_len", 32),
    process_index=jax.process_index(),
    process_count=n_proc,
  )


def _model_fn(trainee, state, method: str):
  """A jitted `model.<method>(x)` closed over the state, for `extract`."""

  @jax.jit
  def fn(params, rest, x):
    return getattr(trainee.model(params, rest), method)(x)

  return lambda x: fn(state["params"], state["rest"], x)


def image_features(config, trainee, state, split: str, *, projected: bool = False):
  """{'features', 'label', 'index'} over `split`: backbone (or projected) image features."""
  fn = _model_fn(trainee, state, "encode_image" if projected else "image_features")
  return extract_lib.extract(
    lambda b: fn(b["image"]),
    _eval_batches(config, split, "image"),
    trainee.mesh,
    inputs=("image",),
    keep=("label", "labels"),
  )


def raw_pixels(config, split: str) -> dict[str, np.ndarray]:
  """Flattened eval images: the raw-pixel baseline's features.

  Images are average-pooled to `config.eval.raw_pixels_size` on a side (when
  set), e.g. 8 for the digits, whose native resolution is 8×8: the probe then
  sees the original pixels instead of 48× redundant upsampled copies.
  """
  size = config.eval.get("raw_pixels_size")
  rows, index, meta = [], [], {}
  for b in pipeline.eval_batches(
    config.data, split, kind="image", batch_size=config.eval.batch_size
  ):
    m = b["mask"].astype(bool)
    images = augment.to_unit_range(b["image"][m])  # the models' [-1, 1] input range
    if size:
      n, h, w, c = images.shape
      if h % size or w % size:
        raise ValueError(
          f"config.eval.raw_pixels_size={size} does not divide the {h}x{w} eval images"
        )
      images = images.reshape(n, size, h // size, size, w // size, c).mean(axis=(2, 4))
    rows.append(images.reshape(len(images), -1))
    index.append(b["index"][m])
    for key in ("label", "labels"):
      if key in b:
        meta.setdefault(key, []).append(b[key][m])
  order = np.argsort(np.concatenate(index))
  return dict(
    features=np.concatenate(rows)[order], **{k: np.concatenate(v)[order] for k, v in meta.items()}
  )


def _probe(train: dict, test: dict, seed: int) -> dict[str, float]:
  """Multinomial probe on `label`, or one-vs-rest on multi-hot `labels` when that is all."""
  if "label" in train:
    return evaluate.linear_probe(
      train["features"], train["label"], test["features"], test["label"], seed=seed
    )
  if "labels" in train:
    return evaluate.multilabel_probe(
      train["features"], train["labels"], test["features"], test["labels"], seed=seed
    )
  raise ValueError(
    "the probe needs a 'label' or multi-hot 'labels' field in the eval data (config.data.label_key)"
  )


def _scalars(prefix: str, d: dict) -> dict[str, float]:
  return {f"{prefix}/{k}": float(v) for k, v in d.items() if np.isscalar(v)}


def linear_probe(config, trainee, state, **_) -> dict[str, float]:
  train_split, test_split = config.eval.probe_split, config.data.eval_split
  results = _scalars(
    "probe",
    _probe(
      image_features(config, trainee, state, train_split),
      image_features(config, trainee, state, test_split),
      config.seed,
    ),
  )
  if config.eval.get("baselines", False):
    raw = _probe(raw_pixels(config, train_split), raw_pixels(config, test_split), config.seed)
    results.update(
      {f"probe_raw_pixels/{k}": float(v) for k, v in raw.items() if k in ("top1", "macro_map")}
    )
    random_state = trainee.init(config.seed + 1)
    rnd = _probe(
      image_features(config, trainee, random_state, train_split),
      image_features(config, trainee, random_state, test_split),
      config.seed,
    )
    results.update(
      {f"probe_random_init/{k}": float(v) for k, v in rnd.items() if k in ("top1", "macro_map")}
    )
  return results


def knn(config, trainee, state, **_) -> dict[str, float]:
  train = image_features(config, trainee, state, config.eval.probe_split)
  test = image_features(config, trainee, state, config.data.eval_split)
  return _scalars(
    "knn",
    evaluate.knn_accuracy(
      train["features"],
      train["label"],
      test["features"],
      test["label"],
      k=config.eval.get("knn_k", 20),
    ),
  )


def _encode_texts_fn(config, trainee, state, tokenizer):
  fn = _model_fn(trainee, state, "encode_text")
  return lambda texts: np.asarray(fn(tokenizer.encode_batch(list(texts), config.text.max_len)))


def zero_shot(config, trainee, state, *, tokenizer=None) -> dict[str, float]:
  if config.task != "image_text" or not config.eval.get("zero_shot_templates"):
    return {}
  classifier = evaluate.zero_shot_classifier(
    _encode_texts_fn(config, trainee, state, tokenizer),
    pipeline.class_names(config.data),
    list(config.eval.zero_shot_templates),
  )
  emb = image_features(config, trainee, state, config.data.eval_split, projected=True)
  return _scalars(
    "zero_shot", evaluate.zero_shot_accuracy(emb["features"], emb["label"], classifier)
  )


def _image_text_embeddings(config, trainee, state, tokenizer):
  """Projected image and caption embeddings of the eval split, row i of each from example i."""
  fi = _model_fn(trainee, state, "encode_image")
  ft = _model_fn(trainee, state, "encode_text")
  batches = _eval_batches(config, config.data.eval_split, "image_text", tokenizer)
  img = extract_lib.extract(lambda b: fi(b["image"]), batches, trainee.mesh, inputs=("image",))
  txt = extract_lib.extract(
    lambda b: ft(b["text"]), batches, trainee.mesh, inputs=("text",), keep=("text_id",)
  )
  return img, txt


def retrieval(config, trainee, state, *, tokenizer=None) -> dict[str, float]:
  """Each eval example's image against its caption; all other captions are negatives."""
  if config.task != "image_text":
    return {}
  img, txt = _image_text_embeddings(config, trainee, state, tokenizer)
  _, caption_group = np.unique(txt["text_id"], return_inverse=True)
  if caption_group.max() + 1 == len(caption_group):
    matches = np.arange(len(caption_group))  # text i describes image i
  else:  # identical captions are positives of every image that carries one
    matches = caption_group[:, None] == caption_group[None, :]  # [texts, images]
  return _scalars(
    "retrieval", evaluate.retrieval_recall(img["features"], txt["features"], text_to_image=matches)
  )


# Uniformity compares every pair: beyond this many rows, the first ones (by index) stand in.
_MAX_UNIFORMITY_ROWS = 4096


def diagnostics(config, trainee, state, *, tokenizer=None) -> dict[str, float]:
  """Effective rank and uniformity (Wang & Isola, t = 2) of the eval split's embeddings;
  for image-text models also the alignment (α = 2) of each image with its caption."""
  if config.task == "image_text":
    img, txt = _image_text_embeddings(config, trainee, state, tokenizer)
  elif config.task == "text":
    img, txt = text_embeddings(config, trainee, state, tokenizer), None
  else:
    img, txt = image_features(config, trainee, state, config.data.eval_split, projected=True), None
  z = img["features"]
  out = {
    "diagnostics/effective_rank": float(evaluate.effective_rank(z)),
    "diagnostics/uniformity": float(losses.uniformity(jnp.asarray(z[:_MAX_UNIFORMITY_ROWS]))),
  }
  if txt is not None:
    out["diagnostics/alignment"] = float(
      losses.alignment(jnp.asarray(z), jnp.asarray(txt["features"]))
    )
  return out


def text_embeddings(config, trainee, state, tokenizer, split: str | None = None):
  """{'features' [N, D] (projected, L2-normalised), 'index'[, 'doc']} of a text split."""
  fn = _model_fn(trainee, state, "encode_text")
  batches = _eval_batches(config, split or config.data.eval_split, "text", tokenizer)
  return extract_lib.extract(
    lambda b: fn(b["text"]), batches, trainee.mesh, inputs=("text",), keep=("doc",)
  )


def upper_spearman(similarity: np.ndarray, human: np.ndarray) -> float:
  """Spearman's ρ between two [n, n] similarity matrices over the pairs i < j."""
  from scipy import stats  # noqa: PLC0415

  iu = np.triu_indices(len(human), 1)
  return float(stats.spearmanr(similarity[iu], human[iu]).statistic)


def cosine_matrix(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  return x @ x.T


def mean_by_doc(features: np.ndarray, doc: np.ndarray) -> np.ndarray:
  """Document embeddings [D, d]: the mean of each document's (normalised) sentence rows."""
  n = int(doc.max()) + 1
  out = np.zeros((n, features.shape[1]), np.float64)
  np.add.at(out, doc, features)
  counts = np.bincount(doc, minlength=n)
  if (counts == 0).any():
    raise ValueError(f"documents {np.flatnonzero(counts == 0).tolist()} have no sentences")
  return out / counts[:, None]


def tfidf_similarity(
  background: list[str],
  documents: list[str],
  *,
  doc: np.ndarray | None = None,
  dim: int | None = None,
) -> np.ndarray:
  """Cosine similarity of TF-IDF bag-of-words vectors (vocabulary and IDF from `background`).

  With `doc`, `documents` are sentences and `doc[i]` the document of sentence i: each
  document is the mean of its L2-normalised sentence vectors, as `lee_similarity` pools
  the model's. With `dim`, the vectors are first reduced to `dim` dense dimensions by a
  truncated SVD fitted on `background` (LSA, ARPACK from a fixed start: the same for
  every run): a dense baseline of the embedding's size.
  """
  from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: PLC0415

  vec = TfidfVectorizer(stop_words="english", sublinear_tf=True).fit(background)
  x = vec.transform(documents)
  if dim is not None:
    from sklearn.decomposition import TruncatedSVD  # noqa: PLC0415

    svd = TruncatedSVD(dim, algorithm="arpack", random_state=0)
    x = svd.fit(vec.transform(background)).transform(x)
  else:
    x = x.toarray()
  if doc is not None:
    x = mean_by_doc(x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12), doc)
  return cosine_matrix(x)


def lee_similarity(config, trainee, state, *, tokenizer=None) -> dict[str, float]:
  """Lee et al. (2005) document similarity: ρ(embedding cosine, human ratings), and TF-IDF's.

  A document's embedding is the mean of its sentences' projected embeddings. Baselines
  that need no training, for scale: `tfidf` (whole documents, stop words removed),
  `tfidf_sentences` (the same vectors per sentence, pooled per document as ours are) and
  `lsa` (those sentence vectors reduced to the embedding's dimension by an SVD fitted on
  the train split's sentences, then pooled: what a dense embedding of this size reaches
  from word co-occurrence alone). The 50 rated documents are the only evaluation set:
  choosing settings on these numbers overfits them.
  """
  if config.task != "text" or config.data.name != "bc_lee":
    return {}
  from big_contrast.data import lee  # noqa: PLC0415 — needs gensim's data files

  human = lee.human_similarity()
  emb = text_embeddings(config, trainee, state, tokenizer)
  docs = mean_by_doc(emb["features"], emb["doc"])
  if len(docs) != len(human):
    raise ValueError(
      f"the eval split has {len(docs)} documents, the ratings {len(human)}: "
      f"set config.data.eval_split='test'"
    )
  train_sentences = lee.train_sentences()
  test = [
    (d, s) for d, document in enumerate(lee.documents("test")) for s in lee.sentences(document)
  ]
  sentences, sentence_doc = [s for _, s in test], np.array([d for d, _ in test])
  similarities = {
    "": cosine_matrix(docs),
    "_tfidf": tfidf_similarity(lee.documents("train"), lee.documents("test")),
    "_tfidf_sentences": tfidf_similarity(train_sentences, sentences, doc=sentence_doc),
    "_lsa": tfidf_similarity(train_sentences, sentences, doc=sentence_doc, dim=docs.shape[1]),
  }
  iu = np.triu_indices(len(human), 1)
  # Pearson too: the literature on this corpus reports it (the ratings are heavily
  # tied at low values, which lowers Spearman's ρ for every method).
  out = {}
  for suffix, sim in similarities.items():
    out[f"lee/spearman{suffix}"] = upper_spearman(sim, human)
    out[f"lee/pearson{suffix}"] = float(np.corrcoef(sim[iu], human[iu])[0, 1])
  return out


def run_evaluators(names, config, trainee, state, *, tokenizer=None) -> dict[str, Any]:
  unknown = [n for n in names if n not in EVALUATORS]
  if unknown:
    raise ValueError(f"unknown evaluator(s) {unknown}; expected some of {EVALUATORS}")
  results: dict[str, Any] = {}
  for name in names:
    results.update(globals()[name](config, trainee, state, tokenizer=tokenizer))
  return results


def evaluate_run(config, trainee, state, *, tokenizer=None) -> dict[str, Any]:
  """The end-of-run evaluation: `config.eval.at_end` evaluators as one flat dict."""
  results: dict[str, Any] = {"step": int(jax.device_get(state["step"]))}
  results.update(
    run_evaluators(
      list(config.eval.get("at_end", ("linear_probe", "zero_shot"))),
      config,
      trainee,
      state,
      tokenizer=tokenizer,
    )
  )
  return results


def load_run(config: ml_collections.ConfigDict, mesh, ckpt, *, step: int | None = None):
  """(step, state, trainee, tokenizer) of a run's checkpoint, restored onto `mesh`."""
  from big_contrast import train  # noqa: PLC0415 — train imports this module

  tok = (
    tokenizer_lib.make_tokenizer(config.text.tokenizer, config.data.get("data_dir"))
    if config.task in ("image_text", "text")
    else None
  )
  trainee = train.Trainee(config, mesh, vocab_size=tok.vocab_size if tok else None)
  restored = ckpt.restore(trainee.abstract_state, step=step)
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {os.fspath(ckpt.directory)}")
  step, state = restored
  return step, state, trainee, tok


def format_table(results: dict[str, Any]) -> str:
  """A two-column table of the scalar results."""
  rows = [(k, v) for k, v in results.items() if isinstance(v, (int, float))]
  width = max(len(k) for k, _ in rows)
  lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
  for k, v in rows:
    lines.append(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
  return "\n".join(lines)
