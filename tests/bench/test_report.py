"""The Markdown table of benchmark records, and its command."""

import json
import subprocess
import sys

from bench import report
from helpers import ROOT

COMMON = {"model": "base", "device": "NVIDIA H100 80GB HBM3"}
RECORDS = [
    {"kind": "train", "name": "HF torch.compile", "batch": 256, "seq_len": 128,
     "tokens_per_s": 400e3, "step_ms": 82.0, "compile_s": 40.0, "torch": "2.13", **COMMON},
    {"kind": "train", "name": "mlmjax", "batch": 256, "seq_len": 128, "tokens_per_s": 820e3,
     "step_ms": 40.0, "tflops": 447.0, "mfu": 0.452, "compile_s": 30.0, "peak_gib": 20.0,
     "jax": "0.10.2", **COMMON},
    {"kind": "train", "name": "mlmjax", "batch": 64, "seq_len": 512, "tokens_per_s": 760e3,
     "step_ms": 43.0, **COMMON},
    {"kind": "masking", "name": "span", "batch": 256, "seq_len": 128, "step_ms": 0.2,
     "share_of_step": 0.005, **COMMON},
    {"kind": "masking", "name": "random", "batch": 256, "seq_len": 128, "step_ms": 0.4,
     **COMMON},  # no share recorded: against the train step
    {"kind": "fit", "name": "mlmjax", "model": "large", "seq_len": 512, "remat": "full",
     "largest_batch": 512, "first_oom": 1024, "limit_reached": False, "plan_estimate": 600},
]


def test_table_rows_ours_first_with_same_card_ratios():
  lines = report.report(RECORDS, "H100").splitlines()
  assert lines[0] == "### H100"
  table = [l for l in lines if l.startswith("| ")]
  assert table[0] == "| " + " | ".join(report.HEADER) + " |"
  assert table[1].startswith("| mlmjax | base | 256×128 | 820,000 | 40.0 |")  # ours first
  assert table[1].endswith("| 447 | 45.2% | 30.0 | 20.0 | 2.05× HF torch.compile |")
  assert table[2].startswith("| HF torch.compile | base | 256×128 | 400,000 |")
  assert table[3].startswith("| mlmjax | base | 64×512 |")
  assert "| masking: span |" in table[4] and "0.50% of the step" in table[4]
  assert "1.00% of the step" in table[5]  # 0.4 ms of the 40 ms step
  assert "Device: NVIDIA H100 80GB HBM3; jax 0.10.2, torch 2.13." in lines
  assert lines[-1] == ("- BERT-large s512, remat=full: largest batch that trains = 512; first "
                       "batch out of memory: 1024; XLA's memory plan extrapolates to ~600")
  assert "goal" not in "\n".join(lines)  # targets are the docs' business, not the table's


def test_fit_line_says_when_the_search_stopped_short():
  capped = {**RECORDS[-1], "limit_reached": True, "first_oom": None, "plan_estimate": None}
  assert "= ≥ 512 (the search's limit); first batch out of memory: none tried" in (
      report.fit_line(capped))
  cut = {**RECORDS[-1], "done": False}
  assert "= ≥ 512 (the search was cut short)" in report.fit_line(cut)


def test_variants_against_the_unchanged_step():
  base = {"kind": "train", "name": "mlmjax", "model": "base", "batch": 256, "seq_len": 128,
          "tokens_per_s": 400.0, "step_ms": 80.0, "device": "gpu"}
  variant = {**base, "name": "mlmjax, no dropout", "tokens_per_s": 500.0, "step_ms": 64.0}
  table = report.report([base, variant])
  assert "| mlmjax, no dropout | base | 256×128 | 500 | 64.0 |" in table
  assert "1.25× mlmjax |" in table


def test_command_tables_files_and_writes_them_as_one(tmp_path):
  (tmp_path / "a.json").write_text(json.dumps(RECORDS[:2]))
  (tmp_path / "b.json").write_text(json.dumps(RECORDS[2:]))
  shown = subprocess.run(
      [sys.executable, "-m", "bench.report", "--title=T", f"--json_out={tmp_path / 'all.json'}",
       str(tmp_path / "a.json"), str(tmp_path / "b.json"), str(tmp_path / "missing.json")],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert shown.returncode == 0, shown.stderr[-2000:]
  assert shown.stdout == report.report(RECORDS, "T") + "\n"
  assert json.loads((tmp_path / "all.json").read_text()) == RECORDS
