"""report.png, the metric writers (TensorBoard read back without TensorFlow, W&B offline) and
the console scripts."""

import io
import json
import os
import pathlib
import sys
from contextlib import redirect_stdout

import numpy as np
import pytest

from big_contrast import cli, writers

REPO = pathlib.Path(__file__).resolve().parent.parent


def _fake_run(workdir: pathlib.Path, seed: int) -> None:
  """A finished run's files: metrics.jsonl (training rows, periodic evaluations), results.json."""
  rng = np.random.default_rng(seed)
  w = writers.MetricWriter(str(workdir), writers=())
  for step in range(50, 601, 50):
    w.write_scalars(
      step,
      {
        "loss": 5.0 * np.exp(-step / 300) + 0.1 * rng.random(),
        "lr": 2e-3 * min(1.0, step / 100),
        "temperature": 0.07 + 0.001 * step / 600,
        "grad_norm": 3.0 + rng.random(),
        "data/skipped": step // 200,
      },
    )
    if step % 200 == 0:
      w.write_scalars(step, {"eval/knn/knn/top1": 0.5 + step / 1500, "eval/knn/knn/top5": 0.9})
  w.close()
  results = {"step": 600, "probe/top1": 0.93, "probe_raw_pixels/top1": 0.902, "eval_seconds": 12.5}
  (workdir / "results.json").write_text(json.dumps(results))


def test_report_png_is_written_and_drawn(tmp_path):
  image = pytest.importorskip("matplotlib.image")
  for name, seed in (("a", 0), ("b", 1)):
    (tmp_path / name).mkdir()
    _fake_run(tmp_path / name, seed)
  with redirect_stdout(io.StringIO()):
    cli.run("report", [str(tmp_path / "a")])  # the console script's path
    cli.run("report", [str(tmp_path / "a"), str(tmp_path / "b"), f"--out={tmp_path}/both.png"])
  for png in (tmp_path / "a" / "report.png", tmp_path / "both.png"):
    pixels = image.imread(png)
    assert pixels.shape[0] > 800 and pixels.shape[1] > 1000, pixels.shape
    # Drawn, not blank: a fair share of the pixels is ink, and several colours appear.
    ink = (pixels[..., :3].min(axis=-1) < 0.9).mean()
    assert 0.02 < ink < 0.6, ink
    levels = np.rint(pixels[..., :3] * 10).astype(np.int64)  # each channel to 11 levels
    codes = (levels[..., 0] * 11 + levels[..., 1]) * 11 + levels[..., 2]
    assert np.count_nonzero(np.bincount(codes.ravel(), minlength=11**3)) > 10


def test_tensorboard_reads_our_event_files_without_tensorflow(tmp_path):
  accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
  w = writers.MetricWriter(str(tmp_path), writers=("tensorboard",))
  for step in (1, 2, 3):
    w.write_scalars(step, {"loss": 1.0 / step, "eval/knn/knn/top1": 0.1 * step})
  w.close()
  acc = accumulator.EventAccumulator(str(tmp_path / "tb"))
  acc.Reload()
  assert [(e.step, round(e.value, 6)) for e in acc.Scalars("loss")] == [
    (1, 1.0),
    (2, 0.5),
    (3, round(1 / 3, 6)),
  ]
  assert "eval/knn/knn/top1" in acc.Tags()["scalars"]
  assert "tensorflow" not in sys.modules


def test_wandb_writer_offline_keeps_one_run_per_workdir(tmp_path, monkeypatch):
  wandb = pytest.importorskip("wandb")
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_SILENT", "true")
  ids = []
  for start in (1, 3):  # a run, then its resumption in the same workdir
    w = writers.MetricWriter(str(tmp_path), writers=("wandb",), config={"seed_for_wandb": 0})
    ids.append(w._others[0]._run.id)
    for step in (start, start + 1):
      w.write_scalars(step, {"loss_for_wandb": 1.0 / 2**step})
    w.close()
  wandb.teardown()  # the W&B service writes the run's log before it exits
  assert ids[0] == ids[1] == (tmp_path / "wandb_run_id").read_text()
  logs = list((tmp_path / "wandb").glob(f"offline-run-*-{ids[0]}/run-{ids[0]}.wandb"))
  assert len(logs) == 2  # one log per session, both of the same run id
  data = b"".join(p.read_bytes() for p in logs)
  # The records hold the metric's name, every value (0.5, 0.25, 0.125, 0.0625), the config.
  for needle in (b"loss_for_wandb", b"0.5", b"0.25", b"0.125", b"0.0625", b"seed_for_wandb"):
    assert needle in data, needle
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]


def test_unknown_writer_is_an_error_naming_the_choices():
  with pytest.raises(ValueError, match="config.writers.*'tensorboard', 'wandb'"):
    writers.check_writers(["tensorbaord"])


def test_big_contrast_help_lists_every_console_script_in_one_line():
  out = io.StringIO()
  argv = sys.argv
  try:
    sys.argv = ["big_contrast", "--help"]
    with redirect_stdout(out):
      cli.main()
  finally:
    sys.argv = argv
  lines = out.getvalue().splitlines()
  setup = (REPO / "setup.py").read_text()
  for name, (target, _) in cli.COMMANDS.items():
    assert sum(line.split()[:1] == [name] for line in lines) == 1, name
    assert f'"{name}"' in setup  # a big_contrast-NAME console script
    assert callable(getattr(cli, name.replace("-", "_")))
    if target.endswith(".py"):
      assert os.path.isfile(REPO / "tools" / target), target
