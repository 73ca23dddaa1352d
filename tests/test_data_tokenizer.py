"""Tokenizers: byte-level and SentencePiece, fixed length, pad 0, EOS kept on truncation."""

import json
import os
import pickle
import sys

import numpy as np
import pytest

from big_contrast import data
from big_contrast.data.digits import caption_for
from big_contrast.data.tokenizer import make_tokenizer, train_sentencepiece

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools"))
import train_tokenizer


def test_byte_tokenizer_round_trips_and_pads():
  tok = make_tokenizer("bytes")
  assert tok.pad_id == 0 and tok.vocab_size == 259
  ids = tok.encode_batch(["a seven", "héllo"], max_len=10)
  assert ids.dtype == np.int32 and ids.shape == (2, 10)
  assert tok.decode(ids[0]) == "a seven" and tok.decode(ids[1]) == "héllo"
  assert ids[0, 7] == tok.eos_id and (ids[0, 8:] == 0).all()
  assert ids.max() < tok.vocab_size


def test_truncation_keeps_eos_last():
  tok = make_tokenizer("bytes")
  ids = tok.encode_batch(["a handwritten digit seven"], max_len=6)[0]
  assert ids[-1] == tok.eos_id and tok.decode(ids) == "a han"
  assert tok.encode_batch([""], max_len=3)[0].tolist() == [tok.eos_id, 0, 0]


def test_sentencepiece_model_trained_offline(tmp_path):
  captions = [caption_for(i % 10, i) for i in range(400)]
  path = train_sentencepiece(captions, str(tmp_path / "sp"), vocab_size=60)
  tok = make_tokenizer(path)
  assert tok.pad_id == 0 and tok.eos_id == 2 and tok.vocab_size <= 60
  ids = tok.encode_batch(["a handwritten digit seven"], max_len=16)[0]
  assert tok.decode(ids) == "a handwritten digit seven"
  assert ids[ids != 0][-1] == tok.eos_id
  clone = pickle.loads(pickle.dumps(tok))  # grain workers get a copy.
  np.testing.assert_array_equal(clone.encode_batch(["seven"], 8), tok.encode_batch(["seven"], 8))


def test_unknown_tokenizer_spec_is_an_error_listing_the_accepted_forms():
  with pytest.raises(ValueError, match="nope.model"):
    make_tokenizer("nope.model")
  with pytest.raises(ValueError, match=r"'bc_lee:VOCAB_SIZE', 'bytes' or the path of a .*\.model"):
    data.make_tokenizer("nope.model")


def test_the_tokenizer_module_knows_no_bundled_vocabulary():
  # Bundled vocabularies are the data package's (bundled.py), built from its datasets.
  with pytest.raises(ValueError, match="'bytes' or the path"):
    make_tokenizer("bc_lee:4000")
  assert data.make_tokenizer("bytes").vocab_size == 259


def test_train_tokenizer_tool_reads_txt_and_jsonl(tmp_path):
  captions = [caption_for(i % 10, i) for i in range(300)]
  (tmp_path / "c.txt").write_text("\n".join(captions))
  (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"text": c}) for c in captions))
  for name, extra in (("c.txt", []), ("c.jsonl", ["--key", "text"])):
    out = train_tokenizer.main(
      [
        "--input",
        str(tmp_path / name),
        *extra,
        "--output",
        str(tmp_path / name.replace(".", "_")),
        "--vocab_size",
        "50",
      ]
    )
    assert out["num_captions"] == 300
    tok = make_tokenizer(out["model"])
    assert tok.decode(tok.encode_batch([captions[0]], 32)[0]) == captions[0]
