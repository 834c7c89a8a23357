"""Tests of mlmjax.data.prepare: packing invariants, the files on disk, no-op and re-prepare."""

import json
import os

import numpy as np
import pytest

from mlmjax.data import corpora
from mlmjax.data import prepare as prepare_lib
from mlmjax.data import tokenizer as tokenizer_lib

CLS, SEP, PAD = 2, 3, 0


def _reference_pack(doc_ids, seq_len):
  """Packing written the slow way: one token at a time."""
  rows, segs = [], []
  row, seg, k, fresh = [CLS], [1], 1, True
  for ids in doc_ids:
    if not fresh:
      k += 1
    for token in list(ids) + [SEP]:
      if len(row) == seq_len:
        rows.append(row)
        segs.append(seg)
        row, seg, k = [CLS], [1], 1
      row.append(token)
      seg.append(k)
    fresh = False
  rows.append(row + [PAD] * (seq_len - len(row)))
  segs.append(seg + [0] * (seq_len - len(seg)))
  return np.array(rows), np.array(segs)


def _check_segments(input_ids, segment_ids):
  """Segment ids start at 1 and step up by one right after each [SEP] inside a row."""
  real = input_ids != PAD
  assert ((segment_ids > 0) == real).all() and (segment_ids[:, 0] == 1).all()
  after_sep = np.zeros_like(real)
  after_sep[:, 1:] = (input_ids[:, :-1] == SEP) & real[:, 1:]
  steps = np.diff(segment_ids, axis=1)
  np.testing.assert_array_equal(steps[real[:, 1:]], after_sep[:, 1:][real[:, 1:]].astype(int))


@pytest.mark.parametrize("seq_len", [3, 8, 16])
def test_pack_invariants(seq_len):
  rng = np.random.default_rng(seq_len)
  # Short documents, one exactly filling a row with its [SEP], and one spanning several rows.
  lengths = list(rng.integers(1, 6, size=20)) + [seq_len - 2, 3 * seq_len] + [1, 2]
  doc_ids = [rng.integers(10, 100, size=n).astype(np.int32) for n in lengths]
  input_ids, segment_ids = prepare_lib.pack(doc_ids, seq_len, CLS, SEP, PAD)

  assert input_ids.dtype == segment_ids.dtype == np.int32
  assert input_ids.shape == segment_ids.shape and input_ids.shape[1] == seq_len
  assert (input_ids[:, 0] == CLS).all() and (segment_ids[:, 0] == 1).all()
  is_pad = input_ids == PAD
  # Padding only at the end of a row, and only in the last row.
  assert (np.sort(is_pad, axis=1) == is_pad).all()
  assert not is_pad[:-1].any()
  assert ((segment_ids == 0) == is_pad).all()
  # Every document token exactly once, in order, each document followed by [SEP].
  stream = input_ids[:, 1:][~is_pad[:, 1:]]
  assert stream.tolist() == [t for ids in doc_ids for t in list(ids) + [SEP]]
  # Segment ids count the documents within each row.
  expected_ids, expected_segments = _reference_pack(doc_ids, seq_len)
  np.testing.assert_array_equal(input_ids, expected_ids)
  np.testing.assert_array_equal(segment_ids, expected_segments)


def test_prepare_writes_arrays_and_manifest(tmp_path, files_config):
  manifest = prepare_lib.prepare(files_config, str(tmp_path))
  data_dir = tmp_path / "data"
  assert json.loads((data_dir / "manifest.json").read_text()) == manifest
  tok = tokenizer_lib.get_tokenizer(files_config, str(tmp_path))
  assert manifest["tokenizer"]["sha256"] == tokenizer_lib.tokenizer_hash(tok)
  assert manifest["data_config"] == files_config.to_dict()
  docs = corpora.load_documents(files_config)
  splits = corpora.split_documents(docs, files_config.validation_fraction, 0)
  for split, split_docs in zip(prepare_lib.SPLITS, splits):
    info = manifest["splits"][split]
    input_ids = np.load(data_dir / info["files"]["input_ids"])
    segment_ids = np.load(data_dir / info["files"]["segment_ids"])
    assert list(input_ids.shape) == list(segment_ids.shape) == info["shape"]
    assert input_ids.shape[1] == files_config.seq_len and input_ids.dtype == np.int32
    assert info["documents"] == len(split_docs)
    # The rows hold exactly the documents' tokens, in corpus order.
    stream = input_ids[:, 1:][input_ids[:, 1:] != PAD]
    expected = [t for d in split_docs for t in tok.encode(d, add_special_tokens=False).ids + [SEP]]
    assert stream.tolist() == expected
    assert info["tokens"] == len(expected) - len(split_docs)
    assert info["rows"] == input_ids.shape[0] and info["padding"] == (input_ids == PAD).sum()
    _check_segments(input_ids, segment_ids)


def test_prepare_is_a_no_op_on_rerun(tmp_path, files_config, monkeypatch):
  manifest = prepare_lib.prepare(files_config, str(tmp_path))
  train_file = tmp_path / "data" / "train.npy"
  mtime = train_file.stat().st_mtime_ns

  def no_loading(*args, **kwargs):
    raise AssertionError("read the corpus again")

  with monkeypatch.context() as m:
    m.setattr(corpora, "load_documents", no_loading)
    assert prepare_lib.prepare(files_config, str(tmp_path)) == manifest
  assert train_file.stat().st_mtime_ns == mtime
  # A changed config key prepares again.
  files_config.seq_len = 24
  assert prepare_lib.prepare(files_config, str(tmp_path))["splits"]["train"]["shape"][1] == 24


def test_prepare_again_when_the_tokenizer_or_corpus_changes(tmp_path, files_config,
                                                            make_documents):
  tokenizer_path = tmp_path / "tok" / "tokenizer.json"
  for vocab_size in (150, 180):
    tok = tokenizer_lib.train_tokenizer(make_documents(60), vocab_size, lowercase=True)
    tokenizer_lib.save_tokenizer(tok, str(tokenizer_path.parent))
    files_config.tokenizer_path = str(tokenizer_path)  # same path, new file the second time
    manifest = prepare_lib.prepare(files_config, str(tmp_path))
    assert manifest["tokenizer"]["vocab_size"] == vocab_size
    assert manifest["tokenizer"]["sha256"] == tokenizer_lib.tokenizer_hash(tok)
  # An edited corpus file prepares again.
  corpus_file = files_config.paths.split(",")[0].replace("*.txt", "a.txt")
  with open(corpus_file, "a", encoding="utf-8") as f:
    f.write("\n\nA brand new document about packing rows.\n")
  again = prepare_lib.prepare(files_config, str(tmp_path))
  assert again["splits"]["train"]["documents"] + again["splits"]["validation"]["documents"] == (
      manifest["splits"]["train"]["documents"] + manifest["splits"]["validation"]["documents"]
      + 1)


def test_prepare_rejects_tiny_seq_len(tmp_path, files_config):
  files_config.seq_len = 2
  with pytest.raises(ValueError, match="seq_len"):
    prepare_lib.prepare(files_config, str(tmp_path))
  assert not os.path.exists(tmp_path / "data")
