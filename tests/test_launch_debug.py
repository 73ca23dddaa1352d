"""The `debug` toggle: which JAX switches it turns on, and the shapes/shardings log."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl import logging

from big_contrast import launch
from big_contrast.data import builders


@pytest.fixture
def restore_jax_flags():
  saved = (jax.config.jax_debug_nans, jax.config.jax_disable_jit, logging.get_verbosity())
  yield
  jax.config.update("jax_debug_nans", saved[0])
  jax.config.update("jax_disable_jit", saved[1])
  logging.set_verbosity(saved[2])


@pytest.mark.parametrize(
  "value,mode", [(True, "on"), ("on", "on"), ("nojit", "nojit"), (False, ""), ("", ""), ("off", "")]
)
def test_debug_mode_from_config(value, mode):
  assert launch.debug_mode(ml_collections.ConfigDict({"debug": value})) == mode


def test_debug_mode_from_environment_when_the_config_has_no_key(monkeypatch):
  monkeypatch.setenv("BIG_CONTRAST_DEBUG", "nojit")
  assert launch.debug_mode(ml_collections.ConfigDict()) == "nojit"
  monkeypatch.delenv("BIG_CONTRAST_DEBUG")
  assert launch.debug_mode(ml_collections.ConfigDict()) == ""


def test_unknown_debug_value_names_the_key():
  with pytest.raises(ValueError, match="config.debug='loud'"):
    launch.debug_mode(ml_collections.ConfigDict({"debug": "loud"}))


def test_debug_on_makes_a_nan_raise_and_lets_library_logs_through(restore_jax_flags):
  logging.set_verbosity(logging.WARNING)
  assert not builders.library_output_wanted()  # TFDS's build messages stay out by default
  assert launch.apply_debug(ml_collections.ConfigDict({"debug": "on"})) == "on"
  assert jax.config.jax_debug_nans and not jax.config.jax_disable_jit
  assert builders.library_output_wanted()
  with pytest.raises(FloatingPointError):
    jax.jit(jnp.log)(-jnp.ones(2)).block_until_ready()


def test_debug_nojit_disables_jit(restore_jax_flags):
  launch.apply_debug(ml_collections.ConfigDict({"debug": "nojit"}))
  assert jax.config.jax_debug_nans and jax.config.jax_disable_jit


def test_debug_off_changes_nothing(restore_jax_flags):
  before = (jax.config.jax_debug_nans, jax.config.jax_disable_jit)
  assert launch.apply_debug(ml_collections.ConfigDict({"debug": ""})) == ""
  assert (jax.config.jax_debug_nans, jax.config.jax_disable_jit) == before


def test_log_shapes_prints_paths_shapes_and_shardings(capsys):
  mesh = jax.make_mesh((8,), ("data",))
  x = jax.device_put(np.zeros((16, 3), np.float32), jax.NamedSharding(mesh, jax.P("data")))
  tree = {"params": {"w": x}, "step": np.int32(0)}
  launch.log_shapes(ml_collections.ConfigDict({"debug": "on"}), "state", tree)
  assert capsys.readouterr().out.splitlines() == [
    "state:",
    "  params/w  (16, 3) float32  P('data',)",
    "  step  () int32  None",
  ]
  launch.log_shapes(ml_collections.ConfigDict({"debug": ""}), "state", tree)
  assert capsys.readouterr().out == ""
