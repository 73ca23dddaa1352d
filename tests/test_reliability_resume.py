"""A run always finishes: two writers on one workdir, a corrupt periodic checkpoint, the debris
of a crash (an unfinished save, a stale lock), an evaluator that cannot run on the data.

One reference run, 60 steps with a checkpoint every 20, meets a second run started on its
workdir (the reference is paused with SIGSTOP meanwhile, so it surely holds the lock). Then
its workdir is made to look like a crash after step 40, with that checkpoint damaged: step 60
gone, a data file of step 40 cut in half, an unfinished save of step 50 and the lock of a
dead process left behind. `tools/run_until_done.py` re-runs the trainer on it, which must
finish with parameters bitwise equal to the reference's.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from big_contrast.models import pretrained

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests import reliability_support as support

pytestmark = pytest.mark.slow

# The reference also meets evaluators that cannot run as configured on its data: a probe
# split of three examples leaves the probe's held-out part empty (skipped), and is smaller
# than kNN's k=20 (kNN votes over all three).
EVALS = (
  "--config.eval.at_end=('linear_probe','knn','diagnostics')",
  "--config.eval.probe_split=train[:3]",
)


def _tree(workdir) -> dict[str, tuple[int, int]]:
  """path -> (size, mtime in ns) of every file under `workdir`."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      st = os.stat(os.path.join(root, name))
      out[os.path.relpath(os.path.join(root, name), workdir)] = (st.st_size, st.st_mtime_ns)
  return out


def _dead_pid() -> int:
  proc = subprocess.Popen(["true"])
  proc.wait()
  return proc.pid


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
  data_dir = support.digits_dir(data_dir)
  env = support.env(tmp_path_factory)
  workdir = tmp_path_factory.mktemp("run")
  cmd = support.train_cmd(workdir, data_dir, *EVALS)
  first = subprocess.Popen(
    cmd, cwd=support.REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
  lines, second, before, after, second_s = [], None, None, None, None
  for line in first.stdout:
    lines.append(line)
    if second is None and line.startswith("Initialised a new run"):
      first.send_signal(signal.SIGSTOP)  # it holds the lock, and can do nothing else now
      before = _tree(workdir)
      t0 = time.monotonic()
      second = subprocess.run(
        cmd, cwd=support.REPO, env=env, capture_output=True, text=True, timeout=300
      )
      second_s = time.monotonic() - t0
      after = _tree(workdir)
      first.send_signal(signal.SIGCONT)
  first.wait(timeout=600)
  results = json.loads((workdir / "results.json").read_text())
  reference = pretrained.read_checkpoint(str(workdir), step=support.STEPS)
  steps = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())

  # A crash after step 40, which left its checkpoint damaged.
  ckpts = workdir / "checkpoints"
  shutil.rmtree(ckpts / str(support.STEPS))
  (workdir / "results.json").unlink()
  shutil.copytree(ckpts / "20", ckpts / "50.orbax-checkpoint-tmp-1764000000")
  largest = max(
    glob.glob(str(ckpts / "40" / "state" / "ocdbt.process_*" / "d" / "*")), key=os.path.getsize
  )
  os.truncate(largest, os.path.getsize(largest) // 2)
  dead = _dead_pid()
  (workdir / "lock.json").write_text(
    json.dumps({"host": socket.gethostname(), "pid": dead, "since": "2026-01-01T00:00:00+00:00"})
  )
  t0 = time.monotonic()
  rerun = subprocess.run(
    [sys.executable, "tools/run_until_done.py", f"--workdir={workdir}", "--backoff_s=0", "--"]
    + cmd,
    cwd=support.REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  return dict(
    workdir=workdir,
    first=first,
    first_out="".join(lines),
    second=second,
    second_s=second_s,
    tree_before=before,
    tree_after=after,
    results=results,
    reference=reference,
    reference_steps=steps,
    truncated=os.path.relpath(largest, ckpts),
    dead_pid=dead,
    rerun=rerun,
    rerun_s=time.monotonic() - t0,
  )


def test_a_second_run_on_a_busy_workdir_stops_at_once_naming_the_holder(runs):
  second = runs["second"]
  assert second is not None, runs["first_out"][-2000:]
  assert second.returncode == 2, second.stderr[-2000:]
  errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, second.stderr[-2000:]
  assert f"host {socket.gethostname()}, pid {runs['first'].pid}" in errors[0]
  assert "since 20" in errors[0]  # an ISO date
  assert "Traceback" not in second.stderr
  # It stopped before building anything: no state, no compilation, no file touched.
  assert "Initialised" not in second.stdout and "train step" not in second.stdout
  assert runs["tree_after"] == runs["tree_before"]
  assert runs["second_s"] < 120, runs["second_s"]


def test_the_first_run_finishes_untouched(runs):
  assert runs["first"].returncode == 0, runs["first_out"][-3000:]
  assert runs["reference_steps"] == [20, 40, 60]
  assert runs["results"]["step"] == support.STEPS


def test_evaluators_that_cannot_run_as_configured_adapt_or_are_recorded_as_skipped(runs):
  results = runs["results"]
  assert "held-out split is empty" in results["skipped"]["linear_probe"]
  assert "diagnostics/effective_rank" in results
  assert not any(k.startswith("probe/") for k in results)
  assert results["knn/k"] == 3 and 0 <= results["knn/top1"] <= 1
  assert "kNN: config.eval.knn_k=20 but 'train[:3]' has 3 points" in runs["first_out"]
  assert "WARNING: evaluator 'linear_probe' skipped" in runs["first_out"]


def test_a_corrupt_periodic_checkpoint_resumes_to_bitwise_equal_parameters(runs):
  rerun, workdir = runs["rerun"], runs["workdir"]
  assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-4000:]
  assert "Resumed from the checkpoint at step 20" in rerun.stdout
  assert rerun.stderr.count("[run_until_done] attempt") == 1
  resumed = pretrained.read_checkpoint(str(workdir), step=support.STEPS)
  assert sorted(resumed) == sorted(runs["reference"])
  for name, value in runs["reference"].items():
    np.testing.assert_array_equal(resumed[name], value, err_msg=name)
  assert sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()) == [20, 40, 60]


def test_the_unreadable_checkpoint_is_named_and_moved_aside_not_deleted(runs):
  out, workdir = runs["rerun"].stdout, runs["workdir"]
  warning = next(line for line in out.splitlines() if "checkpoint step 40" in line)
  assert runs["truncated"] in warning and "truncated" in warning
  corrupt = os.listdir(workdir / "checkpoints" / "corrupt")
  (step40,) = [d for d in corrupt if d.startswith("40-")]
  moved = workdir / "checkpoints" / "corrupt" / step40 / os.path.relpath(runs["truncated"], "40")
  assert moved.exists()
  assert any(d.startswith("50-") and d.endswith("-unfinished") for d in corrupt)
  assert "50.orbax-checkpoint-tmp-1764000000 was left by a save of step 50" in out


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(runs):
  out = runs["rerun"].stdout
  assert f"taking over the stale lock {runs['workdir'] / 'lock.json'}" in out
  assert f"pid {runs['dead_pid']} is not running" in out
  assert not (runs["workdir"] / "lock.json").exists()  # released at the end
