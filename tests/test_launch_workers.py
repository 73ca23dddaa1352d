"""The environment the launch tools give each worker makes `jax.distributed` join them rightly.

Simulated on this machine: the generated per-worker command runs as 2 local
processes on CPU (gloo collectives, 127.0.0.1 coordinator), with a probe module
in place of the trainer that calls `launch.maybe_initialize_distributed()`
and prints what JAX reports. For Cloud TPU each process gets its own fake
metadata server; for SLURM, fake `srun`/`scontrol` set the task variables.
"""

import http.server
import os
import shlex
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from xla_flags import xla_flags

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import os, jax
from big_contrast import launch
launch.maybe_initialize_distributed()
fields = (os.environ.get("BIG_CONTRAST_COORDINATOR"), jax.process_index(), jax.process_count(),
          jax.device_count(), os.environ.get("CUDA_VISIBLE_DEVICES"))
# One write per line: the tasks share one stdout.
os.write(1, ("PROBE " + " ".join(map(str, fields)) + "\\n").encode())
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _probe_env(tmp_path: Path, **extra) -> dict[str, str]:
  """A clean CPU environment with 2 devices per process and the probe module importable."""
  (tmp_path / "probe_init.py").write_text(PROBE)
  env = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith(("BIG_CONTRAST_", "SLURM_", "TPU_", "CUDA_VISIBLE"))
  }
  env.update(
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=xla_flags(2),
    PYTHONPATH=str(tmp_path),
    **extra,
  )
  return env


def _probe_lines(text: str) -> list[list[str]]:
  return sorted(line.split()[1:] for line in text.splitlines() if line.startswith("PROBE"))


# ---------------------------------------------------------------- TPU VMs ---


class _Metadata(http.server.ThreadingHTTPServer):
  """The two GCE metadata attributes a TPU worker reads about itself."""

  def __init__(self, attributes: dict[str, str]):
    prefix = "/computeMetadata/v1/instance/attributes/"

    class Handler(http.server.BaseHTTPRequestHandler):
      def do_GET(self):
        key = self.path[len(prefix) :] if self.path.startswith(prefix) else None
        ok = key in attributes and self.headers.get("Metadata-Flavor") == "Google"
        body = attributes[key].encode() if ok else b"not found"
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(body)

      def log_message(self, *args):
        del args

    super().__init__(("127.0.0.1", 0), Handler)
    threading.Thread(target=self.serve_forever, daemon=True).start()


def _tpu_worker_command(port: int) -> str:
  """The --command of `tpu_vm.py train --dry-run`, with the probe in place of the trainer."""
  out = subprocess.run(
    [
      sys.executable,
      str(REPO / "tools/tpu_vm.py"),
      "train",
      "--name=bc",
      "--zone=z",
      f"--code_dir={REPO}",
      f"--python={sys.executable}",
      "--module=probe_init",
      f"--coordinator_port={port}",
      "--dry-run",
      "--",
      "--workdir=gs://b/run",
    ],
    capture_output=True,
    text=True,
    check=True,
  )
  (line,) = out.stdout.splitlines()
  command = shlex.split(line)[-1]
  assert command.startswith("--command=")
  return command[len("--command=") :]


def _run_tpu_workers(tmp_path: Path, endpoints: str, n: int, port: int):
  command = _tpu_worker_command(port)
  servers = [
    _Metadata({"agent-worker-number": str(i), "worker-network-endpoints": endpoints})
    for i in range(n)
  ]
  procs = []
  for i, server in enumerate(servers):
    home = tmp_path / f"worker{i}"
    home.mkdir()
    env = _probe_env(
      tmp_path, HOME=str(home), GCE_METADATA_IP=f"127.0.0.1:{server.server_address[1]}"
    )
    procs.append(
      subprocess.Popen(
        ["bash", "-c", command],
        env=env,
        cwd=home,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
      )
    )
  try:
    outs = [p.communicate(timeout=60)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
    for s in servers:
      s.shutdown()
  logs = [(tmp_path / f"worker{i}/big_contrast_logs/train.log").read_text() for i in range(n)]
  return [p.returncode for p in procs], outs, logs


@pytest.mark.parametrize(
  "endpoints",
  [
    "t1v-n-0:8470:127.0.0.1,t1v-n-1:8470:10.0.0.2",  # name:id:ip per worker
    "127.0.0.1,10.0.0.2",
  ],
)  # one hostname per worker
def test_tpu_multi_host_workers_join_one_distributed_run(tmp_path, endpoints):
  port = _free_port()
  rcs, outs, logs = _run_tpu_workers(tmp_path, endpoints, 2, port)
  assert rcs == [0, 0], outs + logs
  want = [[f"127.0.0.1:{port}", str(i), "2", "4", "None"] for i in range(2)]
  assert [_probe_lines(log) for log in logs] == [[want[0]], [want[1]]]
  # Worker 0's log streams back through ssh; the others' stay in their files.
  assert _probe_lines(outs[0]) == [want[0]] and _probe_lines(outs[1]) == []


def test_tpu_single_host_runs_without_distributed(tmp_path):
  rcs, outs, logs = _run_tpu_workers(tmp_path, "t1v-n-0:8470:127.0.0.1", 1, _free_port())
  assert rcs == [0], outs + logs
  assert _probe_lines(outs[0]) == [["None", "0", "1", "2", "None"]]


# ------------------------------------------------------------------ SLURM ---

_FAKE_SRUN = """#!{python}
# Starts $SLURM_NTASKS copies of the command, each with its task's variables.
import os, subprocess, sys
args = [a for a in sys.argv[1:]]
while args[0].startswith("--"):
  args.pop(0)
n, nodes = int(os.environ["SLURM_NTASKS"]), int(os.environ["SLURM_JOB_NUM_NODES"])
per_node = n // nodes
procs = [subprocess.Popen(args, env=dict(os.environ, SLURM_PROCID=str(i),
                                         SLURM_LOCALID=str(i % per_node),
                                         SLURM_NODEID=str(i // per_node)))
         for i in range(n)]
sys.exit(max(p.wait() for p in procs))
"""

_FAKE_SCONTROL = """#!/bin/sh
# `scontrol show hostnames LIST` for a plain comma-separated LIST.
[ "$1 $2" = "show hostnames" ] && echo "$3" | tr , '\\n'
"""


def _slurm_env(tmp_path: Path, *, ntasks: int, nodes: int, port: int, **extra) -> dict:
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  for name, text in (
    ("srun", _FAKE_SRUN.format(python=sys.executable)),
    ("scontrol", _FAKE_SCONTROL),
  ):
    (bin_dir / name).write_text(text)
    (bin_dir / name).chmod(stat.S_IRWXU)
  env = _probe_env(
    tmp_path,
    PATH=f"{bin_dir}:{os.environ['PATH']}",
    SLURM_JOB_ID="4242",
    SLURM_NTASKS=str(ntasks),
    SLURM_JOB_NUM_NODES=str(nodes),
    SLURM_JOB_NODELIST=",".join(["127.0.0.1", "node-b", "node-c"][:nodes]),
    SLURM_SUBMIT_DIR=str(REPO),
    PYTHON=sys.executable,
    BIG_CONTRAST_MODULE="probe_init",
    BIG_CONTRAST_COORDINATOR_PORT=str(port),
    **extra,
  )
  return env


def _sbatch(tmp_path, env, *trainer_args):
  return subprocess.run(
    ["bash", str(REPO / "tools/slurm_train.sbatch"), *trainer_args],
    env=env,
    cwd=tmp_path,
    capture_output=True,
    text=True,
    timeout=90,
  )


def test_slurm_one_process_per_node(tmp_path):
  port = _free_port()
  out = _sbatch(
    tmp_path, _slurm_env(tmp_path, ntasks=2, nodes=2, port=port), f"--workdir={tmp_path}/run"
  )
  assert out.returncode == 0, out.stdout + out.stderr
  # Each process keeps all of its node's GPUs (here: both CPU devices).
  assert _probe_lines(out.stdout) == [
    [f"127.0.0.1:{port}", str(i), "2", "4", "None"] for i in range(2)
  ]


def test_slurm_one_process_per_gpu_sees_only_its_gpu(tmp_path):
  port = _free_port()
  env = _slurm_env(tmp_path, ntasks=2, nodes=1, port=port, CUDA_VISIBLE_DEVICES="4,5")
  out = _sbatch(tmp_path, env, f"--workdir={tmp_path}/run")
  assert out.returncode == 0, out.stdout + out.stderr
  assert _probe_lines(out.stdout) == [
    [f"127.0.0.1:{port}", str(i), "2", "4", str(4 + i)] for i in range(2)
  ]


def test_slurm_finished_run_is_not_restarted(tmp_path):
  (tmp_path / "run").mkdir()
  (tmp_path / "run/results.json").write_text("{}")
  out = _sbatch(
    tmp_path,
    _slurm_env(tmp_path, ntasks=2, nodes=2, port=_free_port()),
    f"--workdir={tmp_path}/run",
  )
  assert out.returncode == 0 and "nothing to do" in out.stdout
  assert "PROBE" not in out.stdout
