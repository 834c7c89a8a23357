r"""Peak memory and speed of `mlmjax-prepare` as the corpus grows (docs/BENCHMARKS.md).

    python bench/prepare_memory.py --copies=40,400 --out=/tmp/prepare_memory

The corpus is the embedded one (Python's documentation) written out COPIES times as .txt files
(one file a copy, ~1.5 MB each), prepared with the quickstart config. Each run starts from an
empty workdir; a sampler reads the resident memory of the command and of every process it
started (the tokenizing workers) every 0.1 s: the peak of the largest process and the peak of
their sum. `--processes=2` runs the same preparation as two JAX processes on this machine
(launch/local.py), each preparing its share of the shards with `--workers` workers; with
`--shard_mb` smaller than the corpus there are shards to share.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import psutil

from mlmjax.data import sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_corpus(folder: str, copies: int) -> int:
  """The embedded corpus, `copies` times, one .txt file a copy; returns the bytes written."""
  os.makedirs(folder, exist_ok=True)
  text = "\n\n".join(sources.embedded_documents()) + "\n"
  for i in range(copies):
    with open(os.path.join(folder, f"copy_{i:04d}.txt"), "w", encoding="utf-8") as f:
      f.write(text)
  return copies * len(text.encode("utf-8"))


class PeakMemory:
  """Samples the resident memory of a process tree until it ends."""

  def __init__(self, pid: int):
    self.root = psutil.Process(pid)
    self.largest = self.total = 0
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def _run(self) -> None:
    while self.root.is_running() and self.root.status() != psutil.STATUS_ZOMBIE:
      rss = []
      for p in [self.root, *self.root.children(recursive=True)]:
        try:
          rss.append(p.memory_info().rss)
        except psutil.Error:
          pass
      self.largest = max(self.largest, max(rss, default=0))
      self.total = max(self.total, sum(rss))
      time.sleep(0.1)

  def join(self) -> None:
    self._thread.join()


def run(copies: int, out: str, processes: int, workers: int, shard_mb: int) -> dict:
  corpus = os.path.join(out, f"corpus_{copies}")
  if not os.path.isdir(corpus):
    write_corpus(corpus, copies)
  size = sum(os.path.getsize(os.path.join(corpus, f)) for f in os.listdir(corpus))
  workdir = os.path.join(out, f"work_{copies}_{processes}")
  shutil.rmtree(workdir, ignore_errors=True)
  command = ["mlmjax-prepare", "--config=configs/quickstart.py", f"--workdir={workdir}",
             "--config.data.source=files", f"--config.data.paths={corpus}/*.txt",
             f"--config.data.num_workers={workers}",
             f"--config.data.shard_bytes={shard_mb << 20}"]
  if processes > 1:
    command = [sys.executable, os.path.join(ROOT, "launch", "local.py"),
               f"--processes={processes}", "--devices_per_process=1", "--", *command]
  start = time.perf_counter()
  proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  peak = PeakMemory(proc.pid)
  _, err = proc.communicate()
  peak.join()
  if proc.returncode:
    raise SystemExit(err[-3000:])
  with open(os.path.join(workdir, "data", "manifest.json"), encoding="utf-8") as f:
    manifest = json.load(f)
  tokens = sum(s["tokens"] for s in manifest["splits"].values())
  timing = manifest["timing"]
  return {"copies": copies, "megabytes": round(size / 1e6), "processes": processes,
          "workers": workers, "documents": sum(s["documents"] for s in
                                               manifest["splits"].values()),
          "tokens": tokens, "shards": manifest["shards"]["count"],
          "wall_s": round(time.perf_counter() - start, 1),
          "tokenizer_s": timing["tokenizer_seconds"],
          "tokens_per_s": timing["tokens_per_second"],
          "peak_largest_gb": round(peak.largest / 1e9, 2),
          "peak_all_gb": round(peak.total / 1e9, 2)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--copies", default="40,400")
  parser.add_argument("--processes", default="1", help="comma-separated process counts")
  parser.add_argument("--workers", type=int, default=2, help="tokenizing workers a process")
  parser.add_argument("--shard_mb", type=int, default=64, help="data.shard_bytes, in MiB")
  parser.add_argument("--out", default="/tmp/mlmjax_prepare_memory")
  args = parser.parse_args()
  print("| corpus | documents | tokens | shards | processes x workers | wall | tokenizer | "
        "tokens/s (after the tokenizer) | peak RSS, largest process | peak RSS, all |")
  print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
  for copies in map(int, args.copies.split(",")):
    for processes in map(int, args.processes.split(",")):
      r = run(copies, args.out, processes, args.workers, args.shard_mb)
      print(f"| {r['megabytes']} MB, {copies} copies | {r['documents']:,} | {r['tokens']:,} | "
            f"{r['shards']} | {processes} x {r['workers']} | {r['wall_s']} s | "
            f"{r['tokenizer_s']:.0f} s | {r['tokens_per_s']:,} | {r['peak_largest_gb']} GB | "
            f"{r['peak_all_gb']} GB |", flush=True)


if __name__ == "__main__":
  main()
