"""Tests of mlmjax.data.stats: token frequency and IDF at preparation, and vocab_tables."""

import numpy as np
import pytest

from helpers import split_arrays
from mlmjax.data import prepare as prepare_lib
from mlmjax.data import stats as stats_lib
from mlmjax.data import tokenizer as tokenizer_lib
from mlmjax.masking import tables as masking_tables


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, make_documents, write_txt, data_config):
  work = tmp_path_factory.mktemp("stats")
  docs = make_documents(40, seed=4)
  config = data_config(source="files", paths=write_txt(work / "c.txt", docs), vocab_size=150,
                       seq_len=24)
  manifest = prepare_lib.prepare(config, str(work))
  return manifest, tokenizer_lib.get_tokenizer(config, str(work)), config


def test_frequency_and_idf_count_the_training_split(prepared):
  manifest, tok, config = prepared
  data_dir = manifest["data_dir"]
  stats = stats_lib.load_stats(data_dir)
  rows = split_arrays(data_dir, "train")["input_ids"]
  expected = np.bincount(rows.reshape(-1), minlength=len(stats["frequency"]))
  expected[tok.token_to_id("[PAD]")] = 0
  np.testing.assert_array_equal(stats["frequency"], expected)
  from mlmjax.data import corpora  # pylint: disable=g-import-not-at-top
  train, _ = corpora.load_splits(config)
  assert stats["documents"] == len(train) == manifest["splits"]["train"]["documents"]
  df = np.zeros(len(stats["frequency"]), np.int64)
  for doc in train:
    df[np.unique(tok.encode(doc, add_special_tokens=False).ids)] += 1
  np.testing.assert_array_equal(stats["document_frequency"], df)
  the = tok.token_to_id("the")
  assert stats["idf"][the] == pytest.approx(np.log((1 + len(train)) / (1 + df[the])))
  assert stats["idf"][tok.token_to_id("[MASK]")] == pytest.approx(np.log(1 + len(train)))


def test_vocab_tables(prepared):
  manifest, tok, _ = prepared
  tables = stats_lib.vocab_tables(tok, manifest)
  same = stats_lib.vocab_tables(tok, manifest["data_dir"])
  np.testing.assert_array_equal(tables.idf, same.idf)
  assert isinstance(tables, masking_tables.VocabTables)
  assert tables.vocab_size == tok.get_vocab_size() and tables.mask_id == tok.token_to_id("[MASK]")
  stats = stats_lib.load_stats(manifest["data_dir"])
  np.testing.assert_allclose(tables.frequency, stats["frequency"])
  np.testing.assert_allclose(tables.idf, stats["idf"])
  special = np.asarray(tables.is_special)
  assert special.sum() == 5 and special[tok.token_to_id("[PAD]")]
  function = np.asarray(tables.function_word)
  assert function[tok.token_to_id("the")] and function[tok.token_to_id("from")]
  assert not function[tok.token_to_id("model")]
  starts = np.asarray(tables.is_word_start)
  assert not any(starts[i] for t, i in tok.get_vocab().items() if t.startswith("##"))


def test_vocab_tables_refuse_another_tokenizer(prepared, make_documents):
  manifest, _, _ = prepared
  other = tokenizer_lib.train_tokenizer(make_documents(30, seed=8), 140, lowercase=True)
  with pytest.raises(ValueError, match="computed with another tokenizer"):
    stats_lib.vocab_tables(other, manifest)
  with pytest.raises(FileNotFoundError, match="No token_stats.npz"):
    stats_lib.load_stats("/nonexistent")
