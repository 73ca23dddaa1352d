"""glibc malloc tuning for the input pipeline: freed temporaries are reused, not faulted in."""

import platform
import subprocess
import sys

import pytest

from big_contrast import data
from big_contrast.data import pipeline

# A chunk buffer above 32 MB is freed (glibc does not raise its thresholds for
# it), then each step makes three 600 KB float32 arrays, as colour jitter does.
_PROBE = """
import resource, sys
import numpy as np
from big_contrast.data.allocator import tune_malloc
if sys.argv[1] == "tuned":
    assert tune_malloc()
big = np.ones(64 << 20, np.uint8)
del big
def step():
    a = np.ones((224, 224, 3), np.float32)
    b = a * 2.0
    return float((b + a)[0, 0, 0])
for _ in range(20):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 200)
"""


def _faults_per_step(mode: str) -> float:
  out = subprocess.run(
    [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True, timeout=120
  )
  return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="needs glibc's mallopt")
def test_tuned_malloc_reuses_freed_temporaries_instead_of_faulting_them_in():
  plain, tuned = _faults_per_step("plain"), _faults_per_step("tuned")
  assert tuned < 5 and tuned < plain, (plain, tuned)


@pytest.mark.parametrize("setting", [True, False])
def test_the_pipeline_tunes_malloc_in_process_only_when_configured(monkeypatch, setting, data_dir):
  calls = []
  monkeypatch.setattr(pipeline, "tune_malloc", lambda: calls.append(1) or True)
  data.ensure_built("bc_digits", data_dir)
  pipeline.train_dataset(
    {"name": "bc_digits", "data_dir": data_dir, "tune_malloc": setting},
    kind="multiview",
    global_batch_size=8,
    seed=0,
    process_index=0,
    process_count=1,
  )
  assert calls == ([1] if setting else [])
