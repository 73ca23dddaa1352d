"""The objectives' side of the trainer: the temperature floor, the momentum encoder, and the
zero-shot multi-label evaluator, on tiny models and the bundled digits."""

import os
import sys

import jax
import numpy as np
import pytest
from sklearn import metrics

from big_contrast import checkpoint, sharding, train
from big_contrast.data import pipeline
from big_contrast.data import tokenizer as tokenizer_lib
from big_contrast.evaluate import Encoder, evaluators
from big_contrast.state import Trainee

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import clip as clip_config
from configs import simclr as simclr_config

FLOOR = 0.05


def _tiny(config, data_dir):
  """Seconds per step on CPU: batch 32, one narrow block, byte tokens (as the tests feed)."""
  config.data.data_dir = str(data_dir)
  if "text" in config:
    config.text.update(tokenizer="bytes", max_len=32)
  config.batch_size = 32
  config.model.image.update(width=32, depth=1, heads=2, mlp_dim=64)
  if "text" in config.model:
    config.model.text.update(width=32, depth=1, heads=2, mlp_dim=64)
  config.model.embed_dim = 16
  config.optim.update(warmup_steps=0, end_lr_fraction=1.0, weight_decay=0.0)
  config.eval.batch_size = 128
  return config


def _first_batch(config, mesh, tok=None):
  it = pipeline.train_iterator(
    config.data,
    kind=config.task,
    global_batch_size=config.batch_size,
    seed=config.seed,
    tokenizer=tok,
    text_max_len=config.text.max_len if tok else 0,
    process_index=0,
    process_count=1,
  )
  return {k: v for k, v in next(it).items() if k != "skipped"}


@pytest.fixture(scope="module")
def clip_run(data_dir):
  """A tiny CLIP whose temperature starts just above a floor of 0.05, with a large lr."""
  config = _tiny(clip_config.get_config("tiny"), data_dir)
  config.model.update(temperature_init=0.055, min_temperature=FLOOR)
  config.optim.lr = 1e-2
  tok = tokenizer_lib.make_tokenizer("bytes")
  mesh = sharding.make_mesh(config.mesh)
  trainee = Trainee(config, mesh, vocab_size=tok.vocab_size)
  return config, trainee, train.make_train_step(trainee), _first_batch(config, mesh, tok), tok


def test_learned_temperature_recovers_from_its_floor(clip_run):
  """Training on one batch drives the temperature down to the floor, where it stops
  (clamped after each update, never below); with every caption made a positive of
  every image the loss wants a higher temperature, and the parameter rises again at
  once: at the floor its gradient is not zero, unlike under a clamp in the forward pass."""
  config, trainee, step, batch, _ = clip_run
  mesh = trainee.mesh
  state = trainee.init(config.seed)
  floor = np.log(FLOOR)
  fitted = sharding.host_batch_to_global(batch, mesh)
  at_floor = 0
  for _ in range(80):
    state, metrics = step(state, fitted)
    log_t = float(state["params"]["log_temperature"])
    assert log_t >= floor - 1e-6, log_t  # never under the floor
    at_floor = at_floor + 1 if log_t <= floor + 1e-6 else 0
    if at_floor == 3:
      break
  assert at_floor == 3, f"the temperature did not reach its floor: {np.exp(log_t):.4f}"
  np.testing.assert_allclose(float(metrics["temperature"]), FLOOR, rtol=1e-5)
  # Every text a positive of every image: uniform targets, best matched by a high τ.
  uniform = sharding.host_batch_to_global(
    dict(batch, text_id=np.zeros_like(batch["text_id"])), mesh
  )
  for _ in range(3):
    state, _ = step(state, uniform)
  assert float(state["params"]["log_temperature"]) > floor + 1e-3


def test_zero_shot_multilabel_scores_image_prompt_cosines_by_map(clip_run, data_dir):
  """On 2×2 digit grids, the evaluator's mAPs are sklearn's on cos(image, class prompts)."""
  config, trainee, _, _, tok = clip_run
  encoder = Encoder(trainee, trainee.init(1), tok)
  names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
  grid = config.copy_and_resolve_references()
  with grid.unlocked():
    grid.data.name = "bc_digits_grid"
    grid.eval.zero_shot_class_names = names
  results = evaluators.run(["zero_shot_multilabel"], grid, encoder)
  assert set(results) == {"zero_shot_multilabel/macro_map", "zero_shot_multilabel/micro_map"}
  # The same numbers from the encoder's host functions and scikit-learn.
  images, labels = [], []
  for b in pipeline.eval_batches(grid.data, "test", kind="image", batch_size=128):
    images.append(b["image"][b["mask"].astype(bool)])
    labels.append(b["labels"][b["mask"].astype(bool)])
  images, labels = np.concatenate(images), np.concatenate(labels)
  classes = []
  for name in names:
    prompts = encoder.encode_text([t.format(name) for t in grid.eval.zero_shot_templates])
    mean = prompts.mean(0)
    classes.append(mean / np.linalg.norm(mean))
  scores = encoder.encode_image(images) @ np.stack(classes).T
  np.testing.assert_allclose(
    results["zero_shot_multilabel/macro_map"],
    metrics.average_precision_score(labels, scores, average="macro"),
    rtol=1e-4,
  )
  np.testing.assert_allclose(
    results["zero_shot_multilabel/micro_map"],
    metrics.average_precision_score(labels, scores, average="micro"),
    rtol=1e-4,
  )
  # The digits' own data has no multi-hot labels: the evaluator is skipped, saying why.
  skipped = evaluators.run(["zero_shot_multilabel"], config, encoder)["skipped"]
  assert "multi-hot 'labels'" in skipped["zero_shot_multilabel"]


def test_momentum_encoder_is_the_ema_of_the_parameters_and_is_checkpointed(data_dir, tmp_path):
  config = _tiny(simclr_config.get_config("tiny_momentum"), data_dir)
  mesh = sharding.make_mesh(config.mesh)
  trainee = Trainee(config, mesh, vocab_size=None)
  assert trainee.momentum == 0.99
  assert jax.tree.all(
    jax.tree.map(lambda a, b: a == b, trainee.shardings["ema_params"], trainee.shardings["params"])
  )
  step = train.make_train_step(trainee)
  batch = sharding.host_batch_to_global(_first_batch(config, mesh), mesh)
  state = trainee.init(config.seed)
  params, ema = jax.device_get((state["params"], state["ema_params"]))
  losses = []
  for i in range(4):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
    m = float(train._momentum_at(i, 0.99, config.total_steps))
    np.testing.assert_allclose(float(metrics["momentum"]), m, rtol=1e-6)
    new_params, new_ema = jax.device_get((state["params"], state["ema_params"]))
    # ema_{t+1} = m_t ema_t + (1 - m_t) params_{t+1}; at step 0 the EMA starts at the params.
    start = params if i == 0 else ema
    jax.tree.map(
      lambda e, s, p, m=m: np.testing.assert_allclose(e, m * s + (1 - m) * p, rtol=1e-5, atol=1e-7),
      new_ema,
      start,
      new_params,
    )
    params, ema = new_params, new_ema
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, ema, params)))
  # Saved and restored with the rest of the state, sharded like the parameters.
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), async_save=False)
  ckpt.save(4, state)
  restored_step, restored = ckpt.restore(trainee.abstract_state)
  ckpt.close()
  assert restored_step == 4
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored["ema_params"]), ema)
  leaf = jax.tree.leaves(restored["ema_params"])[0]
  assert leaf.sharding == jax.tree.leaves(trainee.shardings["params"])[0]
