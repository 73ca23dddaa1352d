"""Photometric augmentation on the device: the host's ops, per example, sharding-invariant."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_contrast import sharding
from big_contrast.data import augment, device_augment, pipeline


def _views(b=8, v=2, size=16, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (b, v, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("seed", range(6))
def test_jitter_equals_the_hosts_for_the_same_draws(seed):
  rng = np.random.default_rng(seed)
  x = rng.random((12, 10, 3)).astype(np.float32)
  order, factors, turns = augment.jitter_params(rng, strength=1.0)
  host = augment.apply_jitter(x, order, factors, turns)
  dev = device_augment.apply_jitter(
    jnp.asarray(x), jnp.asarray(order), jnp.asarray(factors, jnp.float32), jnp.float32(turns)
  )
  np.testing.assert_allclose(np.asarray(dev), host, atol=2e-6)


@pytest.mark.parametrize("sigma", [0.1, 0.3, 0.7, 1.0, 1.6, 2.0])
def test_blur_equals_the_hosts_for_every_sigma_in_range(sigma):
  x = np.random.default_rng(1).random((20, 20, 3)).astype(np.float32)
  max_radius = augment.blur_radius(2.0, 20)
  dev = device_augment.gaussian_blur(jnp.asarray(x), jnp.float32(sigma), max_radius)
  np.testing.assert_allclose(np.asarray(dev), augment.gaussian_blur(x, sigma), atol=2e-6)


def test_no_ops_is_the_plain_unit_range_map():
  views = _views()
  off = dict(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0)
  out = device_augment.photometric(jnp.asarray(views), jnp.arange(8, dtype=jnp.uint32), off)
  np.testing.assert_allclose(np.asarray(out), augment.to_unit_range(views), atol=1e-6)


def test_per_view_probabilities_and_forced_ops():
  views = _views()
  cfg = dict(jitter_prob=0.0, grayscale_prob=(0.0, 1.0), blur_prob=0.0, solarize_prob=(1.0, 0.0))
  out = np.asarray(
    device_augment.photometric(jnp.asarray(views), jnp.arange(8, dtype=jnp.uint32), cfg)
  )
  # View 0 solarized: nothing above the middle grey; view 1 grey: equal channels.
  assert out[:, 0].max() <= 1e-6 and out[:, 1].max() > 0.1
  np.testing.assert_allclose(out[:, 1, ..., 0], out[:, 1, ..., 2], atol=1e-6)
  assert np.abs(out[:, 0, ..., 0] - out[:, 0, ..., 2]).max() > 0.1


def test_multispectral_views_are_grey_blurred_and_solarized_as_on_the_host():
  """13 bands: grayscale is the band mean on every band, blur and solarize per band."""
  views = np.random.default_rng(3).integers(0, 256, (4, 2, 16, 16, 13), dtype=np.uint8)
  cfg = dict(jitter_prob=0.0, grayscale_prob=1.0, blur_prob=0.0, solarize_prob=0.0)
  out = np.asarray(
    device_augment.photometric(jnp.asarray(views), jnp.arange(4, dtype=jnp.uint32), cfg)
  )
  assert out.shape == views.shape
  host = augment.Augment(cfg).photometric(views[0, 0], np.random.default_rng(0))
  np.testing.assert_allclose((out[0, 0] + 1) / 2, host / 255.0, atol=1 / 255 + 1e-6)
  mean = views.astype(np.float32).mean(-1) / 255.0
  np.testing.assert_allclose((out[..., 7] + 1) / 2, mean, atol=1e-5)
  blurred = np.asarray(
    device_augment.photometric(
      jnp.asarray(views),
      jnp.arange(4, dtype=jnp.uint32),
      dict(cfg, grayscale_prob=0.0, blur_prob=1.0),
    )
  )
  assert np.abs(blurred[..., 12] - blurred[..., 0]).max() > 0.1  # bands stay apart


def test_colour_jitter_on_other_than_three_channels_is_refused_naming_the_key():
  views = np.zeros((2, 2, 8, 8, 13), np.uint8)
  with pytest.raises(ValueError, match=r"data.augment.jitter_prob=0.8.*13 channels"):
    device_augment.photometric(
      jnp.asarray(views), jnp.arange(2, dtype=jnp.uint32), {"jitter_prob": 0.8}
    )
  with pytest.raises(ValueError, match=r"data.augment.jitter_prob.*13 channels"):
    augment.Augment({"jitter_prob": 1.0}).photometric(views[0, 0], np.random.default_rng(0))


def test_draws_depend_only_on_each_examples_seed():
  views = _views()
  seeds = np.arange(100, 108, dtype=np.uint32)
  a = np.asarray(device_augment.photometric(jnp.asarray(views), jnp.asarray(seeds), {}))
  # Reversing the batch reverses the output: no dependence on batch position.
  b = np.asarray(device_augment.photometric(jnp.asarray(views[::-1]), jnp.asarray(seeds[::-1]), {}))
  np.testing.assert_allclose(b[::-1], a, atol=1e-6)
  c = np.asarray(device_augment.photometric(jnp.asarray(views), jnp.asarray(seeds + 1), {}))
  assert np.abs(c - a).max() > 0.1
  assert np.abs(a[:, 0] - a[:, 1]).max() > 0.1  # the views get different draws


def test_sharded_over_8_devices_equals_one_device():
  views, seeds = _views(b=16), np.arange(16, dtype=np.uint32)
  mesh = sharding.make_mesh({"data": -1})
  fn = jax.jit(
    lambda v, s: device_augment.photometric(v, s, {}), out_shardings=sharding.batch_sharding(mesh)
  )
  batch = sharding.host_batch_to_global(dict(views=views, seeds=seeds), mesh)
  sharded = np.asarray(fn(batch["views"], batch["seeds"]))
  single = np.asarray(jax.jit(lambda v, s: device_augment.photometric(v, s, {}))(views, seeds))
  np.testing.assert_allclose(sharded, single, atol=1e-6)


def test_pipeline_ships_crop_flip_views_and_a_seed_per_example(data_dir):
  cfg = dict(name="bc_digits", data_dir=data_dir, augment=dict(device=True))

  def first_batch():
    it = pipeline.train_iterator(
      cfg, kind="multiview", global_batch_size=16, seed=3, process_index=0, process_count=1
    )
    return next(it)

  a, b = first_batch(), first_batch()
  assert a["views"].dtype == np.uint8 and a["augment_seed"].dtype == np.uint32
  assert a["augment_seed"].shape == (16,) and len(set(a["augment_seed"].tolist())) == 16
  np.testing.assert_array_equal(a["augment_seed"], b["augment_seed"])
  np.testing.assert_array_equal(a["views"], b["views"])
