"""Interop's checks: mismatching weights fail before writing anything, tokenizer ids
match the sources', the safetensors reader and writer, big_vision's scanned layout,
position-table resampling, the OpenCLIP-equivalent training config."""

import json
import os
import sys

import ml_dtypes
import numpy as np
import pytest

from big_contrast import data, interop
from big_contrast.data import bpe
from big_contrast.data import tokenizer as tokenizer_lib
from big_contrast.interop import big_vision, convert, openclip, tensors
from big_contrast.models import layers

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import clip as clip_config

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "interop")
TEXTS = json.load(open(os.path.join(FIXTURES, "texts.json"), encoding="utf-8"))


def fx(*parts):
  return os.path.join(FIXTURES, *parts)


OPENCLIP = fx("openclip", "open_clip_model.safetensors")
OPENCLIP_ARCH = fx("openclip", "arch.json")


def _write_openclip(tmp_path, edit):
  weights = tensors.read_weights(OPENCLIP)
  edit(weights)
  path = str(tmp_path / "edited.safetensors")
  tensors.write_safetensors(path, weights)
  return path


def test_a_missing_tensor_is_named_and_nothing_is_written(tmp_path):
  path = _write_openclip(tmp_path, lambda w: w.pop("visual.ln_pre.weight"))
  out = tmp_path / "run"
  with pytest.raises(interop.MismatchError, match=r"missing 'visual\.ln_pre\.weight'"):
    interop.import_checkpoint("openclip", path, str(out), arch=OPENCLIP_ARCH)
  assert not out.exists()
  assert os.listdir(tmp_path) == ["edited.safetensors"]  # no partial run directory left


def test_an_unexpected_tensor_is_named(tmp_path):
  path = _write_openclip(tmp_path, lambda w: w.update(extra_head=np.zeros(3, np.float32)))
  with pytest.raises(interop.MismatchError, match="unexpected 'extra_head'"):
    interop.import_checkpoint("openclip", path, str(tmp_path / "run"), arch=OPENCLIP_ARCH)


def test_a_wrong_architecture_names_the_first_mismatching_tensor(tmp_path):
  arch = json.load(open(OPENCLIP_ARCH))
  arch["vision_cfg"]["patch_size"] = 6  # the file's patch embedding is 4×4
  arch["vision_cfg"]["image_size"] = 12
  path = str(tmp_path / "arch.json")
  json.dump(arch, open(path, "w"))
  out = tmp_path / "run"
  with pytest.raises(interop.MismatchError, match=r"visual\.conv1\.weight \(32, 3, 4, 4\)"):
    interop.import_checkpoint("openclip", OPENCLIP, str(out), arch=path)
  assert not out.exists()


def test_clip_bpe_ids_match_open_clip():
  tok = data.make_tokenizer("clip_bpe:" + fx("vocab", "bpe_tiny.txt.gz"))
  ref = np.load(fx("openclip", "reference.npz"))["ids"]
  np.testing.assert_array_equal(tok.encode_batch(TEXTS, 16), ref)
  assert tok.vocab_size == 512 + 128 + 2
  assert tok.decode(tok.encode("A photo of a cat")) == "a photo of a cat"


def test_tokenizer_json_ids_match_hugging_face():
  tok = data.make_tokenizer("hf:" + fx("hf_clip", "tokenizer.json"))
  assert isinstance(tok, bpe.TokenizerJSON)
  assert tok.pad_id == tok.eos_id == tok.vocab_size - 1  # CLIP pads with <|endoftext|>
  np.testing.assert_array_equal(
    tok.encode_batch(TEXTS, 16), np.load(fx("hf_clip", "reference.npz"))["ids"]
  )


@pytest.mark.parametrize("spec,name", [("hf", "hf_siglip"), ("siglip", "big_vision")])
def test_siglip_ids_match_the_source(spec, name):
  tok = data.make_tokenizer(f"{spec}:" + fx("vocab", "siglip_tiny.model"))
  assert isinstance(tok, tokenizer_lib.SigLIPTokenizer) and tok.pad_id == tok.eos_id == 1
  np.testing.assert_array_equal(
    tok.encode_batch(TEXTS, 12), np.load(fx(name, "reference.npz"))["ids"]
  )


def test_a_missing_tokenizer_file_is_named():
  with pytest.raises(FileNotFoundError, match="no file '/nowhere/vocab.txt.gz'"):
    data.make_tokenizer("clip_bpe:/nowhere/vocab.txt.gz")


def test_safetensors_round_trip_keeps_dtypes_and_values(tmp_path):
  arrays = {
    "a": np.arange(6, dtype=np.float32).reshape(2, 3),
    "b": np.asarray([1.5, -2.0], ml_dtypes.bfloat16),
    "c": np.asarray(7, np.int64),
  }
  path = str(tmp_path / "t.safetensors")
  tensors.write_safetensors(path, arrays, metadata={"format": "pt"})
  back = tensors.read_weights(path)
  for k, v in arrays.items():
    assert back[k].dtype == v.dtype and back[k].shape == v.shape
    np.testing.assert_array_equal(back[k].astype(np.float32), v.astype(np.float32))


def test_scanned_big_vision_blocks_are_unstacked():
  flat = {"params/img/Transformer/encoderblock/LayerNorm_0/scale": np.arange(6.0).reshape(2, 3)}
  flat["params/t"] = np.zeros(1)
  out = big_vision.prepare(flat)
  assert sorted(out) == [
    "img/Transformer/encoderblock_0/LayerNorm_0/scale",
    "img/Transformer/encoderblock_1/LayerNorm_0/scale",
    "t",
  ]
  np.testing.assert_array_equal(out["img/Transformer/encoderblock_1/LayerNorm_0/scale"], [3, 4, 5])


def test_resample_grid_is_the_identity_at_the_same_size_and_keeps_constants():
  table = np.random.default_rng(0).standard_normal((1, 16, 8)).astype(np.float32)
  np.testing.assert_array_equal(layers.resample_grid(table, 4), table)
  flat = np.ones((1, 16, 2), np.float32)
  np.testing.assert_allclose(layers.resample_grid(flat, 7), np.ones((1, 49, 2)), atol=1e-6)


def test_openclip_vit_b32_config_passes_the_export_architecture_check():
  """configs/clip.py:openclip_vit_b32 trains what `export --to openclip` accepts as ViT-B-32."""
  run = clip_config.get_config("openclip_vit_b32")
  wanted = openclip.config(openclip.ARCHS["ViT-B-32"])
  with run.unlocked():
    run.model.text.vocab_size = 49408  # an export reads it off the checkpoint
  convert._check_architecture(run, wanted, "ViT-B-32")
  with run.unlocked():
    run.text.max_len = 64
  with pytest.raises(ValueError, match=r"config\.text\.max_len=64, it needs 77"):
    convert._check_architecture(run, wanted, "ViT-B-32")
