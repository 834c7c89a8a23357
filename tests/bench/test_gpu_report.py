"""bench/gpu_report.sh parses, and refuses an unknown mode (its smoke mode runs it end to end)."""

import shutil
import subprocess

import pytest

from helpers import ROOT

SCRIPT = ROOT / "bench" / "gpu_report.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def test_script_parses():
  subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_unknown_mode_is_refused():
  done = subprocess.run(["bash", str(SCRIPT), "nonsense"], capture_output=True, text=True)
  assert done.returncode == 2 and "usage" in done.stderr
