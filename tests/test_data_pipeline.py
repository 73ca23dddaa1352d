"""grain pipelines: determinism, per-host sharding, exact resume, eval coverage, bad records."""

import gc
import itertools
import os
import time

import grain
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath

from big_contrast import data
from big_contrast.data import augment, digits, pipeline, sources
from big_contrast.data.tokenizer import make_tokenizer

TOK = make_tokenizer("bytes")


@pytest.fixture(scope="module")
def cfg(data_dir):
  data.ensure_built("bc_digits", data_dir)
  return {
    "name": "bc_digits",
    "data_dir": data_dir,
    "image_size": 32,
    "augment": {"flip_prob": 0.0, "blur_prob": 0.0},
  }


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_image_text_batches_have_documented_fields(cfg):
  it = pipeline.train_iterator(
    cfg,
    kind="image_text",
    global_batch_size=16,
    seed=0,
    tokenizer=TOK,
    text_max_len=48,
    process_index=0,
    process_count=1,
  )
  batch = next(it)
  assert batch["image"].shape == (16, 32, 32, 3) and batch["image"].dtype == np.uint8
  assert batch["image"].max() > 128  # white strokes on black: the full 0..255 range
  assert batch["text"].shape == (16, 48) and batch["text"].dtype == np.int32
  assert batch["text_id"].dtype == np.int32 and (batch["text_id"] >= 0).all()
  assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
  assert batch["skipped"].sum() == 0
  # Equal captions <=> equal text ids.
  texts = [tuple(t) for t in batch["text"]]
  for i, j in itertools.combinations(range(16), 2):
    assert (texts[i] == texts[j]) == (batch["text_id"][i] == batch["text_id"][j])


def test_multiview_batches_have_views(cfg):
  it = pipeline.train_iterator(
    {**cfg, "num_views": 3},
    kind="multiview",
    global_batch_size=8,
    seed=0,
    process_index=0,
    process_count=1,
  )
  batch = next(it)
  assert batch["views"].shape == (8, 3, 32, 32, 3)
  assert not np.array_equal(batch["views"][:, 0], batch["views"][:, 1])


def test_image_kind_and_config_dict_are_supported(cfg):
  data_cfg = ml_collections.ConfigDict(cfg)
  data_cfg.augment = ml_collections.ConfigDict({"clip_crop_scale": (0.5, 1.0)})
  data_cfg.worker_count = ml_collections.config_dict.placeholder(int)
  batch = next(
    pipeline.train_iterator(
      data_cfg, kind="image", global_batch_size=8, seed=0, process_index=0, process_count=1
    )
  )
  assert sorted(batch) == ["image", "index", "label", "skipped"]
  assert batch["image"].shape == (8, 32, 32, 3)


def test_data_config_is_resolved_once_against_the_defaults(cfg):
  resolved = pipeline.resolve_data_config(
    ml_collections.ConfigDict({**cfg, "read_threads": None, "image_size": None})
  )
  assert sorted(resolved) == sorted(pipeline.DATA_DEFAULTS)
  assert resolved["data_dir"] == cfg["data_dir"] and resolved["read_threads"] is None
  assert resolved["image_size"] == pipeline.DATA_DEFAULTS["image_size"]  # None: the default
  assert resolved["augment"] == {**augment.DEFAULTS, **cfg["augment"]}
  assert pipeline.resolve_data_config(None)["name"] == pipeline.DATA_DEFAULTS["name"]


@pytest.mark.parametrize("entry", ["train_iterator", "eval_batches", "class_names"])
def test_unknown_data_key_is_an_error_naming_it_and_the_known_keys(cfg, entry):
  kwargs = dict(kind="image", global_batch_size=8, seed=0, process_index=0, process_count=1)
  if entry == "eval_batches":
    kwargs = dict(kind="image", batch_size=8, process_index=0, process_count=1)
  call = getattr(pipeline, entry)
  with pytest.raises(ValueError, match=r"\['imagesize'\].*known keys: .*'image_size'"):
    call({**cfg, "imagesize": 16}, **({} if entry == "class_names" else kwargs))


def test_unknown_kind_is_an_error_naming_the_choices(cfg):
  with pytest.raises(ValueError, match="multiview"):
    pipeline.train_iterator(
      cfg, kind="pairs", global_batch_size=8, seed=0, process_index=0, process_count=1
    )


def test_same_seed_same_batches_other_seed_different(cfg):
  def batches(seed):
    return _take(
      pipeline.train_iterator(
        cfg, kind="multiview", global_batch_size=32, seed=seed, process_index=0, process_count=1
      ),
      2,
    )

  _assert_batches_equal(batches(3), batches(3))
  assert not np.array_equal(batches(3)[0]["index"], batches(4)[0]["index"])


def test_epochs_are_reshuffled_and_each_covers_the_split(cfg):
  it = pipeline.train_iterator(
    cfg, kind="image", global_batch_size=500, seed=0, process_index=0, process_count=1
  )
  epoch1 = np.concatenate([b["index"] for b in _take(it, 3)])
  epoch2 = np.concatenate([b["index"] for b in _take(it, 3)])
  assert sorted(epoch1) == sorted(epoch2) == list(range(1500))
  assert not np.array_equal(epoch1, epoch2)


def test_process_shards_are_disjoint_cover_the_data_and_match_one_host(cfg):
  def host(index, count):
    it = pipeline.train_iterator(
      cfg,
      kind="image_text",
      global_batch_size=100,
      seed=1,
      tokenizer=TOK,
      process_index=index,
      process_count=count,
    )
    return _take(it, 15 if count == 2 else 1)

  shards = [np.concatenate([b["index"] for b in host(p, 2)]) for p in range(2)]
  assert len(set(shards[0]) & set(shards[1])) == 0
  assert sorted(np.concatenate(shards)) == list(range(1500))
  # The augmentation depends on (seed, stream position), not on the host
  # count: each example looks the same whether 1 or 2 hosts read it.
  one = host(0, 1)[0]
  first_of_each = [host(p, 2)[0] for p in range(2)]
  for p, batch in enumerate(first_of_each):
    np.testing.assert_array_equal(batch["index"], one["index"][p::2])
    np.testing.assert_array_equal(batch["image"], one["image"][p::2])


def test_batch_size_must_divide_over_processes(cfg):
  with pytest.raises(ValueError, match="batch_size"):
    pipeline.train_iterator(
      cfg, kind="multiview", global_batch_size=15, seed=0, process_index=0, process_count=2
    )


def test_resumed_iterator_continues_exactly(cfg):
  it = pipeline.train_iterator(
    cfg,
    kind="image_text",
    global_batch_size=16,
    seed=5,
    tokenizer=TOK,
    process_index=1,
    process_count=2,
  )
  _take(it, 3)
  state = it.get_state()
  expected = _take(it, 3)
  resumed = pipeline.train_iterator(
    cfg,
    kind="image_text",
    global_batch_size=16,
    seed=5,
    tokenizer=TOK,
    process_index=1,
    process_count=2,
  )
  resumed.set_state(state)
  _assert_batches_equal(_take(resumed, 3), expected)


def test_grain_checkpoint_contract_holds(cfg):
  ds = pipeline.train_dataset(
    cfg, kind="multiview", global_batch_size=8, seed=2, process_index=0, process_count=1
  )
  grain.experimental.assert_equal_output_after_checkpoint(
    grain.experimental.LimitIterDataset(ds, count=4)
  )


def test_worker_processes_give_the_same_batches_and_resume(cfg):
  # Workers take whole chunks in turn; grain interleaves them back in order.
  kwargs = dict(kind="multiview", global_batch_size=16, seed=7, process_index=0, process_count=1)
  expected = _take(pipeline.train_iterator(cfg, **kwargs), 3)
  it = pipeline.train_iterator({**cfg, "worker_count": 2}, **kwargs)
  try:
    _assert_batches_equal(_take(it, 2), expected[:2])
    state = it.get_state()
  finally:
    it.close()
  resumed = pipeline.train_iterator({**cfg, "worker_count": 2}, **kwargs)
  try:
    resumed.set_state(state)
    _assert_batches_equal(_take(resumed, 1), expected[2:])
  finally:
    resumed.close()


@pytest.mark.parametrize("kind", ["image_text", "multiview", "image"])
def test_eval_batches_cover_split_exactly_once_with_padding_masks(cfg, kind):
  hosts = [
    pipeline.eval_batches(
      cfg, "test", kind=kind, batch_size=64, tokenizer=TOK, process_index=p, process_count=2
    )
    for p in range(2)
  ]
  batches = [list(h) for h in hosts]
  assert len(batches[0]) == len(batches[1]) == len(hosts[0]) == 3
  seen = []
  for host_batches in batches:
    for b in host_batches:
      assert b["mask"].dtype == np.bool_ and b["index"].shape == (64,)
      seen.extend(b["index"][b["mask"]].tolist())
  assert sorted(seen) == list(range(297))
  last = batches[0][-1]
  assert last["mask"].sum() == 149 - 128 and not last["mask"][-1]
  # Eval is deterministic: no random augmentation.
  again = list(
    pipeline.eval_batches(
      cfg, "test", kind=kind, batch_size=64, tokenizer=TOK, process_index=0, process_count=2
    )
  )
  _assert_batches_equal(again, batches[0])


# ---------------------------------------------------------------- bad records

_BAD = {3, 7}


class BcTestCorrupt(tfds.core.GeneratorBasedBuilder):
  """Ten tiny images; records 3 and 7 hold bytes that are not an image."""

  name = "bc_test_corrupt"
  VERSION = tfds.core.Version("1.0.0")
  code_path = epath.Path(__file__)

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      disable_shuffling=True,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
          "label": tfds.features.ClassLabel(num_classes=10),
          "caption": tfds.features.Text(),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(10):
      image = (
        b"definitely not a png"
        if i in _BAD
        else digits._png_bytes(np.full((12, 12, 3), 20 * i, np.uint8))
      )
      yield i, {"image": image, "label": i, "caption": f"image {i}"}


@pytest.fixture(scope="module")
def corrupt_cfg(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("corrupt")
  builder = BcTestCorrupt(data_dir=str(data_dir), file_format="array_record")
  builder.download_and_prepare()
  return {"name": builder.data_dir, "train_split": "train", "eval_split": "train", "image_size": 8}


def test_bad_image_records_are_skipped_and_counted(corrupt_cfg):
  it = pipeline.train_iterator(
    corrupt_cfg,
    kind="image_text",
    global_batch_size=4,
    seed=0,
    tokenizer=TOK,
    process_index=0,
    process_count=1,
  )
  batches = _take(it, 10)  # 40 good examples = 5 epochs of 8.
  indices = np.concatenate([b["index"] for b in batches])
  assert not set(indices.tolist()) & _BAD
  skipped = sum(int(b["skipped"].sum()) for b in batches)
  assert 8 <= skipped <= 10  # 2 per epoch; the last epoch's may trail the batch.


def test_chunk_size_and_threads_do_not_change_the_stream_or_the_skip_count(corrupt_cfg):
  def batches(**overrides):
    it = pipeline.train_iterator(
      {**corrupt_cfg, **overrides},
      kind="image_text",
      global_batch_size=4,
      seed=3,
      tokenizer=TOK,
      process_index=0,
      process_count=1,
    )
    return _take(it, 8)

  one = batches(read_chunk=1, read_threads=1)
  _assert_batches_equal(batches(read_chunk=4, read_threads=3), one)
  _assert_batches_equal(batches(read_chunk=2), one)
  # 32 good examples are 4 epochs of 8: 4 x 2 bad records read before them.
  assert sum(int(b["skipped"].sum()) for b in one) == 8


def _chunk(indices, bad_before, tail):
  """A chunk as the reader makes it: good rows with their ``skipped``, and a tail."""
  rows = (
    None
    if not indices
    else {"index": np.asarray(indices, np.int32), "skipped": np.asarray(bad_before, np.int32)}
  )
  return {"rows": rows, "tail_skipped": tail}


def test_rebatch_cuts_joins_counts_and_resumes_mid_chunk():
  chunks = [
    _chunk([0, 1, 2], [0, 0, 0], 0),  # a whole batch: passes through
    _chunk([3, 4], [1, 0], 2),  # 1 bad before 3, 2 bad after 4
    _chunk([], [], 4),  # all bad
    _chunk([5, 6, 7, 8], [0, 0, 3, 0], 1),
    _chunk([9, 10, 11, 12, 13], [0, 0, 0, 0, 0], 0),
  ]
  ds = sources.Rebatch(grain.MapDataset.source(chunks).to_iter_dataset(), batch_size=3)
  batches = list(ds)
  assert [b["index"].tolist() for b in batches] == [
    [0, 1, 2],
    [3, 4, 5],
    [6, 7, 8],
    [9, 10, 11],
  ]  # 12, 13: no full batch
  # Each bad record is counted once, on the next good example.
  assert [b["skipped"].tolist() for b in batches] == [[0, 0, 0], [1, 0, 6], [0, 3, 0], [1, 0, 0]]
  assert batches[0]["index"] is chunks[0]["rows"]["index"]  # no copy
  assert chunks[1]["rows"]["skipped"].tolist() == [1, 0]  # inputs untouched
  for k in range(4):  # Resume after every batch, including mid-chunk.
    it = iter(ds)
    _take(it, k)
    state = it.get_state()
    rest = [next(it) for _ in range(4 - k)]
    resumed = iter(ds)
    resumed.set_state(state)
    _assert_batches_equal([next(resumed) for _ in range(4 - k)], rest)
  grain.experimental.assert_equal_output_after_checkpoint(ds)


def test_rebatch_passes_a_whole_batch_chunk_through_after_bad_records():
  chunks = [_chunk([], [], 2), _chunk([0, 1, 2], [1, 0, 0], 0)]
  (batch,) = list(sources.Rebatch(grain.MapDataset.source(chunks).to_iter_dataset(), 3))
  assert batch["index"] is chunks[1]["rows"]["index"]  # no copy of the data
  assert batch["skipped"].tolist() == [3, 0, 0]
  assert chunks[1]["rows"]["skipped"].tolist() == [1, 0, 0]  # input untouched


def test_the_stream_reads_a_fresh_permutation_each_epoch_split_over_hosts(cfg):
  source, _ = sources.open_split(cfg["name"], "train", cfg["data_dir"])
  n = len(source)
  read = pipeline._ReadChunk(
    sources.PositionedSource(source),
    None,
    rows=1,
    process_index=0,
    process_count=1,
    shuffle_seed=9,
    augment_seed=0,
  )
  epochs = [[read.record_index(e * n + i) for i in range(n)] for e in range(2)]
  assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(n))
  assert epochs[0] != epochs[1]


def _shm_names():
  return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="POSIX shared memory in /dev/shm")
@pytest.mark.parametrize("read_chunk", [64, 2])
def test_workers_join_chunks_around_bad_records_and_leave_no_shared_memory(corrupt_cfg, read_chunk):
  # Bad records make short chunks, which each worker's Rebatch cuts and
  # joins (read_chunk 64 -> chunks of 4 = the batch; 2 -> half batches);
  # grain sends the batches through shared memory, all of it unlinked once
  # read. Record i is a flat image of value 20 * i, whatever the crop and flip.
  before = _shm_names()
  it = pipeline.train_iterator(
    {**corrupt_cfg, "worker_count": 2, "read_chunk": read_chunk},
    kind="image_text",
    global_batch_size=4,
    seed=3,
    tokenizer=TOK,
    process_index=0,
    process_count=1,
  )
  try:
    batches = _take(it, 6)
  finally:
    it.close()
  del it
  gc.collect()
  for batch in batches:
    np.testing.assert_array_equal(
      batch["image"],
      np.broadcast_to(20 * batch["index"][:, None, None, None], batch["image"].shape),
    )
  indices = set(np.concatenate([b["index"] for b in batches]).tolist())
  assert indices == set(range(10)) - _BAD
  assert sum(int(b["skipped"].sum()) for b in batches) >= 4  # 24 good = 3 epochs
  del batches, batch
  gc.collect()

  def left():  # grain unlinks received batches on a background thread
    return {n for n in _shm_names() - before if n.startswith("psm_")}

  deadline = time.monotonic() + 10
  while left() and time.monotonic() < deadline:
    time.sleep(0.1)
  assert not left()


def test_bad_image_records_are_masked_in_eval(corrupt_cfg):
  (batch,) = pipeline.eval_batches(
    corrupt_cfg, kind="multiview", batch_size=12, process_index=0, process_count=1
  )
  assert batch["mask"].tolist() == [i not in _BAD for i in range(10)] + [False, False]
  assert batch["skipped"].sum() == 2


def test_cached_records_give_the_same_stream_and_are_read_once(cfg):
  def stream(cache):
    it = pipeline.train_iterator(
      {**cfg, "cache_records": cache},
      kind="image_text",
      global_batch_size=512,
      seed=3,
      tokenizer=TOK,
      process_index=0,
      process_count=1,
    )
    return _take(it, 4)  # 2,048 examples: past the end of the 1,500-record split

  _assert_batches_equal(stream(False), stream(True))

  class Counting:
    def __init__(self, records):
      self.records, self.reads = records, 0

    def __len__(self):
      return len(self.records)

    def __getitem__(self, i):
      self.reads += 1
      return self.records[i]

  inner = Counting([{"image": b"png", "label": i} for i in range(3)])
  source = sources.PositionedSource(inner, cache=True)
  first = source[1]
  first["label"] = -1  # a caller's changes stay its own
  again = source[1]
  assert again == {"image": b"png", "label": 1, "position": 1} and inner.reads == 1
