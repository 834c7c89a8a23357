"""What every benchmark shares: the one timer, and the result records with their JSON files.

Nothing here imports JAX or PyTorch: a benchmark passes in how to wait for its device (`sync`).

A record is a dict per measured case; a benchmark writes its records as one JSON list, and
`report.py` makes one Markdown table of any number of such files. Keys (absent or None when not
measured):
  kind          "train" (a training step), "masking" (one strategy alone, or a collator),
                "fit" (the largest batch that trains)
  name          what ran, e.g. "mlmjax", "HF torch.compile", "span"
  model         "base", "large", "tiny", ... (configs/bench.py's SHAPES) or "L2-d64"
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
import os
import time
from typing import Any, Callable, Iterable

GIB = 2**30


def time_calls(run: Callable[[], Any], sync: Callable[[Any], Any], calls: int,
               windows: int = 1, warmup: int = 0, warmup_s: float = 0.0,
               idle: Callable[[], Any] | None = None) -> list[float]:
  """Seconds per call of `run()` in each of `windows` windows of `calls // windows` calls.

  Each window ends in `sync(out)` on the last call's output (jax.block_until_ready, a CUDA
  synchronize), so it times finished work (a device finishes work in the order it was given).
  `idle()`, when given, runs before each window, off the clock: with a `sync` that does not
  wait, a window then times how long a call takes to return with the device idle (host time).
  Warm-up, untimed, each call synced: `warmup` calls, then more until `warmup_s` seconds have
  passed (by time where the first case timed would otherwise also pay for thread pools and
  caches warming up).
  """
  start, done = time.perf_counter(), 0
  while done < warmup or time.perf_counter() - start < warmup_s:
    sync(run())
    done += 1
  windows = max(1, min(windows, calls))
  per_window = max(1, calls // windows)
  times = []
  for _ in range(windows):
    if idle is not None:
      idle()
    start = time.perf_counter()
    for _ in range(per_window):
      out = run()
    sync(out)
    times.append((time.perf_counter() - start) / per_window)
  return times


def load_records(paths: Iterable[str]) -> list[dict]:
  """The records of JSON files, each holding a list of records (missing files are skipped)."""
  records = []
  for path in paths:
    try:
      with open(path, encoding="utf-8") as f:
        records += json.load(f)
    except FileNotFoundError:
      continue
  return records


def write_records(path: str, records: list[dict]) -> None:
  """Writes the records as one JSON list (nothing when `path` is empty)."""
  if path:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
      json.dump(records, out, indent=1)
