"""Evaluation wired to models and data: sharded feature extraction, the CLI."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_contrast import evaluate, sharding
from big_contrast.data import augment, pipeline
from big_contrast.evaluate import evaluators, features
from big_contrast.models.layers import image_input
from big_contrast.state import Trainee

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("batch_size", [24, 40])  # neither divides the 297 test examples
def test_extract_counts_every_example_once_on_8_devices(data_dir, batch_size):
  data = dict(name="bc_digits", data_dir=data_dir)
  mesh = sharding.make_mesh({"data": -1})
  w = jnp.asarray(np.random.default_rng(0).normal(size=(32 * 32 * 3, 5)), jnp.float32)
  # uint8 pixels in the models' [-1, 1] convention, as the towers see them.
  encode = jax.jit(
    lambda x: image_input(x, jnp.float32).reshape(x.shape[0], -1) @ w,
    out_shardings=sharding.batch_sharding(mesh),
  )
  batches = pipeline.eval_batches(data, "test", kind="image", batch_size=batch_size)
  got = features.extract(lambda b: encode(b["image"]), batches, mesh, inputs=("image",))
  np.testing.assert_array_equal(got["index"], np.arange(297))
  # The same features computed on one device, batch by batch, without padding.
  ref = {}
  for b in pipeline.eval_batches(data, "test", kind="image", batch_size=batch_size):
    for i, m, x, y in zip(b["index"], b["mask"], b["image"], b["label"]):
      if m:
        ref[int(i)] = (augment.to_unit_range(x).reshape(-1) @ np.asarray(w), y)
  np.testing.assert_allclose(
    got["features"], np.stack([ref[i][0] for i in range(297)]), rtol=1e-4, atol=1e-3
  )
  np.testing.assert_array_equal(got["label"], [ref[i][1] for i in range(297)])


@pytest.mark.slow
def test_evaluate_cli_on_a_trained_run(tmp_path):
  # Its own TFDS directory: the run's console must show the first build's one line.
  workdir, data_dir = tmp_path / "run", tmp_path / "tfds"
  train = subprocess.run(
    [
      sys.executable,
      "-m",
      "big_contrast.train",
      "--config=configs/clip.py:digits",
      f"--workdir={workdir}",
      f"--config.data.data_dir={data_dir}",
      "--config.total_steps=3",
      "--config.batch_size=32",
      "--config.model.image.width=32",
      "--config.model.image.depth=1",
      "--config.model.text.width=32",
      "--config.model.text.depth=1",
      "--config.eval.at_end=()",
      "--config.evals=({'evaluator': 'knn', 'every': 2},)",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  assert train.returncode == 0, train.stderr[-3000:]
  # A first run's console: one line about the dataset build, none of TFDS's own messages.
  console = train.stdout + train.stderr
  assert "Building bc_digits, a bundled dataset, once ... train 1,500 + test 297" in console
  for chatter in ("Downloading and preparing", "dataset_info.json", "Shuffling", "Generating"):
    assert chatter not in console, chatter
  assert (workdir / "report.png").stat().st_size > 20_000  # drawn at the end of every run
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert any("eval/knn/knn/top1" in r and r["step"] == 2 for r in rows)  # periodic evaluator
  periodic = json.loads((workdir / "results.json").read_text())["periodic"]
  assert [r["step"] for r in periodic] == [2] and "eval/knn/knn/top1" in periodic[0]

  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "big_contrast.evaluate",
      f"--workdir={workdir}",
      "--eval=all",
      f"--data_dir={data_dir}",
      "--dataset=bc_digits",
      "--split=test",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((workdir / "eval_3.json").read_text())
  for key in (
    "probe/top1",
    "knn/top1",
    "zero_shot/top1",
    "retrieval/i2t_R@1",
    "retrieval/t2i_R@10",
    "diagnostics/effective_rank",
    "diagnostics/uniformity",
    "diagnostics/alignment",
  ):
    assert key in results and np.isfinite(results[key]), key
  assert "probe/top1" in out.stdout


def test_probe_evaluator_is_multilabel_on_the_digit_grids(data_dir):
  sys.path.insert(0, REPO)
  from configs import simclr as simclr_config  # noqa: PLC0415 — the repo root is on the path now

  config = simclr_config.get_config("digits")
  config.data.update(name="bc_digits_grid", data_dir=data_dir, image_size=64)
  config.model.image.update(image_size=64, width=32, depth=2, heads=2, mlp_dim=64, patch=16)
  config.eval.raw_pixels_size = 8
  config.eval.probe_last_blocks = (1, 2)  # chosen by held-out macro mAP
  trainee = Trainee(config, sharding.make_mesh(config.mesh), vocab_size=None)
  results = evaluators.linear_probe(config, evaluate.Encoder(trainee, trainee.init(0)))
  for key in (
    "probe/macro_map",
    "probe/micro_map",
    "probe/f1_macro",
    "probe_raw_pixels/macro_map",
    "probe_random_init/macro_map",
  ):
    assert 0.0 <= results[key] <= 1.0, key
  assert results["probe/last_blocks"] in (1, 2)
  # Each grid cell holds a digit with prior ≈ 0.35 per class; raw pixels do far better.
  assert results["probe_raw_pixels/macro_map"] > 0.6


def test_random_init_encoder_has_inits_parameters_and_reuses_the_compiled_features():
  sys.path.insert(0, REPO)
  from configs import simclr as simclr_config  # noqa: PLC0415 — the repo root is on the path now

  config = simclr_config.get_config("tiny")
  trainee = Trainee(config, sharding.make_mesh(config.mesh), vocab_size=None)
  trained = evaluate.Encoder(trainee, trainee.init(0))
  baseline = trained.random_init(7)
  full = trainee.init(7)
  same = jax.tree.map(np.array_equal, baseline.state["params"], full["params"])
  assert all(jax.tree.leaves(same)) and "opt_state" not in baseline.state
  images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
  a = trained.image_features(images)
  fn = trainee.apply_fn("image_features")
  compiled = fn._cache_size()
  b = baseline.image_features(images)
  assert fn._cache_size() == compiled  # the baseline ran the trained encoder's executable
  assert a.shape == b.shape and not np.allclose(a, b)
