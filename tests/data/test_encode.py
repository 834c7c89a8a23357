"""The tokenizing workers' module imports no JAX: each spawned worker starts light."""

import subprocess
import sys

from helpers import ROOT


def test_importing_the_worker_module_imports_no_jax():
  code = ("import sys; import mlmjax.data.encode; "
          "print(sorted(m for m in sys.modules if m == 'jax' or m.startswith('jax.')))")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, check=True)
  assert out.stdout.strip() == "[]", out.stdout[:500]
  # And the check can fail: the preparing module, which builds the masking tables, does.
  code = code.replace("mlmjax.data.encode", "mlmjax.data.prepare")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, check=True)
  assert "'jax'" in out.stdout
