"""The XLA flags of every test process: fake CPU devices, and LLVM's optimisation off.

The suite's time is mostly XLA compiling small programs, each run a few times; with the CPU
backend's LLVM optimisation level at 0 a compile is far cheaper, the programs' results are
the same up to floating-point rounding, and every test compares programs compiled alike.
Measured on 2 cores: 4 of tests/test_train.py's tests in 96 s instead of 143 s.
"""

FAST_COMPILE = "--xla_backend_optimization_level=0"


def xla_flags(devices: int) -> str:
  return f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"
