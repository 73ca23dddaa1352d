"""Imported public checkpoints reproduce their reference library's outputs.

The fixtures (tests/fixtures/interop, written by tools/make_interop_fixtures.py)
hold tiny random models of each source as the source stores them, and what
open_clip, timm, transformers and OpenCLIP's big_vision reader computed from
them: token ids and L2-normalised embeddings. Each is imported with
`python -m big_contrast.interop import`'s function into a run directory and
read back with `big_contrast.evaluate.load_encoder`, as a user would.
"""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from big_contrast import checkpoint, interop, models
from big_contrast.evaluate import load_encoder
from big_contrast.interop import __main__ as cli
from big_contrast.interop import tensors
from big_contrast.models import pretrained

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "interop")
TEXTS = json.load(open(os.path.join(FIXTURES, "texts.json"), encoding="utf-8"))
TOL = 1e-5


def fx(*parts):
  return os.path.join(FIXTURES, *parts)


# name: (source, import keyword arguments)
CASES = {
  "openclip": (
    "openclip",
    dict(
      weights=fx("openclip", "open_clip_model.safetensors"),
      arch=fx("openclip", "arch.json"),
      tokenizer=fx("vocab", "bpe_tiny.txt.gz"),
    ),
  ),
  "hf_clip": (
    "hf",
    dict(weights=fx("hf_clip", "model.safetensors"), tokenizer=fx("hf_clip", "tokenizer.json")),
  ),
  "hf_siglip": (
    "hf",
    dict(weights=fx("hf_siglip", "model.safetensors"), tokenizer=fx("vocab", "siglip_tiny.model")),
  ),
  "big_vision": (
    "big_vision",
    dict(
      weights=fx("big_vision", "siglip.npz"),
      arch=fx("big_vision", "arch.json"),
      tokenizer=fx("vocab", "siglip_tiny.model"),
    ),
  ),
  "timm": ("timm", dict(weights=fx("timm", "model.safetensors"), arch=fx("timm", "arch.json"))),
  "timm_reg": (
    "timm",
    dict(weights=fx("timm_reg", "model.safetensors"), arch=fx("timm_reg", "arch.json")),
  ),
}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  """name → run directory, each source imported once for the module."""
  runs = {}

  def get(name, **extra):
    key = (name, tuple(sorted(extra.items())))
    if key not in runs:
      source, kwargs = CASES[name]
      out = str(tmp_path_factory.mktemp(name) / "run")
      if name == "timm_reg":  # through the command line, as a user would
        args = ["import", "--from", source, "--weights", kwargs["weights"]]
        assert cli.main(args + ["--arch", kwargs["arch"], "--out", out]) == 0
      else:
        interop.import_checkpoint(source, out=out, **kwargs, **extra)
      runs[key] = out
    return runs[key]

  return get


def reference(name):
  return np.load(fx(name, "reference.npz"))


# Plain DINOv2 (`timm`) is matched at another resolution below, which goes through the
# same tensors plus the resampling; its registers twin (`timm_reg`) at its own.
@pytest.mark.parametrize("name", [n for n in CASES if n != "timm"])
def test_imported_embeddings_match_the_reference(imported, name):
  ref = reference(name)
  with jax.default_matmul_precision("highest"):
    enc = load_encoder(imported(name))
    image = enc.encode_image(ref["images"])
    np.testing.assert_allclose(image, ref["image"], atol=TOL, rtol=0)
    if "text" in ref:
      np.testing.assert_array_equal(enc.tokenize(TEXTS), ref["ids"])
      np.testing.assert_allclose(enc.encode_text(TEXTS), ref["text"], atol=TOL, rtol=0)
  assert np.allclose(np.linalg.norm(image, axis=1), 1.0, atol=1e-5)


def test_timm_at_another_resolution_matches_timms_resampled_model(imported):
  """pos_embed resampled to a 3×3 grid (from 4×4) as timm's checkpoint_filter_fn does."""
  ref = reference("timm")
  with jax.default_matmul_precision("highest"):
    enc = load_encoder(imported("timm", image_size=12))
    np.testing.assert_allclose(enc.encode_image(ref["images12"]), ref["image12"], atol=TOL, rtol=0)


EXPORTED = {
  "openclip": "openclip",
  "hf_clip": "hf",
  "hf_siglip": "hf",
  "big_vision": "big_vision",
  "timm_reg": "timm",
}


@pytest.mark.parametrize("name", list(EXPORTED))
def test_export_gives_back_the_imported_tensors(imported, name, tmp_path):
  """import → export: the source's own names, shapes and values (float32), nothing else."""
  source, kwargs = CASES[name]
  original = tensors.read_weights(kwargs["weights"])
  if source == "big_vision":
    original = {k[len("params/") :]: v for k, v in original.items()}
  out = str(tmp_path / ("model.npz" if source == "big_vision" else "model.safetensors"))
  # OpenCLIP's architecture is read off the run's config; the others are named.
  arch = None if source == "openclip" else kwargs.get("arch")
  if source == "hf":
    arch = os.path.join(os.path.dirname(kwargs["weights"]), "config.json")
  interop.export_checkpoint(imported(name), source, out, arch=arch)
  exported = tensors.read_weights(out)
  assert sorted(exported) == sorted(original)
  for key, value in original.items():
    assert exported[key].dtype == np.float32 and exported[key].shape == value.shape, key
    np.testing.assert_array_equal(exported[key], np.asarray(value, np.float32), err_msg=key)


def test_an_exported_run_imports_back_to_identical_parameters(imported, tmp_path):
  """export → import through the command line, OpenCLIP's architecture read off the run."""
  first = imported("openclip")
  exported = str(tmp_path / "model.safetensors")
  assert cli.main(["export", "--to", "openclip", "--workdir", first, "--out", exported]) == 0
  second = str(tmp_path / "again")
  interop.import_checkpoint("openclip", exported, second, arch=CASES["openclip"][1]["arch"])
  a = pretrained.read_checkpoint(first, collections=("params",))
  b = pretrained.read_checkpoint(second, collections=("params",))
  assert sorted(a) == sorted(b)
  for key in a:
    assert a[key].shape == b[key].shape, key
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_cli_refuses_to_overwrite_a_run(imported, capsys):
  out = imported("timm_reg")  # written by the command line (see `imported`)
  assert os.path.isdir(os.path.join(out, "checkpoints"))
  args = ["import", "--from", "timm", "--weights", fx("timm_reg", "model.safetensors")]
  assert cli.main(args + ["--arch", fx("timm_reg", "arch.json"), "--out", out]) == 1
  assert "exists and is not empty" in capsys.readouterr().err


def test_exporting_a_run_that_is_not_openclip_names_the_config_key(imported, tmp_path):
  with pytest.raises(
    ValueError,
    match=r"not architecture .*: config\.model\.image\.act='gelu_tanh', it needs 'gelu_exact'",
  ):
    interop.export_checkpoint(imported("hf_siglip"), "openclip", str(tmp_path / "x.safetensors"))


def test_an_imported_dinov2_run_initialises_a_13_channel_tower(imported):
  """SoftCon's start: the DINOv2 backbone loads by name; the patch embedding is adapted."""
  run = imported("timm", image_size=12)  # the run the resolution test made
  ckpt = checkpoint.Checkpointer(os.path.join(run, "checkpoints"))
  model_cfg = ckpt.restore_config().model.to_dict()
  ckpt.close()
  model_cfg["image"] = dict(model_cfg["image"], channels=13, mean=[0.5] * 13, std=[0.25] * 13)
  model_cfg.update(head_layers=2, embed_dim=16)
  model = nnx.eval_shape(lambda: models.multi_view(model_cfg, rngs=nnx.Rngs(0)))
  target = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  loaded, report = pretrained.load_into(target, pretrained.read_checkpoint(run), adapt="repeat")
  assert report.adapted == [("image/embed/kernel", (4, 4, 3, 32), (4, 4, 13, 32))]
  assert report.shape_mismatch == [] and report.unused == []
  assert report.missing and all(name.startswith("head/") for name in report.missing)
  assert loaded["image"]["encoder"]["blocks"][1]["ls2"].shape == (32,)
