"""Keep freed host memory in the process, so the CPU backend does not fault it back every step.

XLA's CPU client allocates each execution's temporary buffer with `posix_memalign` and frees it
when the step ends. For a buffer above glibc's mmap threshold (at most 32 MiB; the quickstart's
train step needs 210 MiB), glibc maps fresh pages for every step and unmaps them after, so the
kernel zero-fills and faults in every page again: on the 2-core CI machine that was a third of
the quickstart's CPU time (docs/BENCHMARKS.md). A thread's own arena cannot hold such a buffer
either, so the fix needs one arena, no mmap, and no trimming of the heap's top: the buffer then
stays in the process between steps, at the cost of never returning the peak to the system.

`keep_freed_memory()` sets that through `mallopt` before JAX starts its threads. It has a
price: with one arena, XLA's compiler threads contend for the allocator and a compilation takes
about 25% longer (quickstart: 6.5 s -> 8.0 s), against 34% more training steps a second. So the
commands that run many steps call it (mlmjax-train, mlmjax-quickstart, mlmjax-compare); the
benchmarks and tools, which compile much and step little, do not. In your own training script,
call it first thing. Elsewhere than glibc (macOS, musl) it does nothing.
"""

import ctypes
import ctypes.util

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
_NEVER_TRIM = 2**31 - 1  # bytes (an int): the largest value mallopt takes


def keep_freed_memory() -> bool:
  """One malloc arena, no mmap'd chunks, no trimming; True if glibc took all three."""
  name = ctypes.util.find_library("c")
  try:
    mallopt = ctypes.CDLL(name).mallopt
  except (OSError, AttributeError, TypeError):  # no C library to load, or not glibc
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, _NEVER_TRIM))
  return all([mallopt(param, value) == 1 for param, value in settings])
