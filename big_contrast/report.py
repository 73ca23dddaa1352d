r"""A picture of one run or several: training curves, periodic evaluations and the final table.

  python -m big_contrast.report DIR [DIR ...] [--out=PATH]

reads each run's `metrics.jsonl` and `results.json` and draws, against the step:
the loss, the learning rate, the temperature (and SigLIP's bias), the gradient
norm, the records the input pipeline skipped, the periodic evaluations
(`config.evals`), and the final evaluation as a table, one column per run. One
DIR writes DIR/report.png; several are overlaid, one colour per run, in
./report.png. The trainer writes DIR/report.png at the end of every run.

Knows nothing of models or training: it reads files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

# Evaluation metrics drawn as curves (the last part of an `eval/...` key).
_CURVE_METRICS = ("top1", "macro_map", "i2t_R@1", "t2i_R@1", "spearman")
# Results shown as percentages in the table (the last part of a key).
_PERCENT = (
  "top1",
  "top5",
  "mean_per_class",
  "mean_per_class_recall",
  "macro_map",
  "micro_map",
  "macro_f1",
  "micro_f1",
)


@dataclasses.dataclass
class Run:
  name: str
  rows: list[dict]  # metrics.jsonl, in order
  results: dict  # results.json ({} before the run finished)

  def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of `key` over the rows that have it; a resumed run's repeated steps
    keep their last value."""
    by_step = {r["step"]: r[key] for r in self.rows if key in r}
    steps = np.array(sorted(by_step))
    return steps, np.array([by_step[s] for s in steps], dtype=float)

  def keys(self) -> set[str]:
    return {k for r in self.rows for k in r}


def load_run(workdir: str, name: str | None = None) -> Run:
  """The run in `workdir`: its metrics.jsonl rows and results.json (either may be missing)."""
  metrics = os.path.join(workdir, "metrics.jsonl")
  results = os.path.join(workdir, "results.json")
  if not os.path.exists(metrics) and not os.path.exists(results):
    raise FileNotFoundError(
      f"{workdir} has neither metrics.jsonl nor results.json: is it a big_contrast workdir?"
    )
  rows = []
  if os.path.exists(metrics):
    with open(metrics) as f:
      rows = [json.loads(line) for line in f if line.strip()]
  res = {}
  if os.path.exists(results):
    with open(results) as f:
      res = json.load(f)
  return Run(name or os.path.basename(os.path.abspath(workdir)), rows, res)


def _names(workdirs: Sequence[str]) -> list[str]:
  """Short run names: the directory's name, with its parent's where two would clash."""
  base = [os.path.basename(os.path.abspath(d)) for d in workdirs]
  if len(set(base)) == len(base):
    return base
  return [os.path.join(*os.path.abspath(d).split(os.sep)[-2:]) for d in workdirs]


def _fmt(key: str, value) -> str:
  if not isinstance(value, (int, float)):
    return str(value)
  if key.rsplit("/", 1)[-1] in _PERCENT or "R@" in key:
    return f"{100 * value:.1f}%"
  if key.endswith("_seconds"):
    return f"{value:.1f} s"
  if isinstance(value, int):
    return f"{value:,}"
  return f"{value:.4g}"


def _table_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
  keys: list[str] = []
  for run in runs:
    for k, v in run.results.items():
      if isinstance(v, (int, float)) and k not in keys:
        keys.append(k)
  cells = [[_fmt(k, run.results[k]) if k in run.results else "–" for run in runs] for k in keys]
  return keys, cells


def _panel(ax, runs, colors, key, title, ylabel, *, log=False):
  drawn = False
  for run, color in zip(runs, colors):
    steps, values = run.series(key)
    if len(steps):
      ax.plot(steps, values, color=color, lw=1.4, label=run.name)
      drawn = True
  ax.set_title(title, fontsize=11)
  ax.set_xlabel("step")
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  if log and drawn:
    ax.set_yscale("log")
  if not drawn:
    ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
  return drawn


def _eval_panel(ax, runs, colors):
  keys = sorted(
    {k for run in runs for k in run.keys() if k.startswith("eval/")}
    & {k for run in runs for k in run.keys() if k.rsplit("/", 1)[-1] in _CURVE_METRICS}
  )
  styles = ["-", "--", ":", "-."]
  for run, color in zip(runs, colors):
    for i, key in enumerate(keys):
      steps, values = run.series(key)
      if len(steps):
        scale = 1.0 if key.endswith("spearman") else 100.0
        label = key.removeprefix("eval/") + (f" ({run.name})" if len(runs) > 1 else "")
        ax.plot(steps, scale * values, styles[i % 4], color=color, marker="o", ms=3, label=label)
  ax.set_title("periodic evaluation (config.evals)", fontsize=11)
  ax.set_xlabel("step")
  ax.set_ylabel("accuracy / recall (%)")
  ax.grid(alpha=0.3)
  if keys:
    ax.legend(fontsize=7, loc="lower right")
  else:
    ax.text(
      0.5,
      0.5,
      "none configured\n(--config.evals=...)",
      ha="center",
      va="center",
      transform=ax.transAxes,
      color="grey",
    )


def draw(runs: Sequence[Run], out: str) -> str:
  """Draws `runs` (overlaid) into the PNG `out`; returns `out`."""
  if not runs:
    raise ValueError("draw needs at least one run")
  # Imported here: matplotlib costs the trainer's import a second, and draws only at the end.
  from matplotlib import colors as mcolors  # noqa: PLC0415 — heavy import, off the hot path
  from matplotlib.figure import Figure  # noqa: PLC0415 — likewise

  colors = [f"C{i % 10}" for i in range(len(runs))]
  keys, cells = _table_rows(runs)
  table_h = 0.32 * (len(keys) + 1) + 0.6
  fig = Figure(figsize=(15, 8.2 + table_h), dpi=100)
  grid = fig.add_gridspec(3, 3, height_ratios=[1, 1, table_h / 4.1], hspace=0.45, wspace=0.25)
  ax = [fig.add_subplot(grid[i // 3, i % 3]) for i in range(6)]

  _panel(ax[0], runs, colors, "loss", "training loss", "loss (nats)")
  _panel(ax[1], runs, colors, "lr", "learning rate", "learning rate", log=False)
  if not _panel(ax[2], runs, colors, "temperature", "temperature", "temperature τ"):
    ax[2].set_title("temperature (fixed by config.loss: not logged)", fontsize=11)
  for run, color in zip(runs, colors):  # SigLIP's learned bias, on a twin axis
    steps, values = run.series("bias")
    if len(steps):
      twin = ax[2].twinx()
      twin.plot(steps, values, "--", color=color, lw=1.0)
      twin.set_ylabel("bias b (dashed)")
  _panel(ax[3], runs, colors, "grad_norm", "gradient norm (before clipping)", "global L2 norm")
  _panel(ax[4], runs, colors, "data/skipped", "records skipped by the input pipeline", "records")
  if not any(len(r.series("data/skipped")[0]) and r.series("data/skipped")[1].any() for r in runs):
    ax[4].text(
      0.5, 0.85, "none skipped", ha="center", transform=ax[4].transAxes, color="grey", fontsize=9
    )
  _eval_panel(ax[5], runs, colors)
  if len(runs) > 1:
    ax[0].legend(fontsize=8)

  tab = fig.add_subplot(grid[2, :])
  tab.axis("off")
  if keys:
    table = tab.table(
      cellText=cells,
      rowLabels=keys,
      colLabels=[r.name for r in runs],
      colColours=[(*mcolors.to_rgb(c), 0.25) for c in colors],
      loc="center",
      cellLoc="center",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(min(1.0, 0.25 * len(runs) + 0.2), 1.25)
    tab.set_title("final evaluation (results.json)", fontsize=11)
  else:
    tab.text(0.5, 0.5, "no results.json yet (the run has not finished)", ha="center")
  last = max((r.rows[-1]["step"] for r in runs if r.rows), default=0)
  if last:
    for a in ax:  # one step axis for every panel, periodic evaluations included
      a.set_xlim(0, last * 1.03)
  height = fig.get_size_inches()[1]
  fig.suptitle(f"{', '.join(r.name for r in runs)}  —  up to step {last:,}", fontsize=13)
  fig.subplots_adjust(top=1 - 0.75 / height, bottom=0.02, left=0.06, right=0.96)
  fig.savefig(out)
  return out


def write(workdir: str) -> str:
  """Draws the run in `workdir` into `workdir/report.png`; returns its path."""
  return draw([load_run(workdir)], os.path.join(workdir, "report.png"))


def main(argv: Sequence[str] | None = None) -> None:
  p = argparse.ArgumentParser(
    prog="big_contrast-report",
    description="Draw a run's curves and final table (several runs: overlaid) into a PNG.",
  )
  p.add_argument("workdirs", nargs="+", metavar="DIR", help="run directories (--workdir)")
  p.add_argument("--out", help="PNG path (default: DIR/report.png, or ./report.png for several)")
  args = p.parse_args(argv)
  names = _names(args.workdirs)
  runs = [load_run(d, n) for d, n in zip(args.workdirs, names)]
  out = args.out or (
    os.path.join(args.workdirs[0], "report.png") if len(runs) == 1 else "report.png"
  )
  print(draw(runs, out))


if __name__ == "__main__":
  main()
