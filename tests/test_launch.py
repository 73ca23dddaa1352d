"""Launch tools: the exact gcloud / sbatch lines of --dry-run, and the restart wrapper."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import run_until_done  # noqa: E402
import slurm_launch  # noqa: E402
import tpu_vm  # noqa: E402

TRAIN_ARGS = ["--config=configs/clip.py:vit_b16", "--workdir=gs://my-bucket/runs/clip_b16"]


def _dry_run(tool: str, *args: str) -> list[str]:
  out = subprocess.run(
    [sys.executable, str(REPO / "tools" / tool), *args], capture_output=True, text=True, check=True
  )
  return out.stdout.splitlines()


# ------------------------------------------------------------------ TPU VMs ---


def test_create_single_host_v5e_8_spot():
  assert _dry_run(
    "tpu_vm.py",
    "create",
    "--name=bc",
    "--zone=us-west4-a",
    "--accelerator=v5e-8",
    "--spot",
    "--dry-run",
  ) == [
    "gcloud compute tpus tpu-vm create bc --zone=us-west4-a --accelerator-type=v5litepod-8 "
    "--version=v2-alpha-tpuv5-lite --spot"
  ]


def test_create_single_host_v4_8_preemptible_with_project():
  assert _dry_run(
    "tpu_vm.py",
    "create",
    "--name=bc",
    "--zone=us-central2-b",
    "--project=my-proj",
    "--accelerator=v4-8",
    "--preemptible",
    "--dry-run",
  ) == [
    "gcloud compute tpus tpu-vm create bc --zone=us-central2-b --project=my-proj "
    "--accelerator-type=v4-8 --version=tpu-ubuntu2204-base --preemptible"
  ]


@pytest.mark.parametrize(
  "accel,gcloud_type,version",
  [("v4-32", "v4-32", "tpu-ubuntu2204-base"), ("v5e-32", "v5litepod-32", "v2-alpha-tpuv5-lite")],
)
def test_create_multi_host_queued_spot(accel, gcloud_type, version):
  assert _dry_run(
    "tpu_vm.py",
    "create",
    "--name=bc",
    "--zone=z1",
    f"--accelerator={accel}",
    "--queued",
    "--spot",
    "--dry-run",
  ) == [
    f"gcloud compute tpus queued-resources create bc --node-id=bc --zone=z1 "
    f"--accelerator-type={gcloud_type} --runtime-version={version} --spot"
  ]


def test_queued_preemptible_is_refused():
  out = subprocess.run(
    [
      sys.executable,
      str(REPO / "tools/tpu_vm.py"),
      "create",
      "--name=bc",
      "--zone=z",
      "--accelerator=v4-32",
      "--queued",
      "--preemptible",
      "--dry-run",
    ],
    capture_output=True,
    text=True,
  )
  assert out.returncode != 0 and "use --spot" in out.stderr


def test_up_queued_creates_waits_then_sets_up():
  lines = _dry_run(
    "tpu_vm.py",
    "up",
    "--name=bc",
    "--zone=z1",
    "--accelerator=v5e-32",
    "--queued",
    "--spot",
    "--dry-run",
  )
  assert lines == [
    "gcloud compute tpus queued-resources create bc --node-id=bc --zone=z1 "
    "--accelerator-type=v5litepod-32 --runtime-version=v2-alpha-tpuv5-lite --spot",
    "gcloud compute tpus queued-resources describe bc --zone=z1 '--format=value(state.state)'",
    *_dry_run("tpu_vm.py", "setup", "--name=bc", "--zone=z1", "--dry-run"),
  ]


def test_setup_packs_copies_and_installs_on_all_workers():
  assert _dry_run("tpu_vm.py", "setup", "--name=bc", "--zone=z1", "--dry-run") == [
    "tar -czf /tmp/big_contrast_code.tar.gz --exclude=.git --exclude=.venv --exclude=venv "
    "--exclude=workdir --exclude=__pycache__ '--exclude=*.egg-info' --exclude=.pytest_cache "
    f"-C {REPO} .",
    "gcloud compute tpus tpu-vm scp /tmp/big_contrast_code.tar.gz bc:big_contrast_code.tar.gz "
    "--zone=z1 --worker=all",
    "gcloud compute tpus tpu-vm ssh bc --zone=z1 --worker=all '--command=set -e; "
    "rm -rf big_contrast; mkdir -p big_contrast; tar -xzf big_contrast_code.tar.gz "
    "-C big_contrast; python3 -m pip install -q -U pip; python3 -m pip install -q -e "
    "./big_contrast '\"'\"'jax[tpu]'\"'\"''",
  ]


def test_train_runs_one_command_on_all_workers_with_distributed_env():
  lines = _dry_run(
    "tpu_vm.py",
    "train",
    "--name=bc",
    "--zone=z1",
    "--dry-run",
    "--",
    *TRAIN_ARGS,
    "--config.batch_size=4096",
  )
  assert len(lines) == 1
  cmd = shlex.split(lines[0])
  assert cmd[:8] == [
    "gcloud",
    "compute",
    "tpus",
    "tpu-vm",
    "ssh",
    "bc",
    "--zone=z1",
    "--worker=all",
  ]
  assert cmd[8] == "--command=" + "; ".join(
    [
      "cd big_contrast || exit 1",
      "mkdir -p $HOME/big_contrast_logs",
      "MD=http://${GCE_METADATA_IP:-metadata.google.internal}/computeMetadata/v1/instance/"
      "attributes",
      "WORKER=$(curl -sf -H 'Metadata-Flavor: Google' \"$MD/agent-worker-number\") || exit 1",
      "HOSTS=$(curl -sf -H 'Metadata-Flavor: Google' \"$MD/worker-network-endpoints\") || exit 1",
      "N=$(echo \"$HOSTS\" | tr ',' '\\n' | grep -c .)",
      'if [ "$N" -gt 1 ]; then export BIG_CONTRAST_PROCESS_ID="$WORKER" '
      'BIG_CONTRAST_NUM_PROCESSES="$N" BIG_CONTRAST_COORDINATOR="$(echo "$HOSTS" | '
      "cut -d, -f1 | awk -F: '{print $NF}'):8476\"; fi",
      "if [ -f $HOME/big_contrast_logs/train.pid ] && kill -0 "
      '"$(cat $HOME/big_contrast_logs/train.pid)" 2>/dev/null; then '
      "PID=$(cat $HOME/big_contrast_logs/train.pid); STARTED=0; "
      'echo "worker $WORKER: a run is alive (pid $PID); following it"; '
      "else : > $HOME/big_contrast_logs/train.log; nohup python3 -m big_contrast.train "
      "--config=configs/clip.py:vit_b16 --workdir=gs://my-bucket/runs/clip_b16 "
      "--config.batch_size=4096 >> $HOME/big_contrast_logs/train.log 2>&1 < /dev/null & "
      'PID=$!; STARTED=1; echo "$PID" > $HOME/big_contrast_logs/train.pid; fi',
      'if [ "$WORKER" = 0 ]; then tail -n +1 -f --pid="$PID" $HOME/big_contrast_logs/train.log; fi',
      'if [ "$STARTED" = 1 ]; then wait "$PID"; else tail --pid="$PID" -f /dev/null; fi',
    ]
  )


def test_train_detached_does_not_follow():
  (line,) = _dry_run(
    "tpu_vm.py", "train", "--name=bc", "--zone=z1", "--detach", "--dry-run", "--", *TRAIN_ARGS
  )
  assert "nohup python3 -m big_contrast.train" in line
  assert "tail" not in line and "wait" not in line


def test_train_quotes_trainer_args_and_passes_env():
  (line,) = _dry_run(
    "tpu_vm.py",
    "train",
    "--name=bc",
    "--zone=z1",
    "--env=A=x y",
    "--dry-run",
    "--",
    *TRAIN_ARGS,
    "--config.loss.name=clip it",
  )
  command = shlex.split(line)[-1]
  assert "export 'A=x y'; " in command
  assert "'--config.loss.name=clip it'" in command


def test_logs_stop_delete():
  assert _dry_run("tpu_vm.py", "logs", "--name=bc", "--zone=z1", "--worker=3", "--dry-run") == [
    "gcloud compute tpus tpu-vm ssh bc --zone=z1 --worker=3 "
    "'--command=tail -n 100 -F $HOME/big_contrast_logs/train.log'"
  ]
  (stop,) = _dry_run("tpu_vm.py", "stop", "--name=bc", "--zone=z1", "--dry-run")
  assert stop.startswith("gcloud compute tpus tpu-vm ssh bc --zone=z1 --worker=all '--command=")
  assert 'kill -TERM "$(cat $HOME/big_contrast_logs/train.pid)"' in stop
  assert _dry_run("tpu_vm.py", "delete", "--name=bc", "--zone=z1", "--dry-run") == [
    "gcloud compute tpus tpu-vm delete bc --zone=z1 --quiet"
  ]
  assert _dry_run("tpu_vm.py", "delete", "--name=bc", "--zone=z1", "--queued", "--dry-run") == [
    "gcloud compute tpus queued-resources delete bc --zone=z1 --force --quiet"
  ]


def test_train_needs_a_workdir():
  out = subprocess.run(
    [
      sys.executable,
      str(REPO / "tools/tpu_vm.py"),
      "train",
      "--name=bc",
      "--zone=z",
      "--dry-run",
      "--",
      "--config=configs/clip.py:digits",
    ],
    capture_output=True,
    text=True,
  )
  assert out.returncode != 0 and "--workdir=gs://" in out.stderr


# -------------------------------------------------------------------- SLURM ---


def test_sbatch_one_node_one_process_per_gpu():
  assert _dry_run(
    "slurm_launch.py",
    "--nodes=1",
    "--gpus_per_node=8",
    "--dry-run",
    "--",
    "--config=configs/clip.py:digits",
    "--workdir=/shared/runs/a",
  ) == [
    "sbatch --job-name=big_contrast --nodes=1 --ntasks-per-node=8 --gpus-per-node=8 "
    f"--time=24:00:00 {REPO}/tools/slurm_train.sbatch --config=configs/clip.py:digits "
    "--workdir=/shared/runs/a"
  ]


def test_sbatch_four_nodes_one_process_per_node():
  assert _dry_run(
    "slurm_launch.py",
    "--nodes=4",
    "--gpus_per_node=8",
    "--per=node",
    "--partition=gpu",
    "--account=lab",
    "--time=4:00:00",
    "--dry-run",
    "--",
    "--config=configs/clip.py:vit_b16",
    "--workdir=/shared/runs/b",
    "--config.batch_size=8192",
  ) == [
    "sbatch --job-name=big_contrast --nodes=4 --ntasks-per-node=1 --gpus-per-node=8 "
    "--time=4:00:00 --partition=gpu --account=lab "
    f"{REPO}/tools/slurm_train.sbatch --config=configs/clip.py:vit_b16 "
    "--workdir=/shared/runs/b --config.batch_size=8192"
  ]


def test_sbatch_script_defaults_match_the_launcher():
  text = (REPO / "tools/slurm_train.sbatch").read_text()
  for line in (
    "#SBATCH --ntasks-per-node=8",
    "#SBATCH --gpus-per-node=8",
    "#SBATCH --signal=TERM@600",
    "#SBATCH --requeue",
  ):
    assert line in text
  assert slurm_launch.SCRIPT == REPO / "tools/slurm_train.sbatch"


# ----------------------------------------------------------- run_until_done ---

_FAKE_RUN = r"""
import json, os, sys
workdir, finish_on = sys.argv[1], int(sys.argv[2])
os.makedirs(os.path.join(workdir, "checkpoints"), exist_ok=True)
attempt = len(os.listdir(os.path.join(workdir, "checkpoints"))) + 1
os.makedirs(os.path.join(workdir, "checkpoints", str(100 * attempt)))
if attempt >= finish_on:
  json.dump({"ok": 1}, open(os.path.join(workdir, "results.json"), "w"))
sys.exit(0 if attempt % 2 else 3)   # preempted cleanly, or killed
"""


def _wrapper(tmp_path, *extra, finish_on=3):
  workdir = tmp_path / "run"
  return subprocess.run(
    [
      sys.executable,
      str(REPO / "tools/run_until_done.py"),
      f"--workdir={workdir}",
      "--backoff_s=0",
      *extra,
      "--",
      sys.executable,
      "-c",
      _FAKE_RUN,
      str(workdir),
      str(finish_on),
    ],
    capture_output=True,
    text=True,
    timeout=60,
  )


def test_run_until_done_restarts_until_results_exist(tmp_path):
  out = _wrapper(tmp_path, finish_on=3)
  assert out.returncode == 0, out.stderr
  assert out.stderr.count("] attempt ") == 3
  assert json.loads((tmp_path / "run/results.json").read_text()) == {"ok": 1}
  again = _wrapper(tmp_path)  # a finished run is not started again
  assert again.returncode == 0 and "] attempt" not in again.stderr


def test_run_until_done_respects_max_restarts(tmp_path):
  out = _wrapper(tmp_path, "--max_restarts=1", finish_on=10)
  assert out.returncode == 1
  assert out.stderr.count("] attempt ") == 2 and "giving up" in out.stderr


def test_run_until_done_total_steps_counts_as_done(tmp_path):
  out = _wrapper(tmp_path, "--total_steps=200", finish_on=10)
  assert out.returncode == 0 and out.stderr.count("] attempt ") == 2


def test_run_until_done_gives_up_on_failures_without_progress(tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      str(REPO / "tools/run_until_done.py"),
      f"--workdir={tmp_path}",
      "--backoff_s=0",
      "--max_stalled=2",
      "--",
      sys.executable,
      "-c",
      "raise SystemExit(3)",
    ],
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert out.returncode == 1
  assert out.stderr.count("] attempt ") == 2 and "without a newer checkpoint" in out.stderr


def test_run_until_done_does_not_restart_after_a_user_error(tmp_path):
  # Exit status 2: the trainer rejected its config or data, or the workdir is in use.
  out = subprocess.run(
    [
      sys.executable,
      str(REPO / "tools/run_until_done.py"),
      f"--workdir={tmp_path}",
      "--backoff_s=0",
    ]
    + ["--", sys.executable, "-c", "raise SystemExit(2)"],
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert out.returncode == 1
  assert out.stderr.count("] attempt ") == 1 and "not restarting" in out.stderr


def test_latest_checkpoint_step_ignores_unfinished_saves(tmp_path):
  for name in ("200", "400", "600.orbax-checkpoint-tmp-1"):
    os.makedirs(tmp_path / "checkpoints" / name)
  assert run_until_done.latest_checkpoint_step(str(tmp_path)) == 400
  assert run_until_done.latest_checkpoint_step(str(tmp_path / "nothing")) is None


def test_accelerator_names():
  assert tpu_vm.accelerator_type("v5e-32") == "v5litepod-32"
  assert tpu_vm.default_runtime("v6e-8") == "v2-alpha-tpuv6e"
  with pytest.raises(SystemExit, match="v4-8"):
    tpu_vm.accelerator_type("tpu-8")
