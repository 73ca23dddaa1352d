r"""Runs big_contrast on a Cloud TPU VM slice (one host or many) through `gcloud`.

  python tools/tpu_vm.py create --name=bc --zone=us-central2-b --accelerator=v4-32 \
      [--queued] [--spot]
  python tools/tpu_vm.py setup  --name=bc --zone=us-central2-b
  python tools/tpu_vm.py train  --name=bc --zone=us-central2-b -- \
      --config=configs/clip.py:vit_b16 --workdir=gs://BUCKET/runs/clip_b16
  python tools/tpu_vm.py logs | stop | delete --name=bc --zone=us-central2-b

Every subcommand takes --dry-run: it prints each command it would run, one per
line, shell-quoted exactly as it would run them, and runs nothing.

`train` starts the same command on every worker at once (`--worker=all`). Each
worker asks its metadata server for its worker number and the slice's worker
list, and on a multi-host slice exports BIG_CONTRAST_COORDINATOR (worker 0,
port --coordinator_port), BIG_CONTRAST_NUM_PROCESSES and
BIG_CONTRAST_PROCESS_ID, which `launch.maybe_initialize_distributed()`
passes to `jax.distributed.initialize`. The trainer runs under nohup with its
output in ~/big_contrast_logs/RUN.log on each worker; worker 0's log is streamed
back until the run ends (or, with --detach, not at all). Re-running `train`
while a run is alive follows it instead of starting a second one.

The workdir must be on GCS (gs://...) for a multi-host slice: Orbax writes one
checkpoint from all hosts and every host reads it back on resume.
This tool knows nothing about the trainer beyond its module name and flags.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Software image per TPU generation (`gcloud compute tpus versions list`).
RUNTIME_VERSIONS = {
  "v2": "tpu-ubuntu2204-base",
  "v3": "tpu-ubuntu2204-base",
  "v4": "tpu-ubuntu2204-base",
  "v5litepod": "v2-alpha-tpuv5-lite",
  "v5p": "v2-alpha-tpuv5",
  "v6e": "v2-alpha-tpuv6e",
}
# Files the workers do not need: version control, environments, local runs.
TAR_EXCLUDES = (".git", ".venv", "venv", "workdir", "__pycache__", "*.egg-info", ".pytest_cache")
CODE_TARBALL = "big_contrast_code.tar.gz"
METADATA = (
  "http://${GCE_METADATA_IP:-metadata.google.internal}/computeMetadata/v1/instance/attributes"
)


def accelerator_type(name: str) -> str:
  """gcloud's accelerator type; 'v5e-N' is accepted for gcloud's 'v5litepod-N'."""
  m = re.fullmatch(r"(v2|v3|v4|v5e|v5litepod|v5p|v6e)-(\d+)", name)
  if not m:
    raise SystemExit(
      f"--accelerator={name!r}: expected e.g. v4-8, v4-32, v5e-8 (v5litepod-8), v5p-8, v6e-8"
    )
  generation = "v5litepod" if m.group(1) == "v5e" else m.group(1)
  return f"{generation}-{m.group(2)}"


def default_runtime(accel: str) -> str:
  return RUNTIME_VERSIONS[accel.rsplit("-", 1)[0]]


# ---------------------------------------------------------------- commands ---


def _where(args) -> list[str]:
  flags = [f"--zone={args.zone}"]
  if args.project:
    flags.append(f"--project={args.project}")
  return flags


def _ssh(args, worker: str, command: str) -> list[str]:
  return [
    "gcloud",
    "compute",
    "tpus",
    "tpu-vm",
    "ssh",
    args.name,
    *_where(args),
    f"--worker={worker}",
    f"--command={command}",
  ]


def create_commands(args) -> list[list[str]]:
  accel = accelerator_type(args.accelerator)
  version = args.version or default_runtime(accel)
  if args.queued:
    if args.preemptible:
      raise SystemExit("--preemptible does not apply to queued resources; use --spot")
    cmd = [
      "gcloud",
      "compute",
      "tpus",
      "queued-resources",
      "create",
      args.name,
      f"--node-id={args.name}",
      *_where(args),
      f"--accelerator-type={accel}",
      f"--runtime-version={version}",
    ]
  else:
    cmd = [
      "gcloud",
      "compute",
      "tpus",
      "tpu-vm",
      "create",
      args.name,
      *_where(args),
      f"--accelerator-type={accel}",
      f"--version={version}",
    ]
  if args.spot:
    cmd.append("--spot")
  if args.preemptible:
    cmd.append("--preemptible")
  return [cmd]


def wait_active_command(args) -> list[str]:
  return [
    "gcloud",
    "compute",
    "tpus",
    "queued-resources",
    "describe",
    args.name,
    *_where(args),
    "--format=value(state.state)",
  ]


def _as_path(path: str) -> str:
  """A path pip cannot mistake for a package name."""
  return path if path.startswith(("/", ".", "~", "$")) else f"./{path}"


def setup_commands(args) -> list[list[str]]:
  """Packs this checkout, copies it to every worker, installs it there with JAX for TPU."""
  if args.code_dir.strip().rstrip("/") in ("", "~", "$HOME", "."):
    raise SystemExit(
      f"--code_dir={args.code_dir!r}: setup replaces this directory; name a "
      f"directory of its own, e.g. big_contrast"
    )
  tarball = f"/tmp/{CODE_TARBALL}"
  pack = ["tar", "-czf", tarball, *(f"--exclude={e}" for e in TAR_EXCLUDES), "-C", str(REPO), "."]
  copy = [
    "gcloud",
    "compute",
    "tpus",
    "tpu-vm",
    "scp",
    tarball,
    f"{args.name}:{CODE_TARBALL}",
    *_where(args),
    "--worker=all",
  ]
  install = "; ".join(
    [
      "set -e",
      f"rm -rf {args.code_dir}",
      f"mkdir -p {args.code_dir}",
      f"tar -xzf {CODE_TARBALL} -C {args.code_dir}",
      f"{args.python} -m pip install -q -U pip",
      f"{args.python} -m pip install -q -e {_as_path(args.code_dir)} 'jax[tpu]'",
    ]
  )
  return [pack, copy, _ssh(args, "all", install)]


def worker_script(args, trainer_args: list[str]) -> str:
  """The one-line shell program every worker runs for `train` (same text on all workers).

  Worker identity comes from the metadata server (as `jax.distributed`'s own
  Cloud TPU detection does); `$GCE_METADATA_IP` points it elsewhere in tests.
  """
  log_dir = args.log_dir
  log, pidfile = f"{log_dir}/{args.run_name}.log", f"{log_dir}/{args.run_name}.pid"
  get = "curl -sf -H 'Metadata-Flavor: Google'"
  # nohup: a dropped ssh connection must not kill a host's trainer (which would end
  # the whole run); `stop` is how a run is ended on purpose.
  train = " ".join(["nohup", args.python, "-m", args.module, *map(shlex.quote, trainer_args)])
  lines = [
    f"cd {args.code_dir} || exit 1",
    f"mkdir -p {log_dir}",
    f"MD={METADATA}",
    f'WORKER=$({get} "$MD/agent-worker-number") || exit 1',
    f'HOSTS=$({get} "$MD/worker-network-endpoints") || exit 1',
    "N=$(echo \"$HOSTS\" | tr ',' '\\n' | grep -c .)",
    # One entry per worker, sorted by worker number: 'host' or 'name:id:ip'.
    'if [ "$N" -gt 1 ]; then export BIG_CONTRAST_PROCESS_ID="$WORKER" '
    'BIG_CONTRAST_NUM_PROCESSES="$N" BIG_CONTRAST_COORDINATOR="$(echo "$HOSTS" '
    f"| cut -d, -f1 | awk -F: '{{print $NF}}'):{args.coordinator_port}\"; fi",
    *(f"export {shlex.quote(kv)}" for kv in args.env),
    f'if [ -f {pidfile} ] && kill -0 "$(cat {pidfile})" 2>/dev/null; then '
    f'PID=$(cat {pidfile}); STARTED=0; echo "worker $WORKER: a run is alive (pid $PID); '
    f'following it"; else : > {log}; {train} >> {log} 2>&1 < /dev/null & PID=$!; STARTED=1; '
    f'echo "$PID" > {pidfile}; fi',
  ]
  if not args.detach:
    lines += [
      f'if [ "$WORKER" = 0 ]; then tail -n +1 -f --pid="$PID" {log}; fi',
      'if [ "$STARTED" = 1 ]; then wait "$PID"; else tail --pid="$PID" -f /dev/null; fi',
    ]
  return "; ".join(lines)


def train_commands(args, trainer_args: list[str]) -> list[list[str]]:
  return [_ssh(args, "all", worker_script(args, trainer_args))]


def logs_commands(args) -> list[list[str]]:
  log = f"{args.log_dir}/{args.run_name}.log"
  follow = "-F" if args.follow else ""
  return [_ssh(args, str(args.worker), f"tail -n {args.lines} {follow} {log}".replace("  ", " "))]


def stop_commands(args) -> list[list[str]]:
  """SIGTERM on every worker: the trainer saves a checkpoint at one agreed step and exits 0."""
  pidfile = f"{args.log_dir}/{args.run_name}.pid"
  script = (
    f'if [ -f {pidfile} ] && kill -0 "$(cat {pidfile})" 2>/dev/null; then '
    f'kill -TERM "$(cat {pidfile})" && echo "sent SIGTERM to $(cat {pidfile})"; '
    f'else echo "no run alive"; fi'
  )
  return [_ssh(args, "all", script)]


def delete_commands(args) -> list[list[str]]:
  if args.queued:  # --force deletes the TPU VM the queued resource holds, too
    return [
      [
        "gcloud",
        "compute",
        "tpus",
        "queued-resources",
        "delete",
        args.name,
        *_where(args),
        "--force",
        "--quiet",
      ]
    ]
  return [["gcloud", "compute", "tpus", "tpu-vm", "delete", args.name, *_where(args), "--quiet"]]


# -------------------------------------------------------------- execution ---


def run_commands(commands: list[list[str]], dry_run: bool) -> int:
  """Runs each command in turn (stops at the first failure); with dry_run prints them."""
  for cmd in commands:
    if dry_run:
      print(shlex.join(cmd))
      continue
    print(f"+ {shlex.join(cmd)}", file=sys.stderr, flush=True)
    rc = subprocess.call(cmd)
    if rc:
      return rc
  return 0


def wait_until_active(args, timeout_s: float = 6 * 3600, poll_s: float = 30) -> int:
  """Polls a queued resource until its TPU VM is ACTIVE (or FAILED, or the timeout)."""
  cmd = wait_active_command(args)
  if args.dry_run:
    print(shlex.join(cmd))
    return 0
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    state = subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    print(f"queued resource {args.name}: {state or 'unknown'}", file=sys.stderr, flush=True)
    if state == "ACTIVE":
      return 0
    if state in ("FAILED", "SUSPENDED"):
      return 1
    time.sleep(poll_s)
  return 1


def _parser() -> argparse.ArgumentParser:
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("--name", required=True, help="TPU VM (and queued resource) name")
  common.add_argument("--zone", required=True)
  common.add_argument("--project", default=None, help="default: gcloud's configured project")
  common.add_argument(
    "--dry-run",
    "--dry_run",
    dest="dry_run",
    action="store_true",
    help="print every command, one per line, and run none",
  )
  worker = argparse.ArgumentParser(add_help=False)
  worker.add_argument(
    "--code_dir",
    default="big_contrast",
    help="where the code lives on each worker (relative to $HOME)",
  )
  worker.add_argument("--python", default="python3")
  worker.add_argument("--log_dir", default="$HOME/big_contrast_logs")
  worker.add_argument("--run_name", default="train", help="names RUN.log and RUN.pid")
  kind = argparse.ArgumentParser(add_help=False)
  kind.add_argument("--queued", action="store_true", help="a queued resource, not a plain TPU VM")
  alloc = argparse.ArgumentParser(add_help=False)
  alloc.add_argument("--accelerator", required=True, help="e.g. v4-8, v4-32, v5e-8, v5e-32")
  alloc.add_argument("--version", default=None, help="TPU software version (default per gen.)")
  capacity = alloc.add_mutually_exclusive_group()
  capacity.add_argument("--spot", action="store_true", help="Spot capacity (preemptible)")
  capacity.add_argument(
    "--preemptible", action="store_true", help="legacy preemptible TPU VM (not with --queued)"
  )

  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest="command", required=True)
  sub.add_parser("create", parents=[common, kind, alloc], help="create the slice")
  sub.add_parser("setup", parents=[common, worker], help="copy and install the code on all workers")
  sub.add_parser(
    "up",
    parents=[common, kind, alloc, worker],
    help="create, wait until ready (queued), then setup",
  )
  t = sub.add_parser(
    "train",
    parents=[common, worker],
    help="run the trainer on all workers; args after -- go to the trainer",
  )
  t.add_argument("--module", default="big_contrast.train")
  t.add_argument("--coordinator_port", type=int, default=8476)
  t.add_argument(
    "--env",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="extra environment for the trainer (repeatable)",
  )
  t.add_argument("--detach", action="store_true", help="start and return; see `logs`")
  lg = sub.add_parser("logs", parents=[common, worker], help="tail a worker's log")
  lg.add_argument("--worker", default="0")
  lg.add_argument("--lines", type=int, default=100)
  lg.add_argument("--follow", action=argparse.BooleanOptionalAction, default=True)
  sub.add_parser(
    "stop",
    parents=[common, worker],
    help="SIGTERM the run on all workers (it checkpoints and exits)",
  )
  sub.add_parser("delete", parents=[common, kind], help="delete the slice")
  return p


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  trainer_args: list[str] = []
  if "--" in argv:
    i = argv.index("--")
    argv, trainer_args = argv[:i], argv[i + 1 :]
  args = _parser().parse_args(argv)
  if args.command == "train":
    for kv in args.env:
      if "=" not in kv:
        raise SystemExit(f"--env={kv!r}: expected KEY=VALUE")
    workdir = [a.split("=", 1)[1] for a in trainer_args if a.startswith("--workdir=")]
    if not workdir:
      raise SystemExit("train: give the trainer's flags after --, including --workdir=gs://...")
    if not workdir[0].startswith("gs://"):
      print(
        f"warning: --workdir={workdir[0]} is not on GCS; on a multi-host slice every host "
        f"must read and write the same checkpoints (use gs://BUCKET/...)",
        file=sys.stderr,
      )
    return run_commands(train_commands(args, trainer_args), args.dry_run)
  if trainer_args:
    raise SystemExit(f"{args.command}: unexpected arguments after --: {trainer_args}")
  if args.command == "create":
    return run_commands(create_commands(args), args.dry_run)
  if args.command == "up":
    rc = run_commands(create_commands(args), args.dry_run)
    if not rc and args.queued:
      rc = wait_until_active(args)
    return rc or run_commands(setup_commands(args), args.dry_run)
  commands = {
    "setup": setup_commands,
    "logs": logs_commands,
    "stop": stop_commands,
    "delete": delete_commands,
  }[args.command](args)
  return run_commands(commands, args.dry_run)


if __name__ == "__main__":
  sys.exit(main())
