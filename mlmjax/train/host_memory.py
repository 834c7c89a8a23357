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

It was measured for the CPU backend only, so it applies only where JAX will run on the CPU
(`cpu_backend_expected`): on a GPU or TPU the step's buffers live in device memory, and the
host would pay the slower compiles for nothing shown.
"""

import ctypes
import ctypes.util
import importlib.util
import os

import jax

# Packages that give JAX an accelerator backend; with none installed it runs on the CPU.
ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                       "jax_rocm7_plugin", "libtpu")

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
_NEVER_TRIM = 2**31 - 1  # bytes (an int): the largest value mallopt takes


def cpu_backend_expected() -> bool:
  """Whether JAX will run on the CPU, told without starting any backend: the first platform
  JAX_PLATFORMS (or jax.config's jax_platforms) names, else whether no accelerator plugin is
  installed (a plugin without its device falls back to the CPU: then this says no)."""
  platforms = os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or ""
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  return not any(importlib.util.find_spec(name) for name in ACCELERATOR_PLUGINS)


def keep_freed_memory() -> bool:
  """On the CPU backend: one malloc arena, no mmap'd chunks, no trimming. True if set (glibc
  took all three), False elsewhere or on another backend."""
  if not cpu_backend_expected():
    return False
  name = ctypes.util.find_library("c")
  try:
    mallopt = ctypes.CDLL(name).mallopt
  except (OSError, AttributeError, TypeError):  # no C library to load, or not glibc
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, _NEVER_TRIM))
  return all([mallopt(param, value) == 1 for param, value in settings])
