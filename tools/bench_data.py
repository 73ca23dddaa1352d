"""Host input-pipeline throughput on real JPEGs; prints one JSON line per measurement.

  python tools/bench_data.py --seconds 5 --num_images 1000
  python tools/bench_data.py --only decoders          # just the decoder comparison

Builds (once, cached in --work_dir) a JPEG ArrayRecord dataset of random
256-500 px crops of scikit-image's bundled photographs through
``convert_image_folder``, then measures on the same files, side by side:

* ``grain``: ``pipeline.train_iterator(kind="multiview")``, two 224x224
  ``uint8`` views, for ``crop_flip`` (random resized crop + flip only),
  ``simclr`` (the full augmentation set on the host) and ``simclr_device``
  (the host part of ``augment.device=True``: crop + flip + a seed; the
  photometric ops run in the train step), in this process with one reader
  thread and with the default (one per core), and with 1 and 2 worker
  processes of one reader thread each (a worker also copies each batch into
  shared memory on its main thread, so one worker uses more than one core);
* ``bare_loop``: the same decode + augment calls (``ExampleTransform.train``)
  in a plain Python loop, one thread; ``bare_loop_x2``: two of them in two
  processes at once, the scaling this machine gives with no pipeline at all;
* ``device_augment``: the jitted ``device_augment.photometric`` on a batch of
  views on this process's JAX backend (the CPU here), ms per example;
* ``decoder``: decode + two crop/flip views to uint8 with several decoders
  and resizers (Pillow, Pillow ``draft`` = JPEG DCT downscale-on-decode,
  simplejpeg if installed, OpenCV as the pipeline uses it);
* ``tf_data``: the tf.data equivalent (``decode_jpeg``,
  ``sample_distorted_bounding_box``, ``resize``, ``random_flip_left_right``,
  ``AUTOTUNE``), with its natural float32 output and cast to uint8, and with
  the fused ``decode_and_crop_jpeg``, run in a child process of
  ``--tf_python`` (a separate environment with ``pip install
  'big_contrast[bench]'``: TF is never in the core install).

Rates are examples/s (one example = 2 views); ``cpu_ms_per_example`` is the
CPU time of every process involved (grain's workers included) per example.
The ``targets`` line compares them; the ``v5e_estimate`` line turns the
CPU per example with 2 workers into host cores per TPU v5e chip at a
ViT-B/16 step rate (assumptions in the line). The machine is shared: each
figure is the best of ``--repeats`` interleaved rounds.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import multiprocessing
import os
import subprocess
import sys
import time

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 224
CROP_FLIP = dict(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0)
AUGMENTS = {"crop_flip": CROP_FLIP, "simclr": {}, "simclr_device": {"device": True}}


def _emit(**fields) -> dict:
  print(json.dumps(fields), flush=True)
  return fields


# ------------------------------------------------------------------ tf.data child


def tf_child(ds_dir: str, mode: str, seconds: float, batch: int) -> None:
  """Runs under --tf_python: tf.data pipeline over the ArrayRecord files."""
  import tensorflow as tf  # noqa: PLC0415 — TensorFlow is only in the --tf_python environment
  from array_record.python.array_record_data_source import (  # noqa: PLC0415 — TensorFlow is only in the --tf_python environment
    ArrayRecordDataSource,
  )

  files = sorted(glob.glob(os.path.join(ds_dir, "*-train.array_record-*")))
  source = ArrayRecordDataSource(files)
  n = len(source)

  def records():  # Global shuffle by random access, like grain.
    rng = np.random.default_rng(0)
    while True:
      for i in rng.permutation(n):
        yield source[int(i)]

  def window(shape):
    begin, size, _ = tf.image.sample_distorted_bounding_box(
      shape,
      bounding_boxes=tf.zeros([0, 0, 4]),
      min_object_covered=0.0,
      area_range=(0.08, 1.0),
      aspect_ratio_range=(3 / 4, 4 / 3),
      max_attempts=10,
      use_image_if_no_bounding_boxes=True,
    )
    return begin, size

  def jitter(x):
    x = tf.image.random_brightness(x, 0.4)
    x = tf.image.random_contrast(x, 0.6, 1.4)
    x = tf.image.random_saturation(x, 0.6, 1.4)
    x = tf.image.random_hue(x, 0.1)
    return tf.clip_by_value(x, 0.0, 1.0)

  def blur(x):
    sigma = tf.random.uniform([], 0.1, 2.0)
    taps = tf.range(-6, 7, dtype=tf.float32)
    k = tf.exp(-0.5 * (taps / sigma) ** 2)
    k = k / tf.reduce_sum(k)
    kh = tf.tile(tf.reshape(k, [13, 1, 1, 1]), [1, 1, 3, 1])
    kw = tf.tile(tf.reshape(k, [1, 13, 1, 1]), [1, 1, 3, 1])
    y = tf.nn.depthwise_conv2d(x[None], kh, [1, 1, 1, 1], "SAME")
    return tf.nn.depthwise_conv2d(y, kw, [1, 1, 1, 1], "SAME")[0]

  def finish(crop):
    x = tf.image.resize(crop, [SIZE, SIZE], method="bilinear")
    if mode == "crop_flip_uint8":  # The bytes the grain pipeline ships.
      return tf.cast(tf.round(tf.image.random_flip_left_right(x)), tf.uint8)
    x = tf.image.random_flip_left_right(x) / 255.0
    if mode == "simclr":
      x = tf.cond(tf.random.uniform([]) < 0.8, lambda: jitter(x), lambda: x)
      x = tf.cond(
        tf.random.uniform([]) < 0.2,
        lambda: tf.tile(tf.image.rgb_to_grayscale(x), [1, 1, 3]),
        lambda: x,
      )
      x = tf.cond(tf.random.uniform([]) < 0.5, lambda: blur(x), lambda: x)
    return x * 2.0 - 1.0

  def example(record):
    image = tf.io.parse_single_example(record, {"image": tf.io.FixedLenFeature([], tf.string)})[
      "image"
    ]
    views = []
    if mode == "crop_flip_fused":  # TF's fastest: decode only the crop window.
      for _ in range(2):
        begin, size = window(tf.io.extract_jpeg_shape(image))
        crop = tf.io.decode_and_crop_jpeg(
          image, tf.stack([begin[0], begin[1], size[0], size[1]]), channels=3
        )
        views.append(finish(crop))
    else:  # One decode, two crops (what the grain pipeline does).
      decoded = tf.io.decode_jpeg(image, channels=3)
      for _ in range(2):
        begin, size = window(tf.shape(decoded))
        views.append(finish(tf.slice(decoded, begin, size)))
    return tf.stack(views)

  ds = tf.data.Dataset.from_generator(records, output_signature=tf.TensorSpec([], tf.string))
  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  ds = ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  print(json.dumps(_time_batches(iter(ds), batch, seconds)), flush=True)


# ----------------------------------------------------------------------- helpers


def _live_children_cpu() -> float:
  """CPU seconds used so far by this process's live multiprocessing children (grain's workers)."""
  total = 0.0
  for child in multiprocessing.active_children():
    try:
      with open(f"/proc/{child.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
      total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):  # exited, or no /proc
      pass
  return total


def _time_batches(it, batch: int, seconds: float, warmup: float = 2.0) -> dict:
  """Examples/s over ``seconds`` after ``warmup``, and the CPU it took.

  ``cpu_s`` counts this process, its exited children and its live
  multiprocessing children (grain's worker processes, read from /proc), so
  ``cpu_ms_per_example`` compares the work per example across in-process
  threads, worker processes and tf.data.
  """
  end = time.perf_counter() + warmup
  while time.perf_counter() < end:
    next(it)
  t0, n = time.perf_counter(), 0
  c0, w0 = os.times(), _live_children_cpu()
  while time.perf_counter() - t0 < seconds:
    next(it)
    n += batch
  dt = time.perf_counter() - t0
  c1, w1 = os.times(), _live_children_cpu()
  cpu = (
    (c1.user - c0.user)
    + (c1.system - c0.system)
    + (c1.children_user - c0.children_user)
    + (c1.children_system - c0.children_system)
  )
  cpu += w1 - w0
  return {
    "examples_per_s": round(n / dt, 1),
    "seconds": round(dt, 2),
    "cpu_s": round(cpu, 2),
    "cpu_ms_per_example": round(1000 * cpu / n, 3),
  }


def build_dataset(work_dir: str, num_images: int, seed: int = 0) -> str:
  """Random 256-500 px JPEG crops of scikit-image's photos -> TFDS ArrayRecord."""
  from PIL import Image  # noqa: PLC0415 — kept out of the tf.data child process
  from skimage import data  # noqa: PLC0415 — optional: scikit-image (the bench extra)

  from big_contrast.data import convert  # noqa: PLC0415 — importable once main() puts the repository on sys.path

  out = os.path.join(work_dir, "photos_jpeg")
  if os.path.exists(os.path.join(out, "dataset_info.json")):
    return out
  names = [
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "cat",
  ]
  rng = np.random.default_rng(seed)
  raw = os.path.join(work_dir, "raw")
  for i in range(num_images):
    name = names[i % len(names)]
    photo = Image.fromarray(getattr(data, name)())
    # Random rescale first so crops of one photo differ in scale, not only position.
    scale = rng.uniform(max(256 / min(photo.size), 0.6), 1.0)
    photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.BILINEAR)
    w = int(rng.integers(256, min(500, photo.width) + 1))
    h = int(rng.integers(256, min(500, photo.height) + 1))
    left = int(rng.integers(0, photo.width - w + 1))
    top = int(rng.integers(0, photo.height - h + 1))
    folder = os.path.join(raw, name)
    os.makedirs(folder, exist_ok=True)
    photo.crop((left, top, left + w, top + h)).save(
      os.path.join(folder, f"{i:06d}.jpg"), quality=90
    )
  t0 = time.perf_counter()
  report = convert.convert_image_folder(raw, out, shard_size=256, progress=False)
  _emit(
    kind="convert",
    images=report["splits"]["train"],
    images_per_s=round(report["splits"]["train"] / (time.perf_counter() - t0), 1),
    num_workers=0,
    verify="decode",
  )
  return out


# (worker processes, reader threads per process; None = the default, one per core).
# Workers each read with one thread, so the 1 -> 2 worker ratio is the process
# scaling (a worker's main thread also copies batches to shared memory, so one
# worker takes more than a core: see cpu_ms_per_example); in-process with one
# thread is the same work as the bare loop, so their ratio is grain's overhead.
GRAIN_CONFIGS = ((0, 1), (0, None), (1, 1), (2, 1))


def bench_grain(
  ds: str, aug: str, workers: int, threads: int | None, seconds: float, batch: int
) -> dict:
  from big_contrast.data import pipeline  # noqa: PLC0415 — importable once main() puts the repository on sys.path

  cfg = dict(
    name=ds,
    image_size=SIZE,
    num_views=2,
    worker_count=workers,
    read_threads=threads,
    augment=AUGMENTS[aug],
  )
  it = pipeline.train_iterator(
    cfg, kind="multiview", global_batch_size=batch, seed=0, process_index=0, process_count=1
  )
  try:
    # Workers need a few seconds to spawn and import before they deliver.
    result = _time_batches(it, batch, seconds, warmup=6.0 if workers else 2.0)
  finally:
    if hasattr(it, "close"):
      it.close()
  return dict(
    kind="grain",
    aug=aug,
    workers=workers,
    read_threads=threads or pipeline._read_threads(pipeline.resolve_data_config(cfg)),
    **result,
  )


def bench_bare_loop(ds: str, aug: str, seconds: float) -> dict:
  from big_contrast.data import pipeline  # noqa: PLC0415 — importable once main() puts the repository on sys.path
  from big_contrast.data.allocator import tune_malloc  # noqa: PLC0415 — importable once main() puts the repository on sys.path
  from big_contrast.data.sources import PositionedSource, open_split  # noqa: PLC0415 — importable once main() puts the repository on sys.path

  source, features = open_split(ds, "train", None)
  source = PositionedSource(source)
  # The pipeline's own transform for this data config.
  cfg = pipeline.resolve_data_config(dict(image_size=SIZE, num_views=2, augment=AUGMENTS[aug]))
  ex = pipeline._example_transform(cfg, features, "multiview", tokenizer=None, text_max_len=0)
  rng = np.random.default_rng(0)

  # The pipeline's malloc settings (see big_contrast/data/allocator.py).
  tune_malloc()

  def loop():
    # Pixels go into the rows of a fresh 32-row buffer, as the chunk reader
    # writes them.
    i = 0
    while True:
      if i % 32 == 0:
        rows = np.empty((32,) + ex.pixel_shape, np.uint8)
      yield ex.train(source[i % len(source)], rng, out=rows[i % 32])
      i += 1

  return dict(kind="bare_loop", aug=aug, **_time_batches(loop(), 1, seconds))


def bench_bare_pair(ds: str, aug: str, seconds: float) -> dict:
  """Two bare loops in two processes at once: how this machine's cores scale, with no pipeline."""
  cmd = [
    sys.executable,
    os.path.abspath(__file__),
    "--bare_child",
    ds,
    "--augs",
    aug,
    "--seconds",
    str(seconds),
  ]
  procs = [
    subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for _ in range(2)
  ]
  rates = []
  for proc in procs:
    out, _ = proc.communicate(timeout=300)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
      return dict(kind="bare_loop_x2", aug=aug, error=f"child exited {proc.returncode}")
    rates.append(json.loads(lines[-1])["examples_per_s"])
  return dict(kind="bare_loop_x2", aug=aug, examples_per_s=round(sum(rates), 1), per_process=rates)


def bench_device_augment(seconds: float, batch: int) -> dict:
  import jax  # noqa: PLC0415 — kept out of the tf.data child process

  from big_contrast.data import device_augment  # noqa: PLC0415 — importable once main() puts the repository on sys.path

  views = np.random.default_rng(0).integers(0, 256, (batch, 2, SIZE, SIZE, 3), np.uint8)
  seeds = np.arange(batch, dtype=np.uint32)
  fn = jax.jit(lambda v, s: device_augment.photometric(v, s, {}))
  views, seeds = jax.device_put(views), jax.device_put(seeds)
  fn(views, seeds).block_until_ready()
  t0, n = time.perf_counter(), 0
  while time.perf_counter() - t0 < seconds:
    fn(views, seeds).block_until_ready()
    n += batch
  dt = time.perf_counter() - t0
  return dict(
    kind="device_augment",
    backend=jax.default_backend(),
    device=str(jax.devices()[0].device_kind),
    batch=batch,
    ms_per_example=round(1000 * dt / n, 3),
    examples_per_s=round(n / dt, 1),
  )


def _decoders():
  """name -> fn(bytes, rng) -> uint8 [2, 224, 224, 3] (decode, 2 crops, flips)."""
  import cv2  # noqa: PLC0415 — kept out of the tf.data child process
  from PIL import Image  # noqa: PLC0415 — kept out of the tf.data child process

  from big_contrast.data import augment  # noqa: PLC0415 — importable once main() puts the repository on sys.path

  def boxes(w, h, rng):
    return [augment.random_crop_box(w, h, rng, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(2)]

  def pil_views(img, bxs, rng, full_size=None):
    sx, sy = (
      (1.0, 1.0) if full_size is None else (img.size[0] / full_size[0], img.size[1] / full_size[1])
    )
    out = []
    for l, t, r, b in bxs:
      box = (l * sx, t * sy, min(r * sx, img.size[0]), min(b * sy, img.size[1]))
      x = np.asarray(img.resize((SIZE, SIZE), Image.BILINEAR, box=box))
      out.append(x[:, ::-1] if rng.random() < 0.5 else x)
    return np.stack(out)

  def pil(data, rng):
    img = Image.open(io.BytesIO(data))
    img.load()
    return pil_views(img.convert("RGB"), boxes(*img.size, rng), rng)

  def pil_draft(data, rng):
    # Draw the boxes on the full-size geometry, then let libjpeg decode at
    # the largest 1/2^k scale that keeps both crops >= 224 px (no quality loss).
    img = Image.open(io.BytesIO(data))
    w, h = img.size
    bxs = boxes(w, h, rng)
    smallest = min(min(r - l, b - t) for l, t, r, b in bxs)
    k = max(1, int(smallest // SIZE))
    img.draft("RGB", (w // k, h // k))
    img.load()
    return pil_views(img, bxs, rng, full_size=(w, h))

  def cv_views(x, rng, interpolation=None):
    h, w = x.shape[:2]
    out = []
    for box in boxes(w, h, rng):
      if interpolation is None:  # What the pipeline does: area when shrinking.
        v = augment.resized_crop(x, box, SIZE)
      else:
        l, t, r, b = box
        v = cv2.resize(x[t:b, l:r], (SIZE, SIZE), interpolation=interpolation)
      out.append(v[:, ::-1] if rng.random() < 0.5 else v)
    return np.stack(out)

  found = {
    "pil": pil,
    "pil_draft": pil_draft,
    "opencv_bilinear": lambda d, rng: cv_views(augment.decode(d), rng, cv2.INTER_LINEAR),
    "opencv_area_or_bilinear (pipeline)": lambda d, rng: cv_views(augment.decode(d), rng),
  }
  try:
    import simplejpeg  # noqa: PLC0415 — optional: measured when installed

    def sj(data, rng):
      x = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=True)
      return cv_views(x, rng)

    found["simplejpeg_fast+opencv"] = sj
  except ImportError:
    pass
  return found


def bench_decoders(ds: str, seconds: float) -> list[dict]:
  from big_contrast.data.sources import load_source  # noqa: PLC0415 — importable once main() puts the repository on sys.path

  source = load_source(ds, "train")
  blobs = [source[i]["image"] for i in range(min(len(source), 300))]
  results = []
  for name, fn in _decoders().items():
    rng = np.random.default_rng(0)

    def loop(fn=fn, rng=rng):
      i = 0
      while True:
        yield fn(blobs[i % len(blobs)], rng)
        i += 1

    results.append(
      dict(
        kind="decoder",
        decoder=name,
        output="uint8 [2,224,224,3]",
        **_time_batches(loop(), 1, seconds, warmup=0.5),
      )
    )
  # What a float32 [-1, 1] host output would add per example (the pipeline
  # ships uint8 and the model converts on the device).
  x = np.zeros((2, SIZE, SIZE, 3), np.uint8)
  t0, n = time.perf_counter(), 0
  while time.perf_counter() - t0 < 1.0:
    ((x.astype(np.float32) * (1 / 255.0) - 0.5) / 0.5).astype(np.float32)
    n += 1
  results.append(
    dict(kind="float_convert", ms_per_example=round(1000 * (time.perf_counter() - t0) / n, 3))
  )
  return results


def bench_tf(tf_python: str, ds: str, mode: str, seconds: float, batch: int) -> dict:
  if not tf_python or not os.path.exists(tf_python):
    return dict(
      kind="tf_data", mode=mode, error=f"no TensorFlow python (--tf_python={tf_python!r})"
    )
  cmd = [
    tf_python,
    os.path.abspath(__file__),
    "--tf_child",
    ds,
    "--tf_mode",
    mode,
    "--seconds",
    str(seconds),
    "--batch",
    str(batch),
  ]
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
  lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
  if proc.returncode or not lines:
    return dict(kind="tf_data", mode=mode, error=proc.stderr[-500:])
  return dict(kind="tf_data", mode=mode, **json.loads(lines[-1]))


def _best(rows: list[dict], **match) -> float | None:
  rates = [
    r["examples_per_s"]
    for r in rows
    if "examples_per_s" in r and all(r.get(k) == v for k, v in match.items())
  ]
  return max(rates) if rates else None


def _targets(rows: list[dict]) -> dict:
  """The issue's three throughput targets, from the best round of each figure."""
  out = {}
  tf_best = max(
    (
      r
      for r in (
        _best(rows, kind="tf_data", mode=m)
        for m in ("crop_flip", "crop_flip_uint8", "crop_flip_fused")
      )
      if r
    ),
    default=None,
  )
  for aug in AUGMENTS:
    g = {w: _best(rows, kind="grain", aug=aug, workers=w, read_threads=1) for w in (0, 1, 2)}
    bare = _best(rows, kind="bare_loop", aug=aug)
    entry = {"grain_best": _best(rows, kind="grain", aug=aug)}
    tf_ref = tf_best if aug == "crop_flip" else _best(rows, kind="tf_data", mode="simclr")
    if entry["grain_best"] and tf_ref:
      entry["vs_tf_data"] = round(entry["grain_best"] / tf_ref, 2)
    if g[0] and bare:  # Both one thread doing the same calls.
      entry["overhead_vs_bare_loop_at_0_workers"] = round(1 - g[0] / bare, 3)
    if g[1] and g[2]:
      entry["workers_2_over_1"] = round(g[2] / g[1], 2)
    pair = _best(rows, kind="bare_loop_x2", aug=aug)
    if pair and bare:  # The same ratio for two plain processes: the machine's own scaling.
      entry["bare_loop_2_processes_over_1"] = round(pair / bare, 2)
    out[aug] = entry
  return dict(
    kind="targets",
    tf_data_crop_flip_best=tf_best,
    goals="vs_tf_data >= 1.5 (crop_flip); overhead <= 0.15; workers_2_over_1 >= 1.7",
    **out,
  )


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--work_dir", default="/tmp/bench_data")
  parser.add_argument("--num_images", type=int, default=1000)
  parser.add_argument("--seconds", type=float, default=5.0)
  parser.add_argument(
    "--repeats", type=int, default=2, help="interleaved rounds; each figure is its best round"
  )
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument(
    "--tf_python",
    default=os.environ.get("BENCH_TF_PYTHON", ""),
    help="python of an environment with big_contrast[bench] installed",
  )
  parser.add_argument(
    "--only",
    default="decoders,bare,grain,tf,device",
    help="comma list of: decoders, bare, grain, tf, device",
  )
  parser.add_argument("--augs", default=",".join(AUGMENTS))
  parser.add_argument("--tf_child", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--bare_child", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--tf_mode", default="crop_flip", help=argparse.SUPPRESS)
  # v5e estimate: ViT-B/16 at 224 ~17.6 GFLOPs forward/image, x3 for training.
  parser.add_argument("--v5e_peak_tflops", type=float, default=197.0)
  parser.add_argument("--mfu", type=float, default=0.5)
  parser.add_argument("--vit_train_gflops_per_view", type=float, default=3 * 17.6)
  args = parser.parse_args(argv)
  if args.tf_child:
    tf_child(args.tf_child, args.tf_mode, args.seconds, args.batch)
    return
  sys.path.insert(0, _ROOT)
  if args.bare_child:
    print(json.dumps(bench_bare_loop(args.bare_child, args.augs, args.seconds)), flush=True)
    return
  only = set(args.only.split(","))
  augs = args.augs.split(",")
  _emit(kind="machine", cpus=os.cpu_count(), load_avg=os.getloadavg())
  ds = build_dataset(args.work_dir, args.num_images)
  results = []

  def record(row: dict) -> None:
    results.append(_emit(round=rnd, **row))

  for rnd in range(args.repeats):  # noqa: B007 — record() reads the round
    if "decoders" in only:
      for row in bench_decoders(ds, args.seconds):
        record(row)
    for aug in augs:
      if "bare" in only:
        record(bench_bare_loop(ds, aug, args.seconds))
        record(bench_bare_pair(ds, aug, args.seconds))
      if "grain" in only:
        for workers, threads in GRAIN_CONFIGS:
          record(bench_grain(ds, aug, workers, threads, args.seconds, args.batch))
      if "tf" in only and aug != "simclr_device":
        modes = (
          ["crop_flip", "crop_flip_uint8", "crop_flip_fused"] if aug == "crop_flip" else ["simclr"]
        )
        for mode in modes:
          record(bench_tf(args.tf_python, ds, mode, args.seconds, args.batch))
    if "device" in only:
      record(bench_device_augment(args.seconds, args.batch))
  _emit(**_targets(results))
  # Per core: the pipeline's CPU per example with 2 workers (every core
  # busy, reading, augmenting and the transfer to this process included).
  per_core = {}
  for aug in augs:
    cpu = [
      r["cpu_ms_per_example"]
      for r in results
      if r.get("kind") == "grain"
      and r.get("aug") == aug
      and r.get("workers") == 2
      and "cpu_ms_per_example" in r
    ]
    per_core[aug] = round(1000 / min(cpu), 1) if cpu else None
  if per_core.get("crop_flip"):
    views_per_chip = args.v5e_peak_tflops * 1e3 * args.mfu / args.vit_train_gflops_per_view
    row = dict(kind="v5e_estimate", chip_needs_examples_per_s=round(views_per_chip / 2, 1))
    for aug, rate in per_core.items():
      if rate:
        row[f"per_core_examples_per_s_{aug}"] = rate
        row[f"host_cores_per_chip_{aug}"] = round(views_per_chip / 2 / rate, 2)
    _emit(
      **row,
      assumptions=(
        f"per core = 1000 / CPU ms per example of grain with 2 workers; ViT-B/16 224px, "
        f"{args.vit_train_gflops_per_view:.1f} GFLOPs/view train, {args.mfu:.0%} MFU of "
        f"{args.v5e_peak_tflops} TFLOPs, 2 views/example; a v5e host has 224 vCPUs "
        "(112 cores) for 8 chips"
      ),
    )
  _emit(kind="machine_end", load_avg=os.getloadavg())


if __name__ == "__main__":
  main()
