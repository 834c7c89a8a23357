r"""Data benchmark: preparation tokens/s on every core, loader tokens/s on one core.

    python -m bench.data
    python -m bench.data --scale=8 --seq_lens=128,512 --batch_size=256

Corpus: Python's own documentation (the embedded corpus, ~0.37M WordPiece tokens), written
`--scale` times into a .jsonl file so that start-up costs (worker processes, imports) weigh
as they would on a real corpus. The WordPiece tokenizer (8192 ids) is trained once beforehand
and not timed.

Preparation: `prepare.prepare` end to end (read, tokenize, annotate, pack, write; PMI
vocabulary and matching; token statistics), `data.num_workers=0` (every core), once without
annotations and once with all three (rule-based entities, vocabulary POS classes, PMI
n-grams). tokens/s counts document tokens.

Loader: `pipeline.make_loader` over the prepared training split with all annotations, with
this process pinned to one core (os.sched_setaffinity), default read options; the rows are in
the page cache after the first epoch. tokens/s counts B x S per batch; the median of 5 runs
of `--loader_batches` batches is reported (docs/BENCHMARKS.md compares it with what one GPU
consumes).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import statistics
import tempfile
import time

import ml_collections
from absl import app, flags, logging

from bench import harness
from mlmjax import config as mlmjax_config
from mlmjax.data import corpora, pipeline, prepare, sources
from mlmjax.data import tokenizer as tokenizer_lib

FLAGS = flags.FLAGS


def _config(path: str, seq_len: int, annotations: tuple[str, ...]) -> ml_collections.ConfigDict:
  config = mlmjax_config.default_config().data
  config.update(source="files", paths=path, validation_fraction=0.01, seq_len=seq_len,
                vocab_size=8192, annotations=annotations, spacy_pipeline="")
  return config


def _write_corpus(directory: str, scale: int) -> tuple[str, int]:
  docs = sources.embedded_documents()
  path = os.path.join(directory, "corpus.jsonl")
  with open(path, "w", encoding="utf-8") as f:
    for copy in range(scale):
      for doc in docs:
        # A copy marker keeps the copies distinct documents (as a real corpus' would be).
        f.write(json.dumps({"text": f"Copy {copy}. {doc}"}) + "\n")
  return path, len(docs) * scale


def bench_prepare(directory: str, path: str, seq_len: int,
                  annotations: tuple[str, ...]) -> dict:
  """Times one preparation; the tokenizer is trained (untimed) if the workdir has none."""
  workdir = os.path.join(directory, f"work_{seq_len}_{len(annotations)}")
  config = _config(path, seq_len, annotations)
  tokenizer_dir = os.path.join(directory, "tokenizer")
  if os.path.exists(tokenizer_dir):
    shutil.copytree(tokenizer_dir, os.path.join(workdir, "tokenizer"), dirs_exist_ok=True)
  else:
    train, _ = corpora.load_splits(config)
    tokenizer_lib.get_tokenizer(config, workdir, documents=train)
    shutil.copytree(os.path.join(workdir, "tokenizer"), tokenizer_dir)
  start = time.perf_counter()
  manifest = prepare.prepare(config, workdir)
  seconds = time.perf_counter() - start
  tokens = sum(s["tokens"] for s in manifest["splits"].values())
  return {"workdir": workdir, "tokens": tokens, "seconds": seconds,
          "tokens_per_second": tokens / seconds,
          "workers": manifest["shards"]["workers_per_process"]}


def bench_loader(data_dir: str, batch_size: int, num_batches: int, repeats: int = 5) -> dict:
  """Median tokens/s of the training loader on one core (this process pinned to it)."""
  cores = os.sched_getaffinity(0)
  os.sched_setaffinity(0, {min(cores)})
  try:
    loader = pipeline.make_loader(data_dir, "train", batch_size, seed=0)
    batch = next(loader)
    # The first `num_batches` warm the page cache and the threads.
    times = harness.time_calls(lambda: next(loader), lambda _: None, num_batches * repeats,
                               repeats, warmup=num_batches)
    return {"tokens_per_second": batch["input_ids"].size / statistics.median(times),
            "fields": sorted(batch),
            "shape": list(batch["input_ids"].shape)}
  finally:
    os.sched_setaffinity(0, cores)


def table(prep: list[tuple[str, int, dict]], load: list[tuple[int, dict]],
          batch_size: int) -> str:
  lines = ["| measurement | setting | tokens | seconds | tokens/s |", "|---|---|---:|---:|---:|"]
  for name, seq_len, r in prep:
    lines.append(f"| preparation, {r['workers']} workers | {name}, S={seq_len} | "
                 f"{r['tokens']:,} | {r['seconds']:.2f} | {r['tokens_per_second']:,.0f} |")
  for seq_len, r in load:
    lines.append(f"| loader, 1 core | B={batch_size}, S={seq_len}, fields: "
                 f"{', '.join(r['fields'])} | | | {r['tokens_per_second']:,.0f} |")
  return "\n".join(lines)


def run(scale: int, seq_lens: list[int], batch_size: int, loader_batches: int) -> str:
  """Prepares the corpus written `scale` times at each row length, times the loader; the report."""
  directory = tempfile.mkdtemp(prefix="mlmjax_bench_data_")
  try:
    path, num_docs = _write_corpus(directory, scale)
    prep, load = [], []
    for seq_len in seq_lens:
      for name, wanted in (("no annotations", ()),
                           ("entity_ids + pos_class + ngram_ids",
                            ("entity_ids", "pos_class", "ngram_ids"))):
        if name == "no annotations" and seq_len != seq_lens[0]:
          continue
        prep.append((name, seq_len, bench_prepare(directory, path, seq_len, wanted)))
      load.append((seq_len, bench_loader(os.path.join(prep[-1][2]["workdir"], "data"),
                                         batch_size, loader_batches)))
    # Other work on the machine slows preparation (every core) far more than the loader.
    return "\n".join([
        f"mlmjax data benchmark, {datetime.date.today()}, {platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} cores (load average at the end "
        f"{os.getloadavg()[0]:.1f}), corpus: embedded x{scale} ({num_docs:,} documents)",
        table(prep, load, batch_size)])
  finally:
    shutil.rmtree(directory, ignore_errors=True)


def main(_):
  logging.set_verbosity(logging.WARNING)
  print(run(FLAGS.scale, [int(s) for s in FLAGS.seq_lens], FLAGS.batch_size,
            FLAGS.loader_batches))


if __name__ == "__main__":
  flags.DEFINE_integer("scale", 4, "copies of the embedded corpus in the benchmark corpus")
  flags.DEFINE_list("seq_lens", ["128", "512"], "row lengths S to prepare and load")
  flags.DEFINE_integer("batch_size", 256, "global batch size of the loader benchmark")
  flags.DEFINE_integer("loader_batches", 200, "batches per timed loader run")
  app.run(main)
