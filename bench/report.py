"""Benchmarks: masking (`masking.py`), the train step (`train.py`, on `synthetic.py`'s rows), the
largest batch (`fit.py`), the PyTorch baseline (`torch_baseline.py`), and trace summaries
(`trace.py`).

This file holds what they share and nothing heavier than the standard library, so the PyTorch
baseline can use it without importing JAX: the result record every benchmark writes (one dict per
measured case, as JSON) and the one Markdown table `bench/gpu_report.sh` prints from them.

A record's keys (absent or None when not measured):
  kind          "train" (a training step), "masking" (one strategy alone), "fit" (largest batch)
  name          what ran, e.g. "mlmjax", "HF torch.compile", "span"
  model         "base", "large", "tiny" or "L2-d64" (layers and width)
  batch, seq_len
  tokens_per_s  rows x seq_len per second (padding included: the rows are full unless stated)
  step_ms       milliseconds per step (train) or per masking call (masking)
  host_ms       train: host milliseconds for one step call to return, the device idle
  tflops        model TFLOP/s per device, sparse-head FLOPs (`train/metrics.flops_per_token`)
  mfu           tflops / the device's dense bf16 datasheet peak
  compile_s     seconds to compile the step (torch.compile: its first step)
  peak_gib      peak device memory in use, GiB (the allocator's figure)
  share_of_step masking: step_ms / the train step's step_ms at the same [B, S]
  device        the accelerator's name
"""

from __future__ import annotations

import json
from typing import Iterable

GIB = 2**30
HEADER = ("run", "model", "B×S", "tokens/s", "step ms", "host ms", "TFLOP/s", "MFU",
          "compile s", "peak GiB", "vs reference")


def load_records(paths: Iterable[str]) -> list[dict]:
  """Records from JSON files, each holding a list of records (missing files are skipped)."""
  records = []
  for path in paths:
    try:
      with open(path, encoding="utf-8") as f:
        records += json.load(f)
    except FileNotFoundError:
      continue
  return records


def _fmt(value, spec: str, scale: float = 1.0) -> str:
  return "n/a" if value is None else format(value * scale, spec)


def _find(records: list[dict], **match) -> dict | None:
  for r in records:
    if all(r.get(k) == v for k, v in match.items()):
      return r
  return None


def _reference(r: dict, records: list[dict]) -> str:
  """The same-card ratio shown beside a train record."""
  if r["name"].startswith("HF"):
    return ""
  if r["name"].startswith("mlmjax, "):  # a variant: compared with the unchanged run
    ref = _find(records, kind="train", name="mlmjax", model=r["model"], seq_len=r["seq_len"])
    if ref and ref.get("tokens_per_s") and r.get("tokens_per_s"):
      return f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}× mlmjax"
  for name in ("HF torch.compile", "HF eager"):
    ref = _find(records, kind="train", name=name, model=r["model"], seq_len=r["seq_len"])
    if ref and ref.get("tokens_per_s") and r.get("tokens_per_s"):
      return f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}× {name}"
  return ""


def _row(r: dict, records: list[dict], base_step_ms: float | None) -> list[str]:
  shape = f"{r['batch']}×{r['seq_len']}"
  if r["kind"] == "masking":
    share = r.get("share_of_step")
    if share is None and base_step_ms:
      share = r["step_ms"] / base_step_ms
    return [f"masking: {r['name']}", r["model"], shape, _fmt(r.get("tokens_per_s"), ",.0f"),
            _fmt(r["step_ms"], ".3f"), "", "", "", _fmt(r.get("compile_s"), ".1f"), "",
            "n/a" if share is None else f"{share:.2%} of the step"]
  tflops = r.get("tflops")
  return [r["name"], r["model"], shape, _fmt(r.get("tokens_per_s"), ",.0f"),
          _fmt(r.get("step_ms"), ".1f"), _fmt(r.get("host_ms"), ".2f"),
          _fmt(tflops, ".0f" if (tflops or 0) >= 10 else ".3f"),
          _fmt(r.get("mfu"), ".1%"),
          _fmt(r.get("compile_s"), ".1f"), _fmt(r.get("peak_gib"), ".1f"),
          _reference(r, records)]


def _goals(records: list[dict]) -> list[str]:
  """One line per goal of the performance issue that these records can answer."""
  lines = []
  ours = {s: _find(records, kind="train", name="mlmjax", model="base", seq_len=s)
          for s in (128, 512)}
  hf = _find(records, kind="train", name="HF torch.compile", model="base", seq_len=128)
  if ours[128] and hf:
    lines.append(f"- BERT-base s128: mlmjax / HF torch.compile = "
                 f"{ours[128]['tokens_per_s'] / hf['tokens_per_s']:.2f}× (goal ≥ 2×)")
  if ours[128] and ours[512]:
    lines.append(f"- BERT-base s512 tokens/s = "
                 f"{ours[512]['tokens_per_s'] / ours[128]['tokens_per_s']:.0%} of s128 "
                 "(goal ≥ 90%)")
  masks = [r for r in records if r["kind"] == "masking" and r.get("share_of_step") is not None]
  if masks:
    worst = max(masks, key=lambda r: r["share_of_step"])
    lines.append(f"- slowest masking strategy: {worst['name']}, {worst['share_of_step']:.2%} "
                 f"of the step at {worst['batch']}×{worst['seq_len']} (goal < 1%)")
  for r in records:
    if r["kind"] == "fit":
      found = r.get("largest_batch")
      what = str(found)
      if r.get("limit_reached"):
        what = f"≥ {found} (the search's limit)"
      elif not r.get("done", True):
        what = f"≥ {found} (the search was cut short)"
      estimate = r.get("plan_estimate")
      lines.append(f"- BERT-{r['model']} s{r['seq_len']}, remat={r.get('remat')}: largest "
                   f"batch that trains = {what}; first batch out of memory: "
                   f"{r.get('first_oom') or 'none tried'}"
                   + (f"; XLA's memory plan extrapolates to ~{estimate}" if estimate else ""))
  return lines


def _order(r: dict) -> tuple:
  """Train rows by model, then sequence length, ours first; masking rows after them."""
  models = {"tiny": 0, "dispatch": 0, "mini": 0, "base": 1, "large": 2}
  names = {"mlmjax": 0, "HF torch.compile": 1, "HF eager": 2}
  return (r["kind"] == "masking", models.get(r["model"], 3), r["seq_len"],
          names.get(r["name"], 3))


def report(records: list[dict], title: str = "") -> str:
  """The Markdown table of all train and masking records, then the goal lines."""
  runs = sorted((r for r in records if r["kind"] in ("train", "masking")), key=_order)
  base = _find(records, kind="train", name="mlmjax")
  lines = [f"### {title}", ""] if title else []
  if runs:
    lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in runs:
      lines.append("| " + " | ".join(_row(r, records, base and base.get("step_ms"))) + " |")
    lines.append("")
  devices = sorted({r["device"] for r in records if r.get("device")})
  software = sorted({f"{k} {r[k]}" for r in records for k in ("jax", "torch", "transformers")
                     if r.get(k)})
  lines.append(f"Device: {', '.join(devices) or 'unknown'}"
               + (f"; {', '.join(software)}." if software else "."))
  return "\n".join(lines + _goals(records))


def time_steps(run, steps: int, windows: int, sync) -> list[float]:
  """Seconds per step in each of `windows` windows of `steps // windows` calls of `run()`.

  `sync(out)` blocks until the device has finished `out` (jax.block_until_ready, or a CUDA
  synchronize for PyTorch), so each window measures finished work.
  """
  import time  # pylint: disable=g-import-not-at-top
  windows = max(1, min(windows, steps))
  per_window = max(1, steps // windows)
  times = []
  for _ in range(windows):
    start = time.perf_counter()
    for _ in range(per_window):
      out = run()
    sync(out)
    times.append((time.perf_counter() - start) / per_window)
  return times
