"""The tokenizing workers: their module imports no JAX (each starts light), and they never
outlive their parent."""

import subprocess
import sys
import time

import psutil

from helpers import ROOT


def test_importing_the_worker_module_imports_no_jax():
  code = ("import sys; import mlmjax.data.workers; "
          "print(sorted(m for m in sys.modules if m == 'jax' or m.startswith('jax.')))")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, check=True)
  assert out.stdout.strip() == "[]", out.stdout[:500]
  # And the check can fail: the preparing module, which builds the masking tables, does.
  code = code.replace("mlmjax.data.workers", "mlmjax.data.prepare")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, check=True)
  assert "'jax'" in out.stdout


_ENCODING_FOREVER = r"""
import itertools, multiprocessing, sys
sys.path.insert(0, sys.argv[1])
from helpers import tiny_wordpiece
from mlmjax.data import workers
job = workers.Job(annotations=(), annotator="none", sentences=False, function_words=())
chunks = ((i, ["a b c w1 w2"] * 256) for i in itertools.count())
for key, _ in workers.tokenize_chunks(tiny_wordpiece(), chunks, job, workers=2):
  if key == 0:
    print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
"""


def test_workers_end_when_their_parent_is_killed():
  """A preparation killed with -9 (a preempted host) leaves no tokenizing worker behind."""
  parent = subprocess.Popen([sys.executable, "-c", _ENCODING_FOREVER, str(ROOT / "tests")],
                            stdout=subprocess.PIPE, text=True)
  workers = [psutil.Process(int(pid)) for pid in parent.stdout.readline().split()]
  assert len(workers) == 2 and all(w.is_running() for w in workers)
  parent.kill()
  parent.wait()
  deadline = time.monotonic() + 10
  while any(_alive(w) for w in workers) and time.monotonic() < deadline:
    time.sleep(0.1)
  assert not any(_alive(w) for w in workers)


def _alive(process: "psutil.Process") -> bool:
  try:
    return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
  except psutil.NoSuchProcess:
    return False
