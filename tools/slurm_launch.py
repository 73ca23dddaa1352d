r"""Submits big_contrast training to SLURM with tools/slurm_train.sbatch.

  python tools/slurm_launch.py --nodes=4 --gpus_per_node=8 [--per=gpu|node] \
      [--partition=P --account=A --time=24:00:00] [--dry-run] -- \
      --config=configs/clip.py:vit_b16 --workdir=/shared/runs/clip_b16

Builds one `sbatch` command line (options override the script's #SBATCH
defaults; everything after -- goes to the trainer) and runs it, or prints it
with --dry-run. Submitting the same line again resumes the run.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "slurm_train.sbatch"


def sbatch_command(args, trainer_args: list[str], script: str | Path = SCRIPT) -> list[str]:
  tasks_per_node = args.gpus_per_node if args.per == "gpu" else 1
  cmd = [
    "sbatch",
    f"--job-name={args.job_name}",
    f"--nodes={args.nodes}",
    f"--ntasks-per-node={tasks_per_node}",
    f"--gpus-per-node={args.gpus_per_node}",
    f"--time={args.time}",
  ]
  if args.cpus_per_task:
    cmd.append(f"--cpus-per-task={args.cpus_per_task}")
  if args.partition:
    cmd.append(f"--partition={args.partition}")
  if args.account:
    cmd.append(f"--account={args.account}")
  if args.output:
    cmd.append(f"--output={args.output}")
  return [*cmd, str(script), *trainer_args]


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--nodes", type=int, default=1)
  p.add_argument("--gpus_per_node", type=int, default=8)
  p.add_argument(
    "--per",
    choices=("gpu", "node"),
    default="gpu",
    help="one process per GPU (default) or one per node",
  )
  p.add_argument("--time", default="24:00:00", help="time limit; SIGTERM comes 10 min before")
  p.add_argument("--job_name", default="big_contrast")
  p.add_argument("--cpus_per_task", type=int, default=None)
  p.add_argument("--partition", default=None)
  p.add_argument("--account", default=None)
  p.add_argument("--output", default=None, help="log file pattern (default slurm-%%x-%%j.out)")
  p.add_argument(
    "--dry-run",
    "--dry_run",
    dest="dry_run",
    action="store_true",
    help="print the sbatch command line and submit nothing",
  )
  return p


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  trainer_args: list[str] = []
  if "--" in argv:
    i = argv.index("--")
    argv, trainer_args = argv[:i], argv[i + 1 :]
  args = _parser().parse_args(argv)
  if not any(a.startswith("--workdir=") for a in trainer_args):
    raise SystemExit(
      "give the trainer's flags after --, including --workdir=DIR on a file system every node sees"
    )
  if args.nodes < 1 or args.gpus_per_node < 1:
    raise SystemExit(f"--nodes={args.nodes} --gpus_per_node={args.gpus_per_node}: need >= 1")
  cmd = sbatch_command(args, trainer_args)
  if args.dry_run:
    print(shlex.join(cmd))
    return 0
  return subprocess.call(cmd)


if __name__ == "__main__":
  sys.exit(main())
