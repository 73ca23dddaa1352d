"""Process start-up for the entry points: flags, multi-host initialisation, debug aids, logs.

`run(main)` is the absl entry point of `python -m big_contrast.train` (flags
`--config=FILE:VARIANT`, `--config.key=value`, `--workdir`). A user's mistake
(a config key or value, a config file or variant, a path, a dataset: the
`user_errors` the entry point names, and every flag error) prints one or two
lines naming the problem and the fix and exits 2; a run stopped by its
environment (`stop_errors`: a full disk, a lost peer) prints the same way and
exits 1; `--config.debug=on` or $BIG_CONTRAST_DEBUG adds the full traceback.
Anything else is a bug and keeps its traceback.

`maybe_initialize_distributed()` joins a multi-process run and watches its
peers: when one dies, the others exit within `peer_timeout_s`, naming it.
`apply_debug` turns on what `config.debug` asks for. Knows nothing of models or
training.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

# A peer silent this long is lost (`config.peer_timeout_s` overrides it).
DEFAULT_PEER_TIMEOUT_S = 60.0
_PEERS = "big_contrast/peers"


def maybe_initialize_distributed(peer_timeout_s: float = DEFAULT_PEER_TIMEOUT_S) -> None:
  """Joins a multi-process run when the environment describes one, and watches its peers.

  Explicit: BIG_CONTRAST_COORDINATOR (host:port), BIG_CONTRAST_NUM_PROCESSES and
  BIG_CONTRAST_PROCESS_ID (what tools/tpu_vm.py and tools/slurm_train.sbatch set).
  Otherwise a multi-task SLURM job or a GKE TPU pod is left to JAX's own detection.
  A process that dies (or stops with an error) makes the others exit within
  `peer_timeout_s` seconds with an error naming it (`_PeerWatch`), instead of
  waiting in a collective for ever.
  """
  # JAX's own heartbeat stays the backstop; it aborts without saying much, so it
  # is set to fire only after the watch would have.
  timeouts = dict(heartbeat_timeout_seconds=max(100, int(2 * peer_timeout_s) + 10))
  coordinator = os.environ.get("BIG_CONTRAST_COORDINATOR")
  if coordinator:
    if os.environ.get("JAX_PLATFORMS", "") == "cpu":
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
      coordinator_address=coordinator,
      num_processes=int(os.environ["BIG_CONTRAST_NUM_PROCESSES"]),
      process_id=int(os.environ["BIG_CONTRAST_PROCESS_ID"]),
      **timeouts,
    )
  elif "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    jax.distributed.initialize(**timeouts)
  elif os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0:
    # GKE TPU pods set this; Cloud TPU VMs do not (tools/tpu_vm.py exports the
    # BIG_CONTRAST_* variables from the metadata server on every worker instead).
    jax.distributed.initialize(**timeouts)
  else:
    return
  global _watch
  if jax.process_count() > 1 and _watch is None:
    _watch = _PeerWatch(peer_timeout_s)


def _distributed_client():
  from jax._src import distributed  # noqa: PLC0415 — no public handle on the key-value store

  return distributed.global_state.client


class _PeerWatch:
  """Each process bumps a counter in the coordination service's key-value store
  every `timeout / 6` seconds and watches the others' counters. A peer whose
  counter stops for `timeout` seconds, or that reports it stopped with an error,
  is lost: this process prints which one (index, host, pid) and exits 1.

  Threads, not the main loop, so a process blocked in a collective still beats
  and still judges; the key-value store, not a collective, so a dead peer cannot
  block them. A clean end is reported as 'finished' and is not a loss.
  """

  def __init__(self, timeout_s: float):
    self._client = _distributed_client()
    self._timeout = float(timeout_s)
    self._me, self._n = jax.process_index(), jax.process_count()
    self._client.key_value_set(
      f"{_PEERS}/who/{self._me}", f"host {socket.gethostname()}, pid {os.getpid()}"
    )
    self._seen: dict[int, tuple[str, float]] = {}  # peer -> (its value, when it changed)
    self._started = time.monotonic()
    self._ended = threading.Event()  # this process reported its end: stop beating
    self._failing = False  # this process failed: look only for silent peers
    self._threads = [
      threading.Thread(target=self._beat, name="peer-beat", daemon=True),
      threading.Thread(target=self._judge, name="peer-judge", daemon=True),
    ]
    for t in self._threads:
      t.start()

  def _beat(self) -> None:
    count = 0
    while True:
      time.sleep(max(0.2, self._timeout / 6))
      count += 1
      try:
        if not self._ended.is_set():
          self._client.key_value_set(f"{_PEERS}/beat/{self._me}", str(count), allow_overwrite=True)
        values = self._client.key_value_dir_get(f"{_PEERS}/beat/")
      except Exception:  # noqa: BLE001 — the judge notices the silence
        continue
      now = time.monotonic()
      for key, value in values:
        peer = int(key.rsplit("/", 1)[1])
        if peer != self._me and self._seen.get(peer, ("",))[0] != value:
          self._seen[peer] = (value, now)

  def _judge(self) -> None:
    while True:
      time.sleep(0.5)
      if self._ended.is_set() and not self._failing:
        return
      now = time.monotonic()
      for peer in range(self._n):
        if peer == self._me:
          continue
        value, since = self._seen.get(peer, ("", self._started))
        if value == "finished":
          continue
        if value.startswith("failed"):
          if not self._failing:
            self._lost(peer, f"it stopped with an error ({value.removeprefix('failed: ')})")
        elif now - since > self._timeout:
          self._lost(
            peer, f"no heartbeat for {now - since:.0f} s (config.peer_timeout_s={self._timeout:g})"
          )

  def _lost(self, peer: int, why: str) -> None:
    try:
      who = self._client.key_value_try_get(f"{_PEERS}/who/{peer}")
    except Exception:  # noqa: BLE001 — the coordinator may be the one lost
      who = "host and pid unknown"
    self.report(f"failed: lost process {peer}")
    print(
      f"error: lost process {peer} of {self._n} ({who}): {why}. Stopping process {self._me} "
      "too; re-run the job to resume from the newest checkpoint",
      file=sys.stderr,
      flush=True,
    )
    _exit(1)

  def report(self, status: str) -> None:
    """Tells the peers how this process ends: 'finished' or 'failed: why'."""
    self._ended.set()
    try:
      self._client.key_value_set(f"{_PEERS}/beat/{self._me}", status[:300], allow_overwrite=True)
    except Exception:  # noqa: BLE001 — the peers will see the silence instead
      pass

  def await_verdict(self, status: str) -> None:
    """This process failed: tell the peers, then give the judge `timeout` seconds to find
    a silent peer behind the failure (a collective fails when its peer dies); if it
    finds one, it exits naming it. Else, if a peer reported an error, this exits naming
    that one; else it returns (the failure is this process's own)."""
    self._failing = True
    self.report(status)

    def ends() -> dict[int, str]:
      return {p: v for p, (v, _) in self._seen.items() if v == "finished" or v.startswith("failed")}

    deadline = time.monotonic() + self._timeout + 2
    while time.monotonic() < deadline and len(ends()) < self._n - 1:
      time.sleep(0.5)
    echo = f"failed: lost process {self._me}"  # a peer that stopped because this one failed
    failed = [p for p, v in sorted(ends().items()) if v.startswith("failed") and v != echo]
    if failed:  # no peer died, but one failed first: that is the news, not this echo of it
      value = self._seen[failed[0]][0].removeprefix("failed: ")
      self._lost(failed[0], f"it stopped with an error ({value}); here: {status[8:]}")


_watch: _PeerWatch | None = None


def _report_end(status: str) -> None:
  if _watch is not None:
    _watch.report(status)


def _exit(code: int) -> None:
  """Exits; in a multi-process run at once (os._exit): a normal exit would wait in JAX's
  shutdown barrier for peers that are dead or stuck in a collective."""
  if _watch is None:
    sys.exit(code)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


_DEBUG_MODES = {
  "": "",
  "off": "",
  "false": "",
  "0": "",
  "on": "on",
  "true": "on",
  "1": "on",
  "nojit": "nojit",
}


def debug_mode(config: ml_collections.ConfigDict) -> str:
  """'' (off), 'on' or 'nojit', from `config.debug`, or $BIG_CONTRAST_DEBUG when that is unset."""
  value = config.get("debug", None)
  if value is None or value == "":
    value = os.environ.get("BIG_CONTRAST_DEBUG", "")
  mode = _DEBUG_MODES.get(str(value).strip().lower())
  if mode is None:
    raise ValueError(f"config.debug={value!r}: expected one of 'on', 'nojit', or '' (off)")
  return mode


def apply_debug(config: ml_collections.ConfigDict) -> str:
  """Turns on the debugging aids `config.debug` asks for; returns the mode ('' when off).

  'on':    `jax_debug_nans`: the first NaN a jitted computation produces raises
           FloatingPointError there (instead of the optimizer skipping the
           update), `log_shapes` prints shapes and shardings, and the
           libraries' INFO logs and TFDS's build messages show.
  'nojit': as 'on', plus `jax_disable_jit`: jitted functions run op by op, so
           `print` and pdb work inside them. Ahead-of-time compilation
           (`jit(f).lower(...).compile()`) refuses to run in this mode, so a
           caller that compiles ahead of time calls the jitted function instead.
  """
  mode = debug_mode(config)
  if mode:
    jax.config.update("jax_debug_nans", True)
    logging.set_verbosity(logging.INFO)  # the libraries' own logs (TFDS, Orbax, grain) too
    if mode == "nojit":
      jax.config.update("jax_disable_jit", True)
    if jax.process_index() == 0:
      print(
        f"debug mode {mode!r}: jax_debug_nans on" + (", jit disabled" if mode == "nojit" else ""),
        flush=True,
      )
  return mode


def log_shapes(config: ml_collections.ConfigDict, name: str, tree) -> None:
  """In debug mode, prints each leaf of `tree`: path, shape, dtype, sharding (process 0 only)."""
  if not debug_mode(config) or jax.process_index() != 0:
    return
  lines = [f"{name}:"]
  for path, leaf in jax.tree.leaves_with_path(tree):
    sharding = getattr(leaf, "sharding", None)
    spec = getattr(sharding, "spec", sharding)
    dtype = getattr(leaf, "dtype", type(leaf).__name__)
    lines.append(
      f"  {jax.tree_util.keystr(path, simple=True, separator='/')}  "
      f"{tuple(getattr(leaf, 'shape', ()))} {dtype}  {spec}"
    )
  print("\n".join(lines), flush=True)


class ConfigError(ValueError):
  """A config key or value that cannot run; the CLI prints it without a traceback (exit 2)."""


def _debug_requested(argv) -> bool:
  values = [os.environ.get("BIG_CONTRAST_DEBUG", "")]
  values += [a.split("=", 1)[1] for a in argv if a.startswith("--config.debug=")]
  return any(_DEBUG_MODES.get(v.strip().lower()) for v in values)


def _flag_problem(e: BaseException, argv) -> str:
  """One line for a flag the parser rejected: which flag, what is wrong, what to do."""
  text = str(e)
  if isinstance(e, (AttributeError, KeyError)):  # a config key that does not exist
    key = re.search(r"\w+", text).group(0) if re.search(r"\w+", text) else "?"
    flag = next((a.split("=")[0] for a in argv if a.split("=")[0].endswith(f".{key}")), key)
    block = flag.removeprefix("--").rpartition(".")[0]
    hint = re.search(r'Did you mean "(\w+)"', text)
    fix = f"did you mean {hint.group(1)!r}?" if hint else ""
    node = flags.FLAGS["config"].value
    for part in block.split(".")[1:]:
      node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if not fix and isinstance(node, ml_collections.ConfigDict):
      fix = f"its keys are {sorted(node.keys())}"
    return f"{flag}: {block} has no key {key!r}; {fix}".rstrip("; ")
  if "Traceback (most recent call last)" in text or "Attempted [" in text:
    # A config file that failed to load or to build: its own last line says why.
    flag = next((a for a in argv if a.startswith("--config=")), "--config")
    last = [line.strip() for line in text.splitlines() if line.strip()][-1]
    return f"{flag}: {last}"
  return text.splitlines()[0] if text else type(e).__name__


def _parse_flags(argv):
  try:
    rest = flags.FLAGS(argv)
    config = flags.FLAGS["config"].value
    if config is not None:
      config.get("task")  # a config file that failed to load raises only when first read
    return rest
  except Exception as e:  # noqa: BLE001 — every flag error is the command line's
    if _debug_requested(argv):
      traceback.print_exc()
    fix = "" if "--config=" in " ".join(argv) else " (e.g. --config=configs/clip.py:digits)"
    print(f"error: {_flag_problem(e, argv)}{fix}", file=sys.stderr, flush=True)
    if not _debug_requested(argv):
      print("(set BIG_CONTRAST_DEBUG=on for the full traceback)", file=sys.stderr, flush=True)
    sys.exit(2)


def _guarded(main, argv, user_errors: tuple, stop_errors: tuple) -> None:
  try:
    main(argv)
  except (*user_errors, *stop_errors) as e:
    lines = str(e).splitlines() or [type(e).__name__]
    _report_end(f"failed: {lines[0]}")
    if _debug_requested(sys.argv):
      traceback.print_exc()
    print(f"error: {lines[0]}", *lines[1:2], sep="\n", file=sys.stderr, flush=True)
    _exit(2 if isinstance(e, user_errors) else 1)
  except BaseException as e:
    if _watch is None or isinstance(e, SystemExit):
      _report_end(f"failed: {type(e).__name__}")
      raise
    # Multi-process: this may be a collective failing because a peer died; the watch
    # names the peer if so. Otherwise it is this process's own error: its traceback.
    _watch.await_verdict(f"failed: {type(e).__name__}: {str(e)[:200]}")
    traceback.print_exc()
    _exit(1)
  _report_end("finished")


def run(
  main: Callable,
  *,
  user_errors: tuple[type[BaseException], ...] = (),
  stop_errors: tuple[type[BaseException], ...] = (),
) -> None:
  """absl entry point with `--config` (a config file) and `--workdir` flags.

  `user_errors` (plus `ConfigError` and flag errors) exit 2, `stop_errors` exit 1,
  both with their message only (debug mode: and the traceback).
  """
  define_flags()
  app.run(
    lambda argv: _guarded(
      lambda a: main(quiet_library_logs(a)), argv, (ConfigError, *user_errors), stop_errors
    ),
    argv=sys.argv,
    flags_parser=_parse_flags,
  )


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """`--config` (a config file, then `--config.key=value` overrides) and `--workdir`."""
  config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file, e.g. configs/clip.py:digits.",
    flag_values=flag_values,
    lock_config=True,
  )
  flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, logs and results.", flag_values=flag_values
  )
  flags.mark_flags_as_required(["config", "workdir"], flag_values=flag_values)


def quiet_library_logs(argv):
  """Orbax, TFDS and grain log every step at INFO; show warnings unless --verbosity is given."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  return argv
