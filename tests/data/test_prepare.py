"""Tests of mlmjax.data.prepare: packing invariants, the files on disk, no-op and re-prepare."""

import json
import logging
import os

import numpy as np
import pytest

from mlmjax.data import corpora
from mlmjax.data import packing
from mlmjax.data import manifest as manifest_lib
from mlmjax.data import prepare as prepare_lib
from mlmjax.data import tokenizer as tokenizer_lib
from mlmjax.data import workers
from helpers import split_arrays

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
  input_ids, segment_ids = packing.pack(doc_ids, seq_len, CLS, SEP, PAD)

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
  # The config as JSON keeps it, less the keys that change how, not what, is prepared.
  expected = json.loads(json.dumps(files_config.to_dict()))
  assert manifest["data_config"] == {k: v for k, v in expected.items()
                                     if k not in manifest_lib.RUNTIME_KEYS}
  docs = corpora.load_documents(files_config)
  splits = corpora.split_documents(docs, files_config.validation_fraction, 0)
  for split, split_docs in zip(manifest_lib.SPLITS, splits):
    info = manifest["splits"][split]
    arrays = split_arrays(data_dir, split)
    input_ids, segment_ids = arrays["input_ids"], arrays["segment_ids"]
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
  train_file = tmp_path / "data" / manifest["splits"]["train"]["parts"][0]["files"]["input_ids"]
  mtime = train_file.stat().st_mtime_ns

  def no_loading(*args, **kwargs):
    raise AssertionError("read the corpus again")

  with monkeypatch.context() as m:
    m.setattr(corpora, "documents_by_split", no_loading)
    m.setattr(corpora, "tokenizer_sample", no_loading)
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


def test_prepare_again_when_the_rules_or_the_schema_change(tmp_path, files_config, caplog):
  caplog.set_level(logging.INFO)
  files_config.annotations = ("entity_ids", "pos_class")
  files_config.spacy_pipeline = ""
  manifest = prepare_lib.prepare(files_config, str(tmp_path))
  path = tmp_path / "data" / manifest_lib.MANIFEST
  # Data prepared by older rules, or whose pos_class meant something else, is stale.
  for key, old in (("annotator", "rules-v1"),
                   ("schema", {**manifest["schema"], "pos_class": {
                       **manifest["schema"]["pos_class"], "values": "0, 1 or 2"}})):
    path.write_text(json.dumps({**manifest, key: old}), encoding="utf-8")
    caplog.clear()
    again = prepare_lib.prepare(files_config, str(tmp_path))
    assert {**again, "timing": None} == {**manifest, "timing": None}
    assert ("the annotator changed (rules-v1 -> rules-v2)" if key == "annotator" else
            "the annotation schema changed (pos_class)") in caplog.text


def test_prepare_rejects_tiny_seq_len(tmp_path, files_config):
  files_config.seq_len = 2
  with pytest.raises(ValueError, match="seq_len"):
    prepare_lib.prepare(files_config, str(tmp_path))
  assert not os.path.exists(tmp_path / "data")


ALL = ("entity_ids", "phrase_ids", "pos_class", "ngram_ids")


def test_annotations_are_stored_beside_the_rows(tmp_path, files_config):
  files_config.annotations = ALL
  files_config.spacy_pipeline = ""
  files_config.pmi = {"min_count": 3, "vocab_size": 100}
  manifest = prepare_lib.prepare(files_config, str(tmp_path))
  assert manifest["annotations"] == list(ALL) and manifest["annotator"] == "rules-v2"
  assert set(manifest["schema"]) == {"segment_ids", *ALL}
  data_dir = tmp_path / "data"
  for split in manifest_lib.SPLITS:
    info = manifest["splits"][split]
    arrays = split_arrays(data_dir, split)
    ids = arrays["input_ids"]
    for name, dtype in [("entity_ids", np.int32), ("phrase_ids", np.int32),
                        ("pos_class", np.int8), ("ngram_ids", np.int32)]:
      values = arrays[name]
      assert values.shape == ids.shape and values.dtype == dtype
      assert info["dtype"][name] == np.dtype(dtype).name
      assert (values[ids == PAD] == 0).all() and (values[:, 0] == 0).all()
  train = split_arrays(data_dir, "train")
  assert set(np.unique(train["pos_class"])) == {0, 1, 2}
  assert train["ngram_ids"].max() >= 1
  entities, phrases = train["entity_ids"], train["phrase_ids"]
  assert phrases.max() >= 1 and not ((entities > 0) & (phrases > 0)).any()
  assert prepare_lib.prepare(files_config, str(tmp_path)) == manifest  # no-op
  files_config.annotations = ("pos_class",)
  fewer = prepare_lib.prepare(files_config, str(tmp_path))
  assert set(fewer["splits"]["train"]["dtype"]) == {"input_ids", "segment_ids", "pos_class"}
  assert fewer["pmi"] is None


def test_workers_give_the_same_data_as_one_process(tmp_path, files_config, monkeypatch):
  files_config.annotations = ALL
  files_config.spacy_pipeline = ""
  files_config.num_workers = 1
  serial = prepare_lib.prepare(files_config, str(tmp_path / "serial"))
  monkeypatch.setattr(workers, "CHUNK_DOCS", 2)  # several chunks in either split

  def not_here(*args, **kwargs):
    raise AssertionError("tokenized in the main process")

  # Spawned workers import the module afresh, without this patch.
  monkeypatch.setattr(workers.ChunkTokenizer, "__call__", not_here)
  files_config.num_workers = 2
  parallel = prepare_lib.prepare(files_config, str(tmp_path / "parallel"))
  assert parallel["shards"]["workers_per_process"] == 2
  assert parallel["splits"] == serial["splits"]
  for split in manifest_lib.SPLITS:
    a = split_arrays(tmp_path / "serial" / "data", split)
    b = split_arrays(tmp_path / "parallel" / "data", split)
    for name in a:
      np.testing.assert_array_equal(a[name], b[name])
  # The number of workers is not part of what makes prepared data stale.
  files_config.num_workers = 1
  assert prepare_lib.prepare(files_config, str(tmp_path / "parallel")) == parallel


@pytest.mark.parametrize("packing", ["full_sentences", "per_document"])
def test_a_line_longer_than_a_row_is_continued_and_counted(tmp_path, data_config, write_txt,
                                                           make_documents, packing, caplog):
  long_line = " ".join(make_documents(1, seed=3, max_words=40)[0].rstrip(".")
                       for _ in range(6))  # one line, no sentence end, ~200 tokens
  docs = make_documents(10) + [long_line, "\x07\x07"]
  config = data_config(source="files", paths=write_txt(tmp_path / "c.txt", docs), seq_len=16,
                       validation_fraction=0.3, packing=packing, split_seed=2)
  manifest = prepare_lib.prepare(config, str(tmp_path / "w"))
  tok = tokenizer_lib.get_tokenizer(config, str(tmp_path / "w"))
  info = {**manifest["splits"]["train"]}
  validation = manifest["splits"]["validation"]
  splits = corpora.split_documents(docs, 0.3, 2)
  assert info["units_split"] + validation["units_split"] >= 1
  assert "longer than a row (15 tokens) continue across rows" in caplog.text
  # Nothing is lost: the long line's tokens are all in the rows, in order.
  rows = split_arrays(tmp_path / "w" / "data", "train")["input_ids"]
  stream = rows[:, 1:][rows[:, 1:] != PAD].tolist()
  expected = [t for d in splits[0] for t in tok.encode(d, add_special_tokens=False).ids + [SEP]
              if tok.encode(d, add_special_tokens=False).ids]
  assert stream == expected
  # The control-character document has no token: left out, and counted.
  assert info["documents_without_tokens"] + validation["documents_without_tokens"] == 1


def test_prepare_rejects_bad_annotation_and_packing_keys(tmp_path, files_config):
  files_config.annotations = ("entities",)
  with pytest.raises(ValueError, match=r"Unknown data.annotations \['entities'\]"):
    prepare_lib.prepare(files_config, str(tmp_path))
  files_config.annotations = ()
  files_config.packing = "roberta"
  with pytest.raises(ValueError, match="Unknown data.packing 'roberta'"):
    prepare_lib.prepare(files_config, str(tmp_path))
