"""Freed host memory stays in the process: a large buffer freed and allocated again every step
is not faulted in from the kernel each time (train/host_memory.py)."""

import os
import subprocess
import sys
import textwrap

from helpers import ROOT

# A worker thread allocates a 200 MB buffer, fills it and frees it, ten times, as XLA's CPU
# client does with a step's temporary buffer; the process' minor page faults over the loop are
# printed. (Not numpy: it asks for huge pages, which fault rarely.)
SCRIPT = textwrap.dedent("""
    import ctypes, ctypes.util, resource, sys, threading
    from mlmjax.train import host_memory
    if sys.argv[1] == "keep":
      assert host_memory.keep_freed_memory()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, (ctypes.c_void_p,)
    def steps():
      for _ in range(10):
        buffer = libc.malloc(200_000_000)
        ctypes.memset(buffer, 1, 200_000_000)
        libc.free(buffer)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    worker = threading.Thread(target=steps)
    worker.start()
    worker.join()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def faults(mode: str) -> int:
  out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                       cwd=ROOT, timeout=120, check=True)
  return int(out.stdout.split()[-1])


def test_freed_buffers_are_not_faulted_in_again():
  pages = 200_000_000 // 4096  # one buffer's pages: 48,828
  default, kept = faults("default"), faults("keep")
  assert default > 8 * pages  # glibc maps and unmaps the buffer every time: 10 x its pages
  assert kept < 2 * pages  # kept: faulted in once, then reused


def test_kept_only_where_jax_runs_on_the_cpu():
  """Measured for XLA:CPU's step buffer only: on a GPU or TPU the setting (and its slower
  compiles) is not applied."""
  script = "from mlmjax.train import host_memory; print(host_memory.keep_freed_memory())"
  for platforms, applied in (("cpu", "True"), ("cuda", "False"), ("tpu,cpu", "False")):
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, timeout=120, check=True,
                         env={**os.environ, "JAX_PLATFORMS": platforms})
    assert out.stdout.split()[-1] == applied, (platforms, out.stdout)
