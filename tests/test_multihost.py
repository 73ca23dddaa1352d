"""Two processes × 4 CPU devices over gloo train exactly like one process × 8 devices."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from xla_flags import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _cmd(workdir, data_dir):
  return [
    sys.executable,
    "-m",
    "big_contrast.train",
    "--config=configs/clip.py:digits",
    f"--workdir={workdir}",
    f"--config.data.data_dir={data_dir}",
    "--config.log_every=1",
    "--config.total_steps=4",
    "--config.ckpt_every=4",
    "--config.batch_size=32",
    "--config.model.image.width=32",
    "--config.model.image.depth=1",
    "--config.model.text.width=32",
    "--config.model.text.depth=1",
    "--config.eval.baselines=False",
    "--config.eval.at_end=('linear_probe',)",
  ]


def _env(devices, **extra):
  env = {k: v for k, v in os.environ.items() if not k.startswith("BIG_CONTRAST_")}
  env.update(
    JAX_PLATFORMS="cpu",
    PYTHONUNBUFFERED="1",
    XLA_FLAGS=xla_flags(devices),
    **extra,
  )
  return env


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return np.array([r["loss"] for r in rows if "loss" in r])


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path, data_dir):
  single = subprocess.run(
    _cmd(tmp_path / "single", data_dir),
    cwd=REPO,
    env=_env(8),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert single.returncode == 0, single.stderr[-3000:]

  port = _free_port()
  procs = [
    subprocess.Popen(
      _cmd(tmp_path / "multi", data_dir),
      cwd=REPO,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      env=_env(
        4,
        BIG_CONTRAST_COORDINATOR=f"127.0.0.1:{port}",
        BIG_CONTRAST_NUM_PROCESSES="2",
        BIG_CONTRAST_PROCESS_ID=str(i),
      ),
    )
    for i in range(2)
  ]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert "mesh {'data': 8, 'fsdp': 1}" in outs[0]

  np.testing.assert_allclose(_losses(tmp_path / "multi"), _losses(tmp_path / "single"), rtol=1e-4)
  multi = json.loads((tmp_path / "multi" / "results.json").read_text())
  one = json.loads((tmp_path / "single" / "results.json").read_text())
  assert multi["step"] == one["step"] == 4
  assert abs(multi["probe/top1"] - one["probe/top1"]) < 0.02
