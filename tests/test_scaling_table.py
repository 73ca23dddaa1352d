"""tools/scaling_table.py: rows run as separate processes, side by side, kept and rendered.

A stand-in for tools/compile_for.py (a script that writes a row's JSON the way
compile_for does, or fails) keeps the test free of the TPU compiler.
"""

import json
import os
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import scaling_table  # noqa: E402

GiB = 2**30

FAKE_COMPILE = textwrap.dedent(
  """
  import json, os, shlex, sys, time
  args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:] if "=" in a)
  if args["topology"] == "broken":
    sys.exit(3)
  print("compiling", args["topology"], flush=True)
  with open(args["json_out"] + ".started", "w") as f:
    f.write(str(time.time()))
  time.sleep(float(os.environ.get("FAKE_COMPILE_SLEEP", "0")))
  row = dict(topology=args["topology"], batch_size=4096, microbatches=2, block_size=None,
             per_chip=dict(total=3 * 2**30), hbm_usable_bytes=int(15.75 * 2**30), fits=True,
             projected_examples_per_s=1234.5, compile_s=7.0,
             tried=[dict(microbatches=1, fits=False, total=None, compile_s=3.0),
                    dict(microbatches=2, fits=True, total=3 * 2**30, compile_s=4.0)],
             command=shlex.join(["python", "tools/compile_for.py", *sys.argv[1:]]))
  with open(args["json_out"], "w") as f:
    json.dump(row, f)
  """
)


@pytest.fixture
def fake_table(tmp_path, monkeypatch):
  script = tmp_path / "fake_compile.py"
  script.write_text(FAKE_COMPILE)

  def commands():
    return [
      ["python", str(script), f"--topology={s}", "--config=configs/x.py:y", "--fit"]
      for s in ("v5e-8", "v4-8", "broken")
    ]

  monkeypatch.setattr(scaling_table, "table_commands", commands)
  return tmp_path / "rows"


def test_rows_run_side_by_side_and_a_failed_row_is_not_computed(fake_table, monkeypatch):
  monkeypatch.setenv("FAKE_COMPILE_SLEEP", "1.5")
  rows = scaling_table.run_table(str(fake_table), only="", render_only=False, jobs=2)
  assert [r and r["topology"] for _, r in rows] == ["v5e-8", "v4-8", None]
  # Both compiles had started before either finished.
  starts = sorted(float(p.read_text()) for p in fake_table.glob("*.started"))
  assert len(starts) == 2 and starts[1] - starts[0] < 1.5
  # Each row's console is kept beside its JSON.
  logs = sorted(p.read_text() for p in fake_table.glob("*.log"))
  assert any("compiling v5e-8" in t for t in logs)

  table = scaling_table.markdown_table(rows)
  lines = table.strip().splitlines()
  assert len(lines) == 2 + 3
  fit = next(line for line in lines if "| v5e-8 |" in line)
  assert "| 4,096 | 1: no, refused | 2 | — | 3.00 (15.75) | yes | 1,234 | 7 |" in fit
  # The command beside the figures is the one that made them, less where it wrote them.
  assert "--topology=v5e-8 --config=configs/x.py:y --fit`" in fit and "json_out" not in fit
  assert "| broken | not computed |" in lines[-1]


def test_rows_already_computed_are_reused_unless_selected(fake_table):
  scaling_table.run_table(str(fake_table), only="v5e-8", render_only=False)
  path = next(fake_table.glob("*v5e_8*.json"))
  row = json.loads(path.read_text())
  row["microbatches"] = 99  # as if from an earlier run
  path.write_text(json.dumps(row))

  rows = scaling_table.run_table(str(fake_table), only="", render_only=False, jobs=2)
  assert rows[0][1]["microbatches"] == 99  # reused
  assert rows[1][1]["microbatches"] == 2  # computed now
  rows = scaling_table.run_table(str(fake_table), only="v5e-8", render_only=False)
  assert rows[0][1]["microbatches"] == 2  # selected: recomputed
  rendered = scaling_table.run_table(str(fake_table), only="", render_only=True)
  assert [r is not None for _, r in rendered] == [True, True, False]
