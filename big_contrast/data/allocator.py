"""glibc malloc settings for the processes that run the input pipeline.

Decoding and augmenting an example allocates arrays of a few hundred KB to a
few MB (the decoded image, float32 copies of each view). glibc serves
allocations above its mmap threshold (128 KB at start) with fresh mappings,
and returns freed heap memory beyond its trim threshold to the OS; either way
the next example's arrays are faulted in page by page again. glibc raises both
thresholds by itself when a mapped block of up to 32 MB is freed, which a
pipeline's chunk buffers usually do, but not when its buffers are larger
(e.g. 256 examples of two 224 px views, or 64 of eight): then every temporary
is faulted in fresh. Measured on 2 cores with ``train_iterator`` over
``tools/bench_data.py``'s JPEGs, full SimCLR set, 224 px, in-process with 2
threads: chunks of 256 two-view examples 374 -> 488 examples/s with these
settings, chunks of 64 eight-view examples 118 -> 149; 2 workers, chunks of
256: 450-467 -> 573. At the default chunk size (64 two-view examples) glibc
gets there by itself and nothing changes.

``tune_malloc`` fixes the mmap threshold at glibc's 32 MB maximum and the trim
threshold at 256 MB, so freed memory is reused whatever the chunk size. The
pipeline calls it in its worker processes and, with ``data.tune_malloc``
(default True), in the process that builds it. It changes nothing but
allocation speed, and does nothing off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 << 20  # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit
TRIM_THRESHOLD = 256 << 20


def tune_malloc() -> bool:
  """Keep freed memory for reuse (see module docstring); True if glibc took the settings."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt)
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
    mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
  )


def tune_malloc_in_worker(worker_index: int, worker_count: int) -> None:
  """``tune_malloc`` as a grain ``mp_prefetch`` ``worker_init_fn``."""
  del worker_index, worker_count
  tune_malloc()
