"""Where a train step's device time goes: a summary of a `jax.profiler` trace.

    python -m bench.trace PROFILE_DIR_OR_perfetto_trace.json.gz [--steps=3] [--top=15]

`python -m bench.train --profile_dir=DIR` traces 3 steps and writes, next to XProf's files, a
Perfetto JSON trace. This reads it with nothing but the standard library (no TensorBoard, no
XProf), keeps the device's operations (GPU kernels; on CPU the XLA thunks), and prints the time per
step by kind of work (matrix products, attention, fusions, copies, collectives) and the
operations that cost most. It is what the optimisation notes in docs/BENCHMARKS.md cite.

Its first line compares the time the device was busy (the union of its operations' intervals)
with the wall time from the first operation to the last: the gap is time the device waited,
for the host (dispatch, Python) or between kernels.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re

from absl import app, flags

# First match wins: kernel and HLO names as XLA, cuBLAS, cuDNN and NCCL spell them.
KINDS = (
    ("attention", re.compile(r"cudnn|fmha|flash|attention|custom-call.*(sdpa|dot_product)", re.I)),
    ("matmul", re.compile(r"gemm|matmul|cublas|cutlass|xmma|wgmma|\bdot|convolution", re.I)),
    ("collective", re.compile(r"nccl|all-reduce|all-gather|reduce-scatter|all-to-all|collective",
                              re.I)),
    ("copy", re.compile(r"memcpy|memset|copy|transpose|dynamic-update-slice", re.I)),
    ("reduction fusion", re.compile(r"reduce|softmax|norm", re.I)),
    ("other fusion", re.compile(r"fusion|loop_|input_|kernel", re.I)),
)


def find_trace(path: str) -> str:
  """The newest perfetto_trace.json.gz at or under `path`."""
  if os.path.isfile(path):
    return path
  found = glob.glob(os.path.join(path, "**", "perfetto_trace.json.gz"), recursive=True)
  if not found:
    raise FileNotFoundError(f"no perfetto_trace.json.gz under {path}: trace with "
                            "jax.profiler.trace(dir, create_perfetto_trace=True), as "
                            "python -m bench.train --profile_dir does")
  return max(found, key=os.path.getmtime)


def device_ops(events: list[dict]) -> list[dict]:
  """The complete events that ran on a device: GPU streams if any, else XLA's CPU thunks."""
  names = {e["pid"]: e["args"]["name"] for e in events
           if e.get("ph") == "M" and e.get("name") == "process_name"}
  gpu = {pid for pid, name in names.items() if "/device:GPU" in name or "/device:TPU" in name}
  done = [e for e in events if e.get("ph") == "X" and e.get("dur", 0) > 0]
  if gpu:
    return [e for e in done if e["pid"] in gpu and "Stream" not in e.get("name", "")[:6]
            and not e.get("name", "").startswith("$")]
  return [e for e in done if "hlo_op" in e.get("args", {})]


def kind_of(event: dict) -> str:
  args = event.get("args", {})
  text = f"{event.get('name', '')} {args.get('hlo_op', '')} {args.get('long_name', '')}"
  for kind, pattern in KINDS:
    if pattern.search(text):
      return kind
  return "other"


def busy_time(ops: list[dict]) -> float:
  """Microseconds in which at least one of `ops` ran (overlapping streams counted once)."""
  busy, end = 0.0, float("-inf")
  for start, stop in sorted((e["ts"], e["ts"] + e["dur"]) for e in ops):
    if stop > end:
      busy += stop - max(start, end)
      end = stop
  return busy


def summarize(path: str, steps: int = 3, top: int = 15) -> str:
  with gzip.open(find_trace(path), "rt", encoding="utf-8") as f:
    trace = json.load(f)
  ops = device_ops(trace["traceEvents"] if isinstance(trace, dict) else trace)
  if not ops:
    return f"no device operations in {path}"
  total = sum(e["dur"] for e in ops)
  by_kind, by_op, calls = collections.Counter(), collections.Counter(), collections.Counter()
  for e in ops:
    label = e.get("args", {}).get("hlo_op") or e["name"]
    by_kind[kind_of(e)] += e["dur"]
    by_op[(label, kind_of(e))] += e["dur"]
    calls[(label, kind_of(e))] += 1
  per_step = lambda us: f"{us / steps / 1e3:.3f}"
  wall = max(e["ts"] + e["dur"] for e in ops) - min(e["ts"] for e in ops)
  busy = busy_time(ops)
  lines = [f"device busy {per_step(busy)} ms of {per_step(wall)} ms wall per step "
           f"({1 - busy / wall:.1%} idle: waiting for the host or between kernels)",
           f"device time {per_step(total)} ms per step over {steps} steps, {len(ops)} operations",
           "", "| kind | ms per step | share |", "|---|---|---|"]
  lines += [f"| {k} | {per_step(us)} | {us / total:.1%} |" for k, us in by_kind.most_common()]
  lines += ["", "| operation | kind | calls per step | ms per step | share |",
            "|---|---|---|---|---|"]
  lines += [f"| {op[:70]} | {kind} | {calls[(op, kind)] / steps:g} | {per_step(us)} | "
            f"{us / total:.1%} |" for (op, kind), us in by_op.most_common(top)]
  return "\n".join(lines)


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("give one path: a profile directory or a perfetto_trace.json.gz")
  print(summarize(argv[1], flags.FLAGS.steps, flags.FLAGS.top))


if __name__ == "__main__":
  flags.DEFINE_integer("steps", 3, "steps the trace holds")
  flags.DEFINE_integer("top", 15, "most costly operations listed")
  app.run(main)
