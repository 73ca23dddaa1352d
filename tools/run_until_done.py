r"""Re-runs a training command until its run has finished: for spot / preemptible capacity.

  python tools/run_until_done.py --workdir=DIR [--max_restarts=20 --backoff_s=30] -- \
      python -m big_contrast.train --config=configs/clip.py:digits --workdir=DIR

  # A Cloud TPU slice that may be preempted: recreate it between attempts.
  python tools/run_until_done.py --workdir=gs://B/runs/clip --before_retry='python \
      tools/tpu_vm.py delete --name=bc --zone=Z --queued; python tools/tpu_vm.py up \
      --name=bc --zone=Z --accelerator=v5e-32 --queued --spot' -- \
      python tools/tpu_vm.py train --name=bc --zone=Z -- --config=... --workdir=gs://B/runs/clip

The run has finished when DIR/results.json exists (the trainer writes it after
the final evaluation), or, with --total_steps=N, when a checkpoint of step >= N
exists. Any other end of the command, a clean exit after a preemption (the
trainer saves and exits 0 on SIGTERM) or a crash, starts another attempt after
a pause that doubles with each attempt that made no progress (no newer
checkpoint), up to --max_backoff_s. It gives up after --max_restarts restarts,
or after --max_stalled attempts in a row that failed without progress, and at
once when the trainer exits 2: a config or data error, or a workdir in use by
another run, which no restart changes. SIGTERM/SIGINT sent to this
wrapper go to the command, and the wrapper then stops.

gs:// workdirs are inspected with `gcloud storage ls`. Exit status: 0 when the
run finished, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time

# The trainer's exit status for a user's mistake (big_contrast.launch): never retried.
USER_ERROR = 2


def _gcs_ls(path: str) -> list[str] | None:
  out = subprocess.run(["gcloud", "storage", "ls", path], capture_output=True, text=True)
  return out.stdout.split() if out.returncode == 0 else None


def finished_marker_exists(workdir: str) -> bool:
  path = workdir.rstrip("/") + "/results.json"
  if workdir.startswith("gs://"):
    return _gcs_ls(path) is not None
  return os.path.exists(path)


def latest_checkpoint_step(workdir: str) -> int | None:
  """The newest finished checkpoint step under WORKDIR/checkpoints (Orbax: one dir per step)."""
  ckpt_dir = workdir.rstrip("/") + "/checkpoints"
  if workdir.startswith("gs://"):
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in (_gcs_ls(ckpt_dir + "/") or [])]
  elif os.path.isdir(ckpt_dir):
    names = os.listdir(ckpt_dir)
  else:
    names = []
  # In-progress saves are written under a temporary name and renamed when complete.
  steps = [int(n) for n in names if re.fullmatch(r"\d+", n)]
  return max(steps) if steps else None


def is_done(workdir: str, total_steps: int | None) -> bool:
  if finished_marker_exists(workdir):
    return True
  if total_steps is not None:
    step = latest_checkpoint_step(workdir)
    return step is not None and step >= total_steps
  return False


class _Forwarder:
  """Passes SIGTERM/SIGINT on to the running command and remembers that we were asked to stop."""

  def __init__(self):
    self.proc: subprocess.Popen | None = None
    self.stop = False
    for sig in (signal.SIGTERM, signal.SIGINT):
      signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    self.stop = True
    if self.proc is not None and self.proc.poll() is None:
      self.proc.send_signal(signum)


def run_until_done(
  command: list[str],
  workdir: str,
  *,
  max_restarts: int = 20,
  backoff_s: float = 30.0,
  max_backoff_s: float = 600.0,
  max_stalled: int = 3,
  total_steps: int | None = None,
  before_retry: str | None = None,
  log=print,
) -> bool:
  """Runs `command` until the run in `workdir` is done; returns whether it is."""
  forward = _Forwarder()
  stalled = 0
  attempt = 0
  while True:
    if is_done(workdir, total_steps):
      log(f"[run_until_done] {workdir}: finished")
      return True
    if attempt > max_restarts:
      log(f"[run_until_done] giving up: {max_restarts} restarts and the run has not finished")
      return False
    if attempt and before_retry:
      log(f"[run_until_done] before retry: {before_retry}")
      subprocess.call(before_retry, shell=True)
    before = latest_checkpoint_step(workdir)
    log(f"[run_until_done] attempt {attempt + 1} (checkpoint step {before}): {shlex.join(command)}")
    forward.proc = subprocess.Popen(command)
    rc = forward.proc.wait()
    forward.proc = None
    if forward.stop:
      log("[run_until_done] stopped by a signal; not restarting")
      return is_done(workdir, total_steps)
    if rc == USER_ERROR:
      log(
        f"[run_until_done] exit status {rc}: the trainer rejected its input (config, data, "
        "or a workdir in use by another run), which a restart would not change; not restarting"
      )
      return is_done(workdir, total_steps)
    after = latest_checkpoint_step(workdir)
    progressed = after is not None and (before is None or after > before)
    stalled = 0 if progressed or rc == 0 else stalled + 1
    if stalled >= max_stalled:
      log(
        f"[run_until_done] giving up: {stalled} attempts in a row failed (last exit status "
        f"{rc}) without a newer checkpoint; the error above is not a preemption"
      )
      return is_done(workdir, total_steps)
    attempt += 1
    if is_done(workdir, total_steps):
      continue
    pause = backoff_s if progressed else min(backoff_s * 2**stalled, max_backoff_s)
    log(
      f"[run_until_done] exit status {rc}, checkpoint step {before} -> {after}; "
      f"restarting in {pause:.0f} s"
    )
    time.sleep(pause)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  if "--" not in argv:
    raise SystemExit("usage: run_until_done.py --workdir=DIR [options] -- COMMAND ...")
  i = argv.index("--")
  argv, command = argv[:i], argv[i + 1 :]
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True, help="the run's --workdir (local or gs://)")
  p.add_argument("--max_restarts", type=int, default=20)
  p.add_argument("--backoff_s", type=float, default=30.0)
  p.add_argument("--max_backoff_s", type=float, default=600.0)
  p.add_argument(
    "--max_stalled",
    type=int,
    default=3,
    help="give up after this many failed attempts in a row without progress",
  )
  p.add_argument(
    "--total_steps", type=int, default=None, help="also done when a checkpoint at this step exists"
  )
  p.add_argument("--before_retry", default=None, help="shell command run before each retry")
  args = p.parse_args(argv)
  if not command:
    raise SystemExit("no command after --")
  done = run_until_done(
    command,
    args.workdir,
    max_restarts=args.max_restarts,
    backoff_s=args.backoff_s,
    max_backoff_s=args.max_backoff_s,
    max_stalled=args.max_stalled,
    total_steps=args.total_steps,
    before_retry=args.before_retry,
    log=lambda m: print(m, file=sys.stderr, flush=True),
  )
  return 0 if done else 1


if __name__ == "__main__":
  sys.exit(main())
