"""User errors print one or two lines naming the problem and the fix, exit 2, no traceback;
debug mode shows the trace; programming errors keep theirs."""

from __future__ import annotations

import os
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from big_contrast import checkpoint, launch, train
from big_contrast.data import DataError

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import simclr as simclr_config
from tests import reliability_support as support


def _command_line(argv: list[str], monkeypatch, capsys) -> tuple[int, list[str]]:
  """Parses `argv` as `python -m big_contrast.train` does (`launch._parse_flags` over the
  flags `launch.define_flags` declares): its exit status and non-empty stderr lines."""
  flag_values = flags.FlagValues()
  launch.define_flags(flag_values)
  monkeypatch.setattr(launch.flags, "FLAGS", flag_values)
  monkeypatch.chdir(support.REPO)
  monkeypatch.delenv("BIG_CONTRAST_DEBUG", raising=False)
  argv = ["big_contrast.train", *argv]
  monkeypatch.setattr(sys, "argv", argv)  # the config flag reads its overrides from sys.argv
  with pytest.raises(SystemExit) as exit_info:
    launch._parse_flags(argv)
  return exit_info.value.code, [line for line in capsys.readouterr().err.splitlines() if line]


def test_a_misspelled_key_names_it_and_the_fix_in_two_lines(tmp_path, monkeypatch, capsys):
  argv = ["--config=configs/simclr.py:tiny", f"--workdir={tmp_path}", "--config.optim.lrr=0.1"]
  assert _command_line(argv, monkeypatch, capsys) == (
    2,
    [
      "error: --config.optim.lrr: config.optim has no key 'lrr'; did you mean 'lr'?",
      "(set BIG_CONTRAST_DEBUG=on for the full traceback)",
    ],
  )


def test_a_missing_dataset_names_the_path_and_exits_2(tmp_path, capsys, monkeypatch):
  monkeypatch.delenv("BIG_CONTRAST_DEBUG", raising=False)
  config = simclr_config.get_config("tiny")
  missing = str(tmp_path / "no_such_dataset")
  config.data.name = missing
  with pytest.raises(SystemExit) as exit_info:
    launch._guarded(
      lambda argv: train.train_and_evaluate(config, tmp_path / "run"),
      [],
      (launch.ConfigError, *train.USER_ERRORS),
      train.STOP_ERRORS,
    )
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  (line,) = [line for line in err.splitlines() if line.strip()]
  assert line.startswith(f"error: data.name={missing!r} is neither a bundled dataset")
  assert not (tmp_path / "run" / "lock.json").exists()  # released on the way out


def _parse_error(argv: list[str]) -> BaseException:
  """The exception the real config flag raises for `argv` (a fresh flag namespace)."""
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values)
  try:
    flag_values(["prog", *argv])
    flag_values["config"].value.get("task")
  except Exception as e:  # noqa: BLE001 — that exception is what the test looks at
    return e
  raise AssertionError(f"{argv} parsed")


@pytest.mark.parametrize(
  "argv,expected",
  [
    (
      ["--config=configs/nope.py:tiny"],
      "--config=configs/nope.py:tiny: [Errno 2] No such file or directory: 'configs/nope.py'",
    ),
    (
      ["--config=configs/simclr.py:tinyy"],
      "--config=configs/simclr.py:tinyy: ValueError: configs/simclr.py: unknown variant "
      f"'tinyy'; expected one of {list(simclr_config.VARIANTS)}",
    ),
  ],
  ids=["missing_file", "unknown_variant"],
)
def test_a_bad_config_file_or_variant_is_one_line(argv, expected, monkeypatch):
  monkeypatch.chdir(support.REPO)
  assert launch._flag_problem(_parse_error(argv), argv) == expected


def _exit_status(fn, capsys) -> tuple[int, list[str]]:
  with pytest.raises(SystemExit) as exit_info:
    launch._guarded(fn, [], (DataError,), (checkpoint.DiskFull,))
  return exit_info.value.code, capsys.readouterr().err.splitlines()


def test_user_and_stop_errors_exit_2_and_1_with_their_message_only(capsys, monkeypatch):
  monkeypatch.delenv("BIG_CONTRAST_DEBUG", raising=False)

  def bad_data(argv):
    raise DataError("data.name='/x' is not a dataset\ngive the converter's output folder")

  def full_disk(argv):
    raise checkpoint.DiskFull("no space left on the device of /w")

  assert _exit_status(bad_data, capsys) == (
    2,
    ["error: data.name='/x' is not a dataset", "give the converter's output folder"],
  )
  assert _exit_status(full_disk, capsys) == (1, ["error: no space left on the device of /w"])


def test_debug_mode_adds_the_traceback(capsys, monkeypatch):
  monkeypatch.setenv("BIG_CONTRAST_DEBUG", "on")

  def bad_data(argv):
    raise DataError("data.name='/x' is not a dataset")

  status, lines = _exit_status(bad_data, capsys)
  assert status == 2
  assert lines[0] == "Traceback (most recent call last):"
  assert "big_contrast.data.sources.DataError: data.name='/x' is not a dataset" in lines
  assert lines[-1] == "error: data.name='/x' is not a dataset"


def test_a_programming_error_keeps_its_traceback():
  def bug(argv):
    return 1 / 0

  with pytest.raises(ZeroDivisionError):
    launch._guarded(bug, [], (DataError,), ())


def test_the_library_raises_config_errors_as_value_errors(tmp_path):
  config = simclr_config.get_config("tiny")
  config.batch_size = 0
  with pytest.raises(launch.ConfigError, match=r"config.batch_size=0 must be a positive integer"):
    train.train_and_evaluate(config, tmp_path)
  assert issubclass(launch.ConfigError, ValueError)
  assert not os.listdir(tmp_path)  # stopped before writing anything
