"""The masking benchmark on a tiny prepared corpus (no timing is asserted)."""

import numpy as np
import pytest

from bench import masking as masking_bench
from bench import report
from helpers import write_corpus
from mlmjax import masking

SHAPES = [(4, 32), (2, 64)]
STRATEGIES = ["random", "whole_word"]  # one by tokens, one by words (beside HF whole_word_mask)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  path = tmp_path_factory.mktemp("masking_bench")
  return str(write_corpus(path / "corpus.txt", 300)), str(path / "work")


def test_rows_are_the_prepared_corpus_with_every_annotation(prepared):
  paths, workdir = prepared
  rows, tables, tok = masking_bench.prepared_rows(32, 4, f"{workdir}/s32", paths)
  assert set(rows) == {"input_ids", "segment_ids", "entity_ids", "phrase_ids", "pos_class",
                       "ngram_ids"}
  assert all(v.shape == (4, 32) for v in rows.values())
  assert np.all(rows["input_ids"][:, 0] == tok.token_to_id("[CLS]"))
  # What the rules and the PMI vocabulary found in it (the corpus has no names: no entities).
  assert (rows["phrase_ids"] > 0).any() and (rows["ngram_ids"] > 0).any()
  assert tables.vocab_size == tok.get_vocab_size()
  assert float(np.asarray(tables.frequency).sum()) > 0  # the training split's counts


def test_hf_collator_groups_tokens_into_our_words():
  transformers = pytest.importorskip("transformers")
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "##c", "##d", "e"]
  tables = masking.VocabTables.from_vocab(vocab)
  ids = np.array([[2, 5, 6, 7, 8, 9, 3, 0]])
  collator = transformers.DataCollatorForLanguageModeling
  special = np.asarray(tables.is_special)[ids].astype(int)
  words, _ = collator._calc_word_ids_and_prob_mask(masking_bench.word_offsets(ids, tables),
                                                   special)
  assert words.tolist() == [[-1, 1, 2, 2, 2, 3, -1, -1]]  # "b ##c ##d" is one word


def test_every_row_timed_and_tabled(prepared):
  pytest.importorskip("transformers")
  paths, workdir = prepared
  records = masking_bench.run(SHAPES, STRATEGIES, iters=2, workdir=workdir, paths=paths,
                              warmup_s=0.0)
  names = STRATEGIES + [f"HF collator{w} ({t})" for w in ("", " whole_word_mask")
                        for t in ("np", "pt")]
  assert [(r["name"], r["batch"], r["seq_len"]) for r in records] == [
      (n, b, s) for b, s in SHAPES for n in names]
  assert all(r["kind"] == "masking" and r["tokens_per_s"] > 0 for r in records)
  lines = masking_bench.table(records, SHAPES).splitlines()
  assert lines[0] == ("| what | [4,32] tokens/s | [2,64] tokens/s | x HF [4,32] | "
                      "x HF [2,64] |")
  assert len(lines) == 2 + len(names)
  assert lines[-1].startswith("| HF collator whole_word_mask (pt) |")
  assert "| masking: whole_word |  | 2×64 |" in report.report(records)  # any record tables


def test_table_compares_each_row_with_its_collator():
  def rec(name, seconds):
    return {"name": name, "batch": 2, "seq_len": 8,
            "tokens_per_s": seconds and 16 / seconds}
  records = [rec("random", 0.001), rec("whole_word", 0.002), rec("HF collator (np)", 0.01),
             rec("HF collator whole_word_mask (np)", 0.04), rec("HF collator (pt)", None)]
  text = masking_bench.table(records, [(2, 8)])
  rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()}
  assert "0.0M" in rows["random"] and "10.0x" in rows["random"]
  assert "20.0x" in rows["whole_word"]  # against the whole-word collator
  assert "transformers not installed" in rows["HF collator (pt)"]
