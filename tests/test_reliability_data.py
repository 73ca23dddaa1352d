"""Unusual and hostile inputs: decoded right (against a reference decode), or skipped, counted
and named — at conversion and at read time."""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import tarfile
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from big_contrast.data import augment, convert, examples, pipeline, sources
from big_contrast.data.tokenizer import make_tokenizer

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _name_every_skipped_record(monkeypatch):
  """Skipped records are named the first few times per process; start each test afresh."""
  monkeypatch.setitem(sources._reported, "count", 0)


# A smooth picture (JPEG reproduces it closely), 40 x 60, with distinct quadrants so a
# rotation or a flip is never mistaken for the original.
PICTURE = cv2.GaussianBlur(RNG.integers(0, 255, (40, 60, 3), np.uint8), (7, 7), 2)
PICTURE[:20, :30] //= 3


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
  buf = io.BytesIO()
  img.save(buf, format=fmt, **kw)
  return buf.getvalue()


def _with_orientation(fmt: str, orientation: int) -> bytes:
  exif = Image.Exif()
  exif[0x0112] = orientation
  return _encode(Image.fromarray(PICTURE), fmt, exif=exif.tobytes())


def _reference(data: bytes) -> np.ndarray:
  """Pillow's decode, EXIF orientation applied, as RGB."""
  with Image.open(io.BytesIO(data)) as img:
    return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))


def _palette(transparency: bool) -> bytes:
  img = Image.fromarray(PICTURE).convert("P", palette=Image.Palette.ADAPTIVE)
  return _encode(img, "PNG", **({"transparency": 0} if transparency else {}))


rgba = np.dstack([PICTURE, RNG.integers(0, 255, PICTURE.shape[:2], np.uint8)])
CASES = {  # name -> (encoded bytes, largest difference allowed from the reference)
  "cmyk_jpeg": (_encode(Image.fromarray(PICTURE).convert("CMYK"), "JPEG", quality=95), 2),
  "progressive_jpeg": (_encode(Image.fromarray(PICTURE), "JPEG", progressive=True), 2),
  "grayscale_jpeg": (_encode(Image.fromarray(PICTURE).convert("L"), "JPEG"), 2),
  "grayscale_png": (_encode(Image.fromarray(PICTURE).convert("L"), "PNG"), 0),
  "grayscale_alpha_png": (_encode(Image.fromarray(PICTURE).convert("LA"), "PNG"), 0),
  "palette_png": (_palette(transparency=False), 0),
  "palette_transparent_png": (_palette(transparency=True), 0),
  "rgba_png": (_encode(Image.fromarray(rgba, "RGBA"), "PNG"), 0),
  "exif_rotate_90_jpeg": (_with_orientation("JPEG", 6), 2),
  "exif_rotate_180_jpeg": (_with_orientation("JPEG", 3), 2),
  "exif_transpose_jpeg": (_with_orientation("JPEG", 5), 2),
  "exif_rotate_270_png": (_with_orientation("PNG", 8), 0),
  "1x1_png": (_encode(Image.fromarray(PICTURE[:1, :1]), "PNG"), 0),
  "1x1_jpeg": (_encode(Image.fromarray(PICTURE[:1, :1]), "JPEG"), 2),
  "gif": (_encode(Image.fromarray(PICTURE).convert("P"), "GIF"), 0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_unusual_images_decode_like_the_reference(name):
  data, tolerance = CASES[name]
  got, reference = augment.decode(data), _reference(data)
  assert got.dtype == np.uint8 and got.shape == reference.shape
  assert np.abs(got.astype(int) - reference).max() <= tolerance
  assert augment.image_size(data) == reference.shape[1::-1] or name.startswith("exif")


def test_exif_orientation_is_honoured():
  plain = augment.decode(_encode(Image.fromarray(PICTURE), "PNG"))
  rotated = augment.decode(_with_orientation("PNG", 6))  # "rotate 90 CW to display"
  np.testing.assert_array_equal(rotated, np.rot90(plain, k=-1))


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_pngs_keep_their_high_byte(channels):
  wide = RNG.integers(0, 2**16, (12, 9, channels), np.uint16)
  ok, data = cv2.imencode(".png", wide[..., ::-1] if channels == 3 else wide[..., 0])
  assert ok
  want = (wide >> 8).astype(np.uint8)
  np.testing.assert_array_equal(augment.decode(data.tobytes()), np.broadcast_to(want, (12, 9, 3)))


def _png_bomb(side: int = 15_000) -> bytes:
  """A valid 1-bit PNG of side x side black pixels: some 30 KB that decode to 225M pixels."""

  def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

  rows = zlib.compress(b"\0" * ((side // 8 + 2) * side), 9)
  header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_before_decoding():
  bomb = _png_bomb()
  assert len(bomb) < 100_000
  img, why = augment.decode_checked(bomb)
  assert img is None
  assert "decompression bomb" in why and "15000x15000" in why


def _folder(root, images: dict[str, bytes]) -> None:
  for rel, data in images.items():
    os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
    with open(os.path.join(root, rel), "wb") as f:
      f.write(data)


def test_conversion_skips_a_bomb_names_it_and_keeps_the_unusual_images(tmp_path):
  images = {f"a/{name}.{'jpg' if 'jpeg' in name else 'png'}": CASES[name][0] for name in CASES}
  images = {k: v for k, v in images.items() if "gif" not in k}
  images["b/bomb.png"] = _png_bomb()
  _folder(tmp_path / "root", images)
  report = convert.convert_image_folder(
    str(tmp_path / "root"), str(tmp_path / "out"), progress=False
  )
  assert report["splits"] == {"train": len(images) - 1}
  (skipped,) = report["skipped"]
  assert skipped["key"] == "b/bomb.png" and skipped["reason"] == "decompression_bomb"


def _tar(path, samples: list[tuple[str, bytes, bytes]]) -> None:
  with tarfile.open(path, "w") as tar:
    for key, image, caption in samples:
      for ext, data in (("png", image), ("txt", caption)):
        info = tarfile.TarInfo(f"{key}.{ext}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def test_captions_that_are_not_utf8_are_skipped_and_named_at_conversion(tmp_path):
  png = CASES["1x1_png"][0]
  _folder(tmp_path, {"img.png": png})
  good, bad = b"a small picture", b"caf\xe9 au lait"  # Latin-1, not UTF-8
  (tmp_path / "pairs.jsonl").write_bytes(
    b'{"image_path": "img.png", "caption": "' + good + b'"}\n'
    b'{"image_path": "img.png", "caption": "' + bad + b'"}\n'
  )
  (tmp_path / "pairs.csv").write_bytes(
    b"image_path,caption\nimg.png," + good + b"\nimg.png," + bad + b"\n"
  )
  _tar(tmp_path / "pairs.tar", [("s0", png, good), ("s1", png, bad)])
  reports = [
    convert.convert_manifest(str(tmp_path / f"pairs.{ext}"), str(tmp_path / ext), progress=False)
    for ext in ("jsonl", "csv")
  ]
  reports.append(
    convert.convert_webdataset([str(tmp_path / "pairs.tar")], str(tmp_path / "tar"), progress=False)
  )
  for report, key in zip(reports, ["row 1: img.png", "row 1: img.png", f"{tmp_path}/pairs.tar:s1"]):
    assert report["splits"] == {"train": 1}
    (skipped,) = report["skipped"]
    assert (skipped["key"], skipped["reason"]) == (key, "undecodable_caption")


def _image_text_transform(max_len: int = 8) -> examples.ExampleTransform:
  features = {"image": None, "caption": None}
  return examples.ExampleTransform(
    kind="image_text",
    features=features,
    image_size=8,
    num_views=1,
    augment={},
    tokenizer=make_tokenizer("bytes"),
    text_max_len=max_len,
    image_key="image",
    caption_key="caption",
    label_key="label",
    text_key="text",
  )


def test_at_read_time_a_bad_caption_or_a_bomb_is_skipped_and_named(caplog):
  transform = _image_text_transform()
  rng = np.random.default_rng(0)
  png = CASES["1x1_png"][0]
  with caplog.at_level(logging.WARNING, logger="big_contrast.data.sources"):
    assert transform.train({"image": png, "caption": b"caf\xe9", "position": 7}, rng) is None
    assert transform.eval({"image": _png_bomb(), "caption": b"ok", "position": 8}) is None
  assert "skipped record 7: caption is not valid UTF-8" in caplog.text
  assert "skipped record 8: decompression bomb" in caplog.text


def test_captions_longer_than_max_len_keep_their_first_tokens_and_eos():
  transform = _image_text_transform(max_len=8)
  tok = make_tokenizer("bytes")
  record = {"image": CASES["1x1_png"][0], "caption": b"a very long caption", "position": 0}
  text = transform.eval(record)["text"]
  np.testing.assert_array_equal(text, tok.encode("a very ")[:7] + [tok.eos_id])


def test_a_truncated_shard_is_skipped_counted_and_named(tmp_path, caplog):
  images = {f"c{i % 2}/{i}.png": _encode(Image.fromarray(PICTURE), "PNG") for i in range(12)}
  _folder(tmp_path / "root", images)
  out = str(tmp_path / "out")
  convert.convert_image_folder(str(tmp_path / "root"), out, shard_size=4, progress=False)
  shards = sorted(n for n in os.listdir(out) if ".array_record-" in n)
  assert len(shards) == 3
  with open(os.path.join(out, shards[1]), "r+b") as f:
    f.truncate(3000)
  with caplog.at_level(logging.WARNING, logger="big_contrast.data.sources"):
    batches = list(pipeline.eval_batches(dict(name=out), "train", kind="image", batch_size=4))
  mask = np.concatenate([b["mask"] for b in batches])
  skipped = np.concatenate([b["skipped"] for b in batches])
  assert mask.sum() == 8 and skipped.sum() == 4
  assert f"in shard {shards[1]}" in caplog.text
  assert caplog.text.count("skipped record") == 1  # once per shard, not once per record
  report = json.loads(open(os.path.join(out, "conversion_report.json")).read())
  assert report["splits"] == {"train": 12}
