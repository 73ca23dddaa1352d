"""SimCSE: dropout views, determinism in (seed, step), the Lee evaluator, the tiny variant."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from big_contrast import data, models, sharding, train
from big_contrast.data import lee, pipeline
from big_contrast.data import tokenizer as tokenizer_lib
from big_contrast.evaluate import text_similarity
from big_contrast.state import Trainee

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import simcse

pytest.importorskip("gensim")


def _config(data_dir, dropout=0.1):
  c = simcse.get_config("tiny")
  c.data.data_dir = str(data_dir)
  c.batch_size = 32
  c.text.max_len = 64
  c.model.text.update(width=32, depth=1, heads=2, mlp_dim=64, dropout=dropout)
  c.model.embed_dim = 16
  c.optim.update(warmup_steps=0, end_lr_fraction=1.0)
  return c


def _model_cfg(dropout):
  cfg = simcse.get_config("tiny").model
  cfg.text.update(width=32, depth=1, heads=2, mlp_dim=64, dropout=dropout)
  cfg.embed_dim = 16
  return cfg


def _tokens():
  return jnp.asarray(
    tokenizer_lib.make_tokenizer("bytes").encode_batch(
      ["a first sentence.", "the second one, longer than the first"], 16
    )
  )


def test_dropout_views_differ_and_coincide_without_dropout():
  key = jax.random.key(3)
  z = models.text_only(_model_cfg(0.1), vocab_size=259, text_max_len=16, rngs=nnx.Rngs(0))(
    _tokens(), key
  )["z"]
  assert z.shape == (2, 2, 16)
  assert not np.allclose(z[:, 0], z[:, 1], atol=1e-4)
  np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, rtol=1e-5)
  z0 = models.text_only(_model_cfg(0.0), vocab_size=259, text_max_len=16, rngs=nnx.Rngs(0))(
    _tokens(), key
  )["z"]
  np.testing.assert_array_equal(z0[:, 0], z0[:, 1])
  # No key (the evaluation pass): deterministic even with dropout > 0.
  zn = models.text_only(_model_cfg(0.1), vocab_size=259, text_max_len=16, rngs=nnx.Rngs(0))(
    _tokens()
  )["z"]
  np.testing.assert_array_equal(zn[:, 0], zn[:, 1])


def _setup(config):
  mesh = sharding.make_mesh(config.mesh)
  tok = tokenizer_lib.make_tokenizer("bytes")
  it = pipeline.train_iterator(
    config.data,
    kind="text",
    global_batch_size=config.batch_size,
    seed=config.seed,
    tokenizer=tok,
    text_max_len=config.text.max_len,
    process_index=0,
    process_count=1,
  )
  batch = {k: v for k, v in next(it).items() if k != "skipped"}
  assert batch["text"].shape == (config.batch_size, config.text.max_len)
  assert batch["text"].dtype == np.int32 and "doc" in batch and "index" in batch
  trainee = Trainee(config, mesh, vocab_size=tok.vocab_size)
  return trainee, sharding.host_batch_to_global(batch, mesh)


def test_step_is_deterministic_in_seed_and_step_and_loss_decreases(data_dir):
  config = _config(data_dir)
  trainee, batch = _setup(config)
  step = train.make_train_step(trainee)
  runs = []
  for _ in range(2):
    state = trainee.init(config.seed)
    losses = []
    for _ in range(5):  # the same batch: the loss must go down
      state, metrics = step(state, batch)
      losses.append(float(metrics["loss"]))
    runs.append((losses, jax.device_get(state["params"])))
  assert runs[0][0] == runs[1][0]
  jax.tree.map(np.testing.assert_array_equal, runs[0][1], runs[1][1])
  assert np.all(np.isfinite(runs[0][0])) and runs[0][0][-1] < runs[0][0][0], runs[0][0]
  # Another step number draws other masks: same params, step 0 vs step 7 → other loss.
  s0 = trainee.init(config.seed)
  s7 = dict(trainee.init(config.seed), step=jnp.asarray(7, jnp.int32))
  s7 = jax.device_put(s7, trainee.shardings)
  assert float(step(s0, batch)[1]["loss"]) != float(step(s7, batch)[1]["loss"])


def test_microbatches_with_dropout_is_refused(data_dir):
  config = _config(data_dir)
  config.microbatches = 2
  trainee, _ = _setup(config)
  with pytest.raises(ValueError, match="microbatches"):
    train.make_train_step(trainee)


def test_lee_pieces_on_hand_checkable_cases():
  human = np.array([[1.0, 0.9, 0.1], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])  # upper triangle
  # Pairs (0,1), (0,2), (1,2) ranked 0.9 > 0.5 > 0.1 by the humans.
  same_order = np.array([[1, 0.8, 0.0], [0.8, 1, 0.3], [0.0, 0.3, 1]])
  assert text_similarity.upper_spearman(same_order, human) == pytest.approx(1.0)
  assert text_similarity.upper_spearman(-same_order, human) == pytest.approx(-1.0)
  # Sentences 0, 1 → doc 0; sentence 2 → doc 1: doc 0 is their mean.
  docs = text_similarity.mean_by_doc(
    np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), np.array([0, 0, 1])
  )
  np.testing.assert_allclose(docs, [[0.5, 0.5], [1.0, 1.0]])
  np.testing.assert_allclose(text_similarity.cosine_matrix(docs), np.ones((2, 2)), atol=1e-12)
  sim = text_similarity.tfidf_similarity(
    ["cats purr", "dogs bark"], ["cats purr", "dogs bark", "cats purr loudly"]
  )
  assert sim[0, 2] > 0 and sim[0, 1] == 0
  # Sentence pooling: doc 0 = {cats, dogs}, doc 1 = {cats}, doc 2 = {dogs}: doc 0 is halfway.
  background = ["cats purr", "dogs bark", "cats sleep", "dogs run"]
  pooled = text_similarity.tfidf_similarity(
    background, ["cats purr", "dogs bark", "cats purr", "dogs bark"], doc=np.array([0, 0, 1, 2])
  )
  np.testing.assert_allclose(pooled[0, 1], np.sqrt(0.5))
  np.testing.assert_allclose(pooled[0, 2], np.sqrt(0.5))
  assert pooled[1, 2] == pytest.approx(0, abs=1e-12)
  # LSA to 2 dimensions keeps the cats/dogs split of this background.
  lsa = text_similarity.tfidf_similarity(background, ["cats purr", "cats sleep", "dogs run"], dim=2)
  assert lsa[0, 1] > 0.9 and abs(lsa[0, 2]) < 0.1


def test_lee_sentencepiece_model_is_trained_on_the_train_split_and_cached(data_dir):
  path = lee.sentencepiece_model(500, data_dir=str(data_dir))
  assert lee.sentencepiece_model(500, data_dir=str(data_dir)) == path
  tok = tokenizer_lib.make_tokenizer(path)
  assert (tok.pad_id, tok.eos_id, tok.vocab_size) == (0, 2, 500)
  ids = tok.encode_batch(lee.train_sentences()[:3], 64)
  assert ids.shape == (3, 64) and (ids == tok.eos_id).sum() == 3
  assert len(lee.train_sentences()) > 2000  # the 300 background documents' sentences


def test_tiny_config_uses_the_lee_vocabulary(data_dir):
  c = simcse.get_config("tiny")
  assert c.model.text.pool == "mean" and not c.model.text.causal
  tok = data.make_tokenizer(c.text.tokenizer, str(data_dir))
  assert tok.vocab_size == 4000
  assert os.path.isfile(os.path.join(data_dir, "bc_lee_tokenizer", "train_unigram_4000.model"))
  with pytest.raises(ValueError, match="bc_lee:VOCAB_SIZE"):
    data.make_tokenizer("bc_lee:many")


def test_bundled_lee_data_and_ratings(data_dir):
  assert len(lee.documents("train")) == 300 and len(lee.documents("test")) == 50
  human = lee.human_similarity()
  assert human.shape == (50, 50) and np.allclose(human, human.T)
  batches = pipeline.eval_batches(
    {"name": "bc_lee", "data_dir": str(data_dir)},
    kind="text",
    batch_size=64,
    tokenizer=tokenizer_lib.make_tokenizer("bytes"),
    text_max_len=32,
  )
  docs = np.concatenate([b["doc"][b["mask"]] for b in batches])
  assert set(docs.tolist()) == set(range(50))
