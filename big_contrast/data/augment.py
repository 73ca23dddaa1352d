"""Image decoding and augmentation on the host, in NumPy/OpenCV, driven by a per-example RNG.

Every random choice comes from the ``np.random.Generator`` passed in (the
train pipeline keys it by the seed and the example's position in the
shuffled, repeated stream), so the same (seed, example, epoch) always gives
the same pixels, on any host and with any number of workers.

Images are HWC ``uint8`` RGB arrays, in and out: ``uint8`` is a quarter of
float32's bytes through grain's worker queues and the host-to-device copy, and
the model maps it to [-1, 1] on the accelerator (``to_unit_range`` here is the
same map, for host-side users such as the raw-pixel baseline).

* ``decode``: encoded bytes -> ``[H, W, 3]`` (OpenCV; Pillow for formats OpenCV
  lacks, e.g. GIF), or ``None`` when the bytes do not decode or declare more than
  ``MAX_IMAGE_PIXELS`` (``decode_checked`` also says why).
* ``Augment.simclr_views``: V independent SimCLR views, ``[V, S, S, 3]``.
* ``Augment.clip_train``: one mild random-resized-crop view, ``[S, S, 3]``.
* ``eval_view``: resize the shorter side to S, centre crop, ``[S, S, 3]``.

Resizing is OpenCV's (``resized_crop``): bilinear, and area averaging for
shrinks beyond 2x, where bilinear would alias. It is 5x faster than Pillow's
convolution resize, which was the pipeline's largest host cost at 224 px
(``tools/bench_data.py``).

The photometric ops (colour jitter, grayscale, blur, solarize) run in float32
and round back to ``uint8``. With ``device=True`` they are left to the train
step instead (``big_contrast.data.device_augment``): the host then only
decodes, crops and flips, and adds one ``augment_seed`` per example from the
same per-example RNG, so the device ops stay deterministic in (seed, example,
epoch) too.

``Augment`` reads these keys of ``data_cfg.augment`` (dict or ConfigDict);
any ``*_prob`` key may also be a per-view sequence, e.g. ``blur_prob=(1.0,
0.1)`` for BYOL's asymmetric views:

=====================  ================  ======================================
key                    default           meaning
=====================  ================  ======================================
crop_scale             (0.08, 1.0)       SimCLR crop area, fraction of image
crop_ratio             (3/4, 4/3)        crop aspect-ratio range (log-uniform)
flip_prob              0.5               horizontal flip (digits: set 0)
jitter_strength        0.5               s: brightness/contrast/saturation
                                         0.8*s, hue 0.2*s (SimCLR's recipe)
jitter_prob            0.8               apply colour jitter
grayscale_prob         0.2               convert to grey (equal channels)
blur_prob              0.5               Gaussian blur
blur_sigma             (0.1, 2.0)        blur sigma range, in output pixels
solarize_prob          0.0               invert pixels above 0.5
clip_crop_scale        (0.9, 1.0)        CLIP-style single-view crop area
clip_flip_prob         0.0               CLIP-style flip
device                 False             photometric ops in the train step
=====================  ================  ======================================

This module knows nothing about grain, TFDS or JAX; ``Augment`` pickles, so it
runs unchanged in grain worker processes.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps

# grain already runs many reader threads per process; OpenCV's own thread pool
# on top of them only oversubscribes the cores.
cv2.setNumThreads(1)

DEFAULTS: dict[str, Any] = {
  "crop_scale": (0.08, 1.0),
  "crop_ratio": (3.0 / 4.0, 4.0 / 3.0),
  "flip_prob": 0.5,
  "jitter_strength": 0.5,
  "jitter_prob": 0.8,
  "grayscale_prob": 0.2,
  "blur_prob": 0.5,
  "blur_sigma": (0.1, 2.0),
  "solarize_prob": 0.0,
  "clip_crop_scale": (0.9, 1.0),
  "clip_flip_prob": 0.0,
  "device": False,
}

# RGB -> YIQ; a hue shift is a rotation of the (I, Q) chroma plane, which is a
# single 3x3 matrix per image instead of a per-pixel HSV round trip.
RGB_TO_YIQ = np.array(
  [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
  dtype=np.float32,
)
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ).astype(np.float32)
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# EXIF orientation is honoured (OpenCV applies it; the Pillow fallback transposes).
_CV2_FLAGS = cv2.IMREAD_COLOR_RGB

# Images above this many pixels are not decoded (a "decompression bomb": a small
# file that would decode to gigabytes). Pillow's own hard limit, 2 x 89.5M pixels.
MAX_IMAGE_PIXELS = 2 * 89_478_485

# JPEG start-of-frame markers (they carry the size): C0-CF but DHT, JPG and DAC.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def to_unit_range(x: np.ndarray) -> np.ndarray:
  """``uint8`` [0, 255] -> float32 [-1, 1], the models' input convention."""
  return (x.astype(np.float32) * (2.0 / 255.0) - 1.0).astype(np.float32, copy=False)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
  i, n = 2, len(data)
  while i + 4 <= n:
    if data[i] != 0xFF:
      return None
    marker = data[i + 1]
    if marker == 0xFF:  # fill byte
      i += 1
      continue
    if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
      i += 2
      continue
    if marker in _SOF_MARKERS:
      if i + 9 > n:
        return None
      height, width = struct.unpack(">HH", data[i + 5 : i + 9])
      return width, height
    i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
  return None


def image_size(data: bytes) -> tuple[int, int] | None:
  """(width, height) read from an encoded image's header, without decoding it; None if unknown.

  PNG, GIF and JPEG by hand (a few microseconds, off the GIL-holding Pillow
  path); other formats through Pillow, which also reads only the header.
  """
  if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
    width, height = struct.unpack(">II", data[16:24])
    return width, height
  if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
    width, height = struct.unpack("<HH", data[6:10])
    return width, height
  if data[:2] == b"\xff\xd8":
    return _jpeg_size(data)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      return Image.open(io.BytesIO(data)).size
  except Image.DecompressionBombError:
    return (MAX_IMAGE_PIXELS + 1, 1)
  except Exception:  # noqa: BLE001 - PIL raises many types for bad data.
    return None


def decode_checked(data: bytes) -> tuple[np.ndarray | None, str]:
  """Encoded image bytes -> (``uint8 [H, W, 3]`` RGB, "") or (None, why it was not decoded).

  Any format OpenCV reads (JPEG incl. CMYK and progressive, PNG incl. 16-bit,
  palette, grey and alpha, WebP, BMP, ...), others (GIF) through Pillow; 16-bit
  samples keep their high byte, alpha is dropped (as TensorFlow's and
  torchvision's RGB decoders do), grey becomes three equal channels, and the
  EXIF orientation is applied. Images above ``MAX_IMAGE_PIXELS`` are refused
  before decoding.
  """
  if not data:
    return None, "empty image bytes"
  size = image_size(data)
  if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
    return None, (
      f"decompression bomb: {len(data)} bytes declare {size[0]}x{size[1]} pixels "
      f"(> augment.MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS})"
    )
  x = cv2.imdecode(np.frombuffer(data, np.uint8), _CV2_FLAGS)
  if x is not None:
    return x, ""
  try:  # Formats OpenCV does not read (GIF), or bytes it rejects.
    with Image.open(io.BytesIO(data)) as img:
      img.load()
      return np.asarray(ImageOps.exif_transpose(img).convert("RGB")), ""
  except Exception as e:  # noqa: BLE001 - PIL raises many types for bad data.
    return None, f"undecodable image ({type(e).__name__}: {e})"


def decode(data: bytes) -> np.ndarray | None:
  """Encoded image bytes -> ``uint8 [H, W, 3]`` RGB, or ``None`` (see ``decode_checked``)."""
  return decode_checked(data)[0]


def random_crop_box(
  width: int,
  height: int,
  rng: np.random.Generator,
  scale: tuple[float, float],
  ratio: tuple[float, float],
) -> tuple[int, int, int, int]:
  """An Inception-style crop box ``(left, top, right, bottom)``.

  Area ~ U(scale) * image area, aspect ratio log-uniform in ``ratio``;
  after 10 rejected draws, falls back to the largest centred box whose
  ratio is inside ``ratio``.
  """
  area = width * height
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  for _ in range(10):
    target = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_lo, log_hi))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      left = int(rng.integers(0, width - w + 1))
      top = int(rng.integers(0, height - h + 1))
      return left, top, left + w, top + h
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    w, h = int(round(height * ratio[1])), height
  else:
    w, h = width, height
  left, top = (width - w) // 2, (height - h) // 2
  return left, top, left + w, top + h


def _check_out(out: np.ndarray, shape: tuple[int, ...]) -> None:
  # OpenCV silently allocates a new array when ``dst`` does not fit; say so instead.
  if (
    out.shape != shape
    or out.dtype != np.uint8
    or not out.flags.c_contiguous
    or not out.flags.writeable
  ):
    raise ValueError(
      f"out must be a writeable C-contiguous uint8 array of shape {shape}, "
      f"got {out.dtype} {out.shape}."
    )


def resized_crop(img: np.ndarray, box, size: int, out: np.ndarray | None = None) -> np.ndarray:
  """Crop ``box = (left, top, right, bottom)`` and resize to ``size``x``size``, uint8.

  Bilinear, like ``tf.image.resize``'s default, except that a crop more
  than 2x larger than ``size`` both ways is area-averaged: there bilinear
  sampling would skip input pixels and alias. (Area costs 3.5x bilinear, so it
  is kept to the shrinks that need it.)

  ``out``: written in place and returned (the train pipeline passes a slot of
  its chunk buffer); otherwise a new array, never a view of ``img``.
  """
  left, top, right, bottom = box
  crop = img[top:bottom, left:right]
  h, w = crop.shape[:2]
  if out is not None:
    _check_out(out, (size, size) + crop.shape[2:])
  if (w, h) == (size, size):
    if out is None:
      return crop.copy()
    np.copyto(out, crop)
    return out
  area = w >= 2 * size and h >= 2 * size
  return cv2.resize(
    crop, (size, size), dst=out, interpolation=cv2.INTER_AREA if area else cv2.INTER_LINEAR
  )


def hflip(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
  """Horizontal flip (20x faster than copying ``x[:, ::-1]``); ``out=x`` flips in place."""
  return cv2.flip(x, 1, dst=out)


def eval_view(img: np.ndarray, size: int) -> np.ndarray:
  """Shorter side -> ``size``, centre crop; uint8 ``[size, size, 3]``."""
  h, w = img.shape[:2]
  side = min(w, h)
  left, top = (w - side) // 2, (h - side) // 2
  return resized_crop(img, (left, top, left + side, top + side), size)


def _gray(x: np.ndarray) -> np.ndarray:
  """RGB's luma; the mean of the bands for images with other channel counts (e.g. 13 bands)."""
  return x @ LUMA if x.shape[-1] == 3 else x.mean(axis=-1)


def check_jitter_channels(channels: int, jitter_prob) -> None:
  """Colour jitter's hue and saturation are RGB's: refuse them on other channel counts."""
  probs = jitter_prob if isinstance(jitter_prob, (list, tuple)) else (jitter_prob,)
  if channels != 3 and any(float(p) > 0 for p in probs):
    raise ValueError(
      f"data.augment.jitter_prob={jitter_prob}: colour jitter (hue, saturation) is defined on "
      f"RGB, and these images have {channels} channels; set data.augment.jitter_prob=0 "
      "(crop, flip, grayscale as the band mean, blur and solarize work on any channels)"
    )


# The photometric ops, in the order they run, by their probability keys (the
# host's ``Augment.photometric`` and ``device_augment`` share this).
PHOTOMETRIC_OPS = ("jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob")


def jitter_ranges(strength: float) -> tuple[float, float]:
  """SimCLR's jitter at strength s: factors in 1 +- 0.8 s (brightness, contrast,
  saturation) and a hue shift in +- 0.2 s turns; returns (0.8 s, 0.2 s)."""
  return 0.8 * strength, 0.2 * strength


def jitter_params(rng: np.random.Generator, strength: float):
  """SimCLR jitter's random draws: op order, (brightness, contrast, saturation) factors, hue turns."""
  spread, hue = jitter_ranges(strength)
  order = rng.permutation(4)
  factors = tuple(rng.uniform(1 - spread, 1 + spread) for _ in range(3))
  return order, factors, rng.uniform(-hue, hue)


def apply_jitter(x: np.ndarray, order, factors, turns: float) -> np.ndarray:
  """Brightness, contrast, saturation, hue (ops 0-3) in ``order`` on float [0, 1] HWC.

  Each op is followed by a clip to [0, 1]; contrast pivots on the mean grey
  level, saturation on each pixel's grey, and hue rotates the YIQ chroma plane.
  """
  for op in order:
    if op == 0:
      x = x * np.float32(factors[0])
    elif op == 1:
      mean = _gray(x).mean()
      x = (x - mean) * np.float32(factors[1]) + mean
    elif op == 2:
      g = _gray(x)[..., None]
      x = (x - g) * np.float32(factors[2]) + g
    else:
      x = cv2.transform(x, hue_matrix(turns))
    x = np.clip(x, 0.0, 1.0)
  return x


def color_jitter(x: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
  """SimCLR colour jitter on float [0, 1] HWC, the four ops in random order."""
  return apply_jitter(x, *jitter_params(rng, strength))


def hue_matrix(turns: float) -> np.ndarray:
  """The RGB -> RGB matrix that rotates hue by ``turns`` of a full circle."""
  theta = turns * 2 * math.pi
  cos, sin = math.cos(theta), math.sin(theta)
  rot = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]], np.float32)
  return (YIQ_TO_RGB @ rot @ RGB_TO_YIQ).astype(np.float32)


def blur_radius(sigma: float, size: int) -> int:
  """Kernel half-width for ``sigma``: 3 sigma, at least 1, less than the image."""
  return max(1, min(int(math.ceil(3 * sigma)), size - 1))


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
  """Separable Gaussian blur of HWC float32: radius 3*sigma, mirror padding.

  The padding reflects about the edge pixel (``d c b | a b c d``), which is
  OpenCV's ``BORDER_REFLECT_101`` and NumPy's ``mode="reflect"``.
  """
  radius = blur_radius(sigma, min(x.shape[:2]))
  k = 2 * radius + 1
  return cv2.GaussianBlur(x, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)


def _to_uint8(x01: np.ndarray) -> np.ndarray:
  return np.rint(x01 * 255.0).astype(np.uint8)


def resolve_augment_config(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
  """A plain dict of every ``DEFAULTS`` key, ``cfg``'s values applied (dict, ConfigDict or None).

  A key outside ``DEFAULTS`` is an error naming it and the known keys.
  """
  cfg = dict(cfg or {})
  unknown = set(cfg) - set(DEFAULTS)
  if unknown:
    raise ValueError(
      f"Unknown data.augment keys {sorted(unknown)}; known keys: {sorted(DEFAULTS)}."
    )
  return {**DEFAULTS, **cfg}


class Augment:
  """The configured train transforms; construct once, call per example."""

  def __init__(self, cfg: Mapping[str, Any] | None = None):
    self.cfg = resolve_augment_config(cfg)
    self.on_device = bool(self.cfg["device"])

  def prob(self, key: str, view: int) -> float:
    p = self.cfg[key]
    if isinstance(p, (list, tuple)):
      return float(p[view % len(p)])
    return float(p)

  def photometric(self, x: np.ndarray, rng: np.random.Generator, view: int = 0) -> np.ndarray:
    """Colour jitter, grayscale, blur and solarize of one uint8 view -> uint8."""
    c = self.cfg
    ops = [rng.random() < self.prob(k, view) for k in PHOTOMETRIC_OPS]
    if not any(ops):
      return x
    y = x.astype(np.float32) * np.float32(1.0 / 255.0)
    if ops[0]:
      check_jitter_channels(y.shape[-1], c["jitter_prob"])
      y = color_jitter(y, rng, float(c["jitter_strength"]))
    if ops[1]:
      y = np.repeat(_gray(y)[..., None], y.shape[-1], axis=-1)
    if ops[2]:
      y = gaussian_blur(y, rng.uniform(*c["blur_sigma"]))
    if ops[3]:
      y = np.where(y < 0.5, y, 1.0 - y)
    return _to_uint8(y)

  def simclr_view(
    self,
    img: np.ndarray,
    rng: np.random.Generator,
    size: int,
    view: int = 0,
    out: np.ndarray | None = None,
  ) -> np.ndarray:
    """One SimCLR view: uint8 ``[size, size, 3]``; without the photometric ops if ``device``.

    ``out``: the view is written there (and returned) instead of a new array.
    """
    c = self.cfg
    h, w = img.shape[:2]
    box = random_crop_box(w, h, rng, tuple(c["crop_scale"]), tuple(c["crop_ratio"]))
    x = resized_crop(img, box, size, out=out)
    if rng.random() < self.prob("flip_prob", view):
      hflip(x, out=x)
    if self.on_device:
      return x
    y = self.photometric(x, rng, view)
    if y is not x:
      np.copyto(x, y)
    return x

  def simclr_views(
    self,
    img: np.ndarray,
    rng: np.random.Generator,
    size: int,
    num_views: int,
    out: np.ndarray | None = None,
  ) -> np.ndarray:
    """``num_views`` independent views: uint8 ``[V, size, size, 3]``, into ``out`` if given."""
    if out is None:
      out = np.empty((num_views, size, size, img.shape[2]), np.uint8)
    else:
      _check_out(out, (num_views, size, size, img.shape[2]))
    for v in range(num_views):
      self.simclr_view(img, rng, size, v, out=out[v])
    return out

  def clip_train(
    self, img: np.ndarray, rng: np.random.Generator, size: int, out: np.ndarray | None = None
  ) -> np.ndarray:
    """CLIP-style mild random resized crop: uint8 ``[size, size, 3]``, into ``out`` if given."""
    c = self.cfg
    h, w = img.shape[:2]
    box = random_crop_box(w, h, rng, tuple(c["clip_crop_scale"]), tuple(c["crop_ratio"]))
    x = resized_crop(img, box, size, out=out)
    if rng.random() < float(c["clip_flip_prob"]):
      hflip(x, out=x)
    return x
