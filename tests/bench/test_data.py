"""The data benchmark on a small corpus: one preparation, the loader (no timing is asserted)."""

import os

from bench import data as data_bench
from helpers import write_corpus

ANNOTATIONS = ("entity_ids", "pos_class", "ngram_ids")


def test_preparation_then_the_loader_on_one_core(tmp_path):
  corpus = write_corpus(tmp_path / "corpus.txt", 200)
  prep = data_bench.bench_prepare(str(tmp_path), str(corpus), 32, ANNOTATIONS)
  assert prep["tokens"] > 0 and prep["tokens_per_second"] > 0 and prep["workers"] >= 1
  assert os.path.exists(tmp_path / "tokenizer" / "tokenizer.json")  # trained once, kept
  cores = os.sched_getaffinity(0)
  load = data_bench.bench_loader(os.path.join(prep["workdir"], "data"), 4, 2, repeats=2)
  assert os.sched_getaffinity(0) == cores  # the pin to one core is undone
  assert load["shape"] == [4, 32] and load["tokens_per_second"] > 0
  assert set(ANNOTATIONS) <= set(load["fields"])
  lines = data_bench.table([("all", 32, prep)], [(32, load)], 4).splitlines()
  assert lines[2].startswith(f"| preparation, {prep['workers']} workers | all, S=32 | ")
  assert lines[3].startswith("| loader, 1 core | B=4, S=32, fields: ")
