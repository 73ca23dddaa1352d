"""Image augmentations on the host, in NumPy/PIL, driven by a per-example RNG.

Every random choice comes from the ``np.random.Generator`` passed in (grain's
``random_map`` derives it from the pipeline seed and the example's position in
the shuffled, repeated stream), so the same (seed, example, epoch) always gives
the same pixels, on any host and with any number of workers.

Transforms (all return float32 in [-1, 1], i.e. ``(x / 255 - 0.5) / 0.5``):

* ``Augment.simclr_views``: V independent SimCLR views, ``[V, S, S, 3]``.
* ``Augment.clip_train``: one mild random-resized-crop view, ``[S, S, 3]``.
* ``eval_view``: resize the shorter side to S, centre crop, ``[S, S, 3]``.

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
grayscale_prob         0.2               convert to grey (3 equal channels)
blur_prob              0.5               Gaussian blur
blur_sigma             (0.1, 2.0)        blur sigma range, in output pixels
solarize_prob          0.0               invert pixels above 0.5
clip_crop_scale        (0.9, 1.0)        CLIP-style single-view crop area
clip_flip_prob         0.0               CLIP-style flip
=====================  ================  ======================================

This module knows nothing about grain, TFDS or JAX; ``Augment`` pickles, so it
runs unchanged in grain worker processes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

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
}

# RGB -> YIQ; a hue shift is a rotation of the (I, Q) chroma plane, which is a
# single 3x3 matrix per image instead of a per-pixel HSV round trip.
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
    dtype=np.float32,
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def normalize(x01: np.ndarray) -> np.ndarray:
    """[0, 1] -> [-1, 1] float32 (the model's input convention)."""
    return ((x01 - 0.5) / 0.5).astype(np.float32, copy=False)


def random_crop_box(
    width: int, height: int, rng: np.random.Generator,
    scale: tuple[float, float], ratio: tuple[float, float],
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


def resized_crop(img: Image.Image, box, size: int) -> np.ndarray:
    """Crop ``box`` and resize to ``size``x``size`` in one PIL call -> uint8."""
    return np.asarray(img.resize((size, size), Image.BILINEAR, box=box))


def eval_view(img: Image.Image, size: int) -> np.ndarray:
    """Shorter side -> ``size``, centre crop; float32 ``[size, size, 3]`` in [-1, 1]."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    out = resized_crop(img, (left, top, left + side, top + side), size)
    return normalize(out.astype(np.float32) / 255.0)


def _gray(x: np.ndarray) -> np.ndarray:
    return x @ _LUMA


def color_jitter(x: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """SimCLR colour jitter on float [0, 1] HWC, the four ops in random order."""
    b = c = s = 0.8 * strength
    hue = 0.2 * strength
    for op in rng.permutation(4):
        if op == 0:
            x = x * rng.uniform(1 - b, 1 + b)
        elif op == 1:
            mean = _gray(x).mean()
            x = (x - mean) * rng.uniform(1 - c, 1 + c) + mean
        elif op == 2:
            g = _gray(x)[..., None]
            x = (x - g) * rng.uniform(1 - s, 1 + s) + g
        else:
            theta = rng.uniform(-hue, hue) * 2 * math.pi
            cos, sin = math.cos(theta), math.sin(theta)
            rot = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]], np.float32)
            x = x @ (_YIQ_TO_RGB @ rot @ _RGB_TO_YIQ).T
        x = np.clip(x, 0.0, 1.0)
    return x


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of HWC float: radius 3*sigma, reflect padding."""
    h, w = x.shape[:2]
    radius = max(1, min(int(math.ceil(3 * sigma)), h - 1, w - 1))
    taps = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(x, ((radius, radius), (0, 0), (0, 0)), mode="reflect")
    x = sum(wgt * padded[k:k + h] for k, wgt in enumerate(kernel))
    padded = np.pad(x, ((0, 0), (radius, radius), (0, 0)), mode="reflect")
    return sum(wgt * padded[:, k:k + w] for k, wgt in enumerate(kernel))


class Augment:
    """The configured train transforms; construct once, call per example."""

    def __init__(self, cfg: Mapping[str, Any] | None = None):
        cfg = dict(cfg or {})
        unknown = set(cfg) - set(DEFAULTS)
        if unknown:
            raise ValueError(
                f"Unknown data.augment keys {sorted(unknown)}; known keys: "
                f"{sorted(DEFAULTS)}."
            )
        self.cfg = {**DEFAULTS, **cfg}

    def _prob(self, key: str, view: int) -> float:
        p = self.cfg[key]
        if isinstance(p, (list, tuple)):
            return float(p[view % len(p)])
        return float(p)

    def simclr_view(self, img: Image.Image, rng: np.random.Generator, size: int,
                    view: int = 0) -> np.ndarray:
        """One SimCLR view: float32 ``[size, size, 3]`` in [-1, 1]."""
        c = self.cfg
        box = random_crop_box(*img.size, rng, tuple(c["crop_scale"]), tuple(c["crop_ratio"]))
        x = resized_crop(img, box, size)
        if rng.random() < self._prob("flip_prob", view):
            x = x[:, ::-1]
        x = x.astype(np.float32) * (1.0 / 255.0)
        if rng.random() < self._prob("jitter_prob", view):
            x = color_jitter(x, rng, float(c["jitter_strength"]))
        if rng.random() < self._prob("grayscale_prob", view):
            x = np.repeat(_gray(x)[..., None], 3, axis=-1)
        if rng.random() < self._prob("blur_prob", view):
            x = gaussian_blur(x, rng.uniform(*c["blur_sigma"]))
        if rng.random() < self._prob("solarize_prob", view):
            x = np.where(x < 0.5, x, 1.0 - x)
        return normalize(x)

    def simclr_views(self, img: Image.Image, rng: np.random.Generator, size: int,
                     num_views: int) -> np.ndarray:
        """``num_views`` independent views: float32 ``[V, size, size, 3]``."""
        return np.stack([self.simclr_view(img, rng, size, v) for v in range(num_views)])

    def clip_train(self, img: Image.Image, rng: np.random.Generator, size: int) -> np.ndarray:
        """CLIP-style mild random resized crop: float32 ``[size, size, 3]``."""
        c = self.cfg
        box = random_crop_box(*img.size, rng, tuple(c["clip_crop_scale"]), tuple(c["crop_ratio"]))
        x = resized_crop(img, box, size)
        if rng.random() < float(c["clip_flip_prob"]):
            x = x[:, ::-1]
        return normalize(x.astype(np.float32) * (1.0 / 255.0))
