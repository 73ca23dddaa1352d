"""Host augmentations: deterministic given the RNG, shapes and ranges as documented."""

import io

import numpy as np
import pytest
from PIL import Image

from big_contrast.data import augment


def _photo(w=48, h=40):
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _rng(seed):
  return np.random.Generator(np.random.Philox(seed))


def test_simclr_views_are_deterministic_given_the_rng():
  aug = augment.Augment({"solarize_prob": 0.5, "blur_prob": 0.5})
  a = aug.simclr_views(_photo(), _rng(1), 24, num_views=2)
  b = aug.simclr_views(_photo(), _rng(1), 24, num_views=2)
  c = aug.simclr_views(_photo(), _rng(2), 24, num_views=2)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert a.shape == (2, 24, 24, 3) and a.dtype == np.uint8
  assert not np.array_equal(a[0], a[1])


def test_every_simclr_op_runs_when_forced():
  aug = augment.Augment(
    {
      "flip_prob": 1.0,
      "jitter_prob": 1.0,
      "jitter_strength": 1.0,
      "grayscale_prob": 1.0,
      "blur_prob": 1.0,
      "solarize_prob": 1.0,
    }
  )
  view = aug.simclr_view(_photo(), _rng(0), 16)
  # Grayscale then solarize: all channels equal, nothing above half scale.
  np.testing.assert_array_equal(view[..., 0], view[..., 1])
  assert view.max() <= 128


def test_per_view_probabilities():
  aug = augment.Augment(
    {
      "solarize_prob": (0.0, 1.0),
      "jitter_prob": 0.0,
      "grayscale_prob": 0.0,
      "blur_prob": 0.0,
      "flip_prob": 0.0,
    }
  )
  views = aug.simclr_views(_photo(), _rng(3), 16, num_views=2)
  assert views[0].max() > 140 and views[1].max() <= 128


def test_crop_box_stays_inside_image_and_respects_scale():
  rng = _rng(0)
  for _ in range(200):
    left, top, right, bottom = augment.random_crop_box(50, 30, rng, (0.3, 0.6), (0.75, 1.33))
    assert 0 <= left < right <= 50 and 0 <= top < bottom <= 30
    assert (right - left) * (bottom - top) <= 0.6 * 1500 * 1.1


def test_eval_view_is_centre_crop_resize():
  img = np.zeros((20, 40, 3), np.uint8)
  img[:, 10:30] = 255  # The centre square is white, the sides black.
  view = augment.eval_view(img, 10)
  assert view.shape == (10, 10, 3) and view.dtype == np.uint8
  np.testing.assert_array_equal(view, 255)  # Area averaging stays inside the box.


def test_clip_train_is_mild_and_deterministic():
  aug = augment.Augment()
  a = aug.clip_train(_photo(), _rng(5), 32)
  np.testing.assert_array_equal(a, aug.clip_train(_photo(), _rng(5), 32))
  assert a.shape == (32, 32, 3) and a.dtype == np.uint8


def test_gaussian_blur_preserves_constant_images_and_smooths():
  flat = np.full((9, 9, 3), 0.3, np.float32)
  np.testing.assert_allclose(augment.gaussian_blur(flat, 1.5), 0.3, atol=1e-6)
  noise = _rng(0).random((16, 16, 3)).astype(np.float32)
  assert augment.gaussian_blur(noise, 1.0).std() < noise.std()


def test_unknown_augment_key_is_an_error_naming_it():
  with pytest.raises(ValueError, match="flip_probability"):
    augment.Augment({"flip_probability": 0.0})


def test_resize_antialiases_when_shrinking():
  # A 1-pixel checkerboard has no content below its Nyquist rate: an area
  # resize to half size gives flat grey, a point-sampling one would not.
  board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
  board = np.repeat(board[..., None], 3, axis=-1)
  small = augment.resized_crop(board, (0, 0, 64, 64), 32)
  assert np.abs(small.astype(int) - 128).max() <= 1


def test_decode_reads_png_jpeg_gif_and_rejects_garbage():
  img = _photo(20, 12)
  for fmt in ("PNG", "JPEG", "GIF", "BMP"):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    out = augment.decode(buf.getvalue())
    assert out.shape == (12, 20, 3) and out.dtype == np.uint8, fmt
    if fmt in ("PNG", "BMP"):  # lossless
      np.testing.assert_array_equal(out, img)
  gray = io.BytesIO()
  Image.fromarray(img[..., 0]).save(gray, format="PNG")
  out = augment.decode(gray.getvalue())
  np.testing.assert_array_equal(out, np.repeat(img[..., :1], 3, axis=-1))
  assert augment.decode(b"not an image") is None and augment.decode(b"") is None


def test_to_unit_range_is_the_models_convention():
  x = np.array([0, 255, 51], np.uint8)
  np.testing.assert_allclose(augment.to_unit_range(x), [-1.0, 1.0, -0.6], atol=1e-6)


@pytest.mark.parametrize(
  "cfg",
  [
    {},
    {"device": True},
    {"flip_prob": 1.0, "jitter_prob": 0.0, "grayscale_prob": 0.0, "blur_prob": 0.0},
  ],
)
def test_views_written_into_out_equal_new_ones(cfg):
  aug = augment.Augment(cfg)
  expected = aug.simclr_views(_photo(), _rng(4), 24, num_views=3)
  out = np.zeros((3, 24, 24, 3), np.uint8)
  got = aug.simclr_views(_photo(), _rng(4), 24, num_views=3, out=out)
  assert got is out
  np.testing.assert_array_equal(out, expected)
  clip = np.zeros((24, 24, 3), np.uint8)
  assert aug.clip_train(_photo(), _rng(4), 24, out=clip) is clip
  np.testing.assert_array_equal(clip, aug.clip_train(_photo(), _rng(4), 24))


def test_a_full_size_crop_is_a_copy_so_flipping_it_in_place_leaves_the_image():
  img = _photo(16, 16)
  before = img.copy()
  view = augment.resized_crop(img, (0, 0, 16, 16), 16)
  np.testing.assert_array_equal(view, img)
  augment.hflip(view, out=view)
  np.testing.assert_array_equal(view, before[:, ::-1])
  np.testing.assert_array_equal(img, before)


@pytest.mark.parametrize(
  "out",
  [
    np.zeros((8, 8, 3), np.float32),
    np.zeros((8, 9, 3), np.uint8),
    np.zeros((8, 16, 3), np.uint8)[:, ::2],
  ],
)
def test_an_out_array_that_does_not_fit_is_an_error(out):
  with pytest.raises(ValueError, match="out must be"):
    augment.resized_crop(_photo(), (0, 0, 20, 20), 8, out=out)
