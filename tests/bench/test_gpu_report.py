"""bench/gpu_report.sh parses, and refuses an unknown mode (its smoke mode runs it end to end)."""

import json
import os
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


def test_smoke_mode_runs_every_stage_and_writes_the_report(tmp_path):
  """The GPU report's own pipeline at tiny shapes on the CPU: every stage ends in the table."""
  # TMPDIR: the script's scratch folder goes under tmp_path too, cleaned with it.
  env = {**os.environ, "OUT": str(tmp_path), "JAX_PLATFORMS": "cpu", "TMPDIR": str(tmp_path)}
  done = subprocess.run(["bash", str(SCRIPT), "smoke"], capture_output=True, text=True, env=env,
                        timeout=600, check=False)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  report = (tmp_path / "gpu_report.md").read_text(encoding="utf-8")
  assert "Not measured" not in report, report  # no stage failed, timed out or was skipped
  for row in ("| mlmjax | tiny | 4×32 |", "| HF eager | tiny | 4×32 |",
              "| mlmjax | tiny | 4×128 |", "| masking: dynamic |", "| mlmjax, no dropout |",
              "| mlmjax, batch 8 |", "| mlmjax, XLA attention |"):
    assert row in report, row
  assert "× HF eager |" in report  # ours and HF's on one card, compared
  assert "- BERT-tiny s128, remat=none: largest batch that trains = ≥ 4" in report
  records = json.loads((tmp_path / "gpu_report.json").read_text(encoding="utf-8"))
  assert {r["kind"] for r in records} == {"train", "masking", "fit"}
  assert "device busy" in (tmp_path / "trace.md").read_text(encoding="utf-8")
