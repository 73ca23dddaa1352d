"""Pretrained weights: .npz and checkpoint sources, the load report, input-channel adaptation."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from big_contrast.models import pretrained, vit


def _vit(channels, seed=0):
  return vit.ViT(
    image_size=8,
    patch=4,
    width=16,
    depth=1,
    heads=2,
    mlp_dim=32,
    channels=channels,
    rngs=nnx.Rngs(seed),
  )


def _params(module):
  return nnx.to_pure_dict(nnx.state(module, nnx.Param))


def _apply(module, params, x):
  graphdef, state = nnx.split(module)
  nnx.replace_by_pure_dict(state, params)
  return jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, x)


def test_npz_round_trip_loads_every_parameter(tmp_path):
  src, dst = _vit(3, seed=0), _vit(3, seed=1)
  pretrained.save_npz(tmp_path / "w.npz", _params(src))
  loaded, report = pretrained.load_into(_params(dst), pretrained.read_npz(tmp_path / "w.npz"))
  jax.tree.map(np.testing.assert_array_equal, loaded, jax.device_get(_params(src)))
  assert report.missing == report.unused == report.shape_mismatch == [] and report.matched


def test_report_names_missing_mismatched_and_unused():
  target = {"a": {"kernel": np.zeros((2, 3))}, "b": np.zeros(4), "c": np.zeros(1)}
  source = {"a/kernel": np.ones((2, 3)), "b": np.ones(5), "extra/bias": np.ones(2)}
  loaded, report = pretrained.load_into(target, source)
  assert report.matched == ["a/kernel"]
  assert report.shape_mismatch == [("b", (5,), (4,))]
  assert report.missing == ["c"] and report.unused == ["extra/bias"]
  np.testing.assert_array_equal(loaded["b"], 0)  # kept its init
  assert "1 shape-mismatched" in report.summary() and "extra/bias" in report.summary()
  renamed, r2 = pretrained.load_into({"image": target}, source, rename=[(r"^", "image/")])
  assert r2.matched == ["image/a/kernel"]


def test_repeat_adaptation_preserves_the_output_on_repeated_channels():
  rgb, msi = _vit(3), _vit(6, seed=1)
  loaded, report = pretrained.load_into(
    _params(msi), pretrained.flatten(_params(rgb)), adapt="repeat"
  )
  assert report.adapted == [("embed/kernel", (4, 4, 3, 16), (4, 4, 6, 16))]
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  np.testing.assert_allclose(
    _apply(msi, loaded, jnp.concatenate([x, x], -1)),
    _apply(rgb, _params(rgb), x),
    rtol=1e-4,
    atol=1e-5,
  )


def test_repeat_adaptation_folds_channels_for_fewer_inputs():
  rgb, grey = _vit(3), _vit(1, seed=1)
  loaded, _ = pretrained.load_into(_params(grey), pretrained.flatten(_params(rgb)), adapt="repeat")
  g = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
  np.testing.assert_allclose(
    _apply(grey, loaded, g), _apply(rgb, _params(rgb), jnp.repeat(g, 3, -1)), rtol=1e-4, atol=1e-5
  )


def test_zero_adaptation_ignores_the_new_channels():
  rgb, msi = _vit(3), _vit(5, seed=1)
  loaded, _ = pretrained.load_into(_params(msi), pretrained.flatten(_params(rgb)), adapt="zero")
  x = jax.random.normal(jax.random.key(2), (2, 8, 8, 3))
  extra = jax.random.normal(jax.random.key(3), (2, 8, 8, 2))
  np.testing.assert_allclose(
    _apply(msi, loaded, jnp.concatenate([x, extra], -1)),
    _apply(rgb, _params(rgb), x),
    rtol=1e-4,
    atol=1e-5,
  )
  with pytest.raises(ValueError, match="cannot drop input channels"):
    pretrained.adapt_input_channels(np.ones((4, 4, 3, 2)), 1, "zero")


def test_without_adapt_a_channel_change_is_reported_as_a_mismatch():
  _, report = pretrained.load_into(_params(_vit(4)), pretrained.flatten(_params(_vit(3))))
  assert [n for n, *_ in report.shape_mismatch] == ["embed/kernel"]


def test_reads_a_big_contrast_checkpoint(tmp_path):
  src = _vit(3)
  params = jax.device_get(_params(src))
  rest = {"norm": {"mean": np.arange(3.0)}}
  state = dict(step=np.int32(7), params=params, rest=rest, opt_state={"mu": params})
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(tmp_path / "checkpoints" / "7" / "state", state)
  ckpt.wait_until_finished()
  flat = pretrained.read_checkpoint(str(tmp_path))
  np.testing.assert_array_equal(flat["norm/mean"], np.arange(3.0))
  loaded, report = pretrained.load_into(_params(_vit(3, seed=2)), flat)
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  assert report.unused == ["norm/mean"]
  with pytest.raises(FileNotFoundError, match="step 9"):
    pretrained.read_checkpoint(str(tmp_path), step=9)
