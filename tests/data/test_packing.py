"""Tests of mlmjax.data.packing: the three modes, streaming in chunks, annotations per row."""

import numpy as np
import pytest

from mlmjax.data import annotate
from mlmjax.data import packing

CLS, SEP, PAD = 2, 3, 0


def _documents(seed, num_docs=30, max_sentences=4, max_len=9):
  """Random documents as lists of sentences (lists of token ids >= 10)."""
  rng = np.random.default_rng(seed)
  return [[list(rng.integers(10, 99, size=rng.integers(1, max_len + 1)))
           for _ in range(rng.integers(1, max_sentences + 1))] for _ in range(num_docs)]


def _chunk(docs, entity_every=0, offset=0, names=(annotate.ENTITY,)):
  ids = [t for d in docs for s in d for t in s]
  lengths = np.array([sum(map(len, d)) for d in docs], np.int64)
  starts = np.array([i == 0 for d in docs for s in d for i in range(len(s))], bool)
  fields = {}
  if entity_every:  # a span on every k-th token, numbered through the chunk
    pos = offset + np.arange(len(ids))
    fields = {name: np.where(pos % entity_every == 0, pos + 1, 0).astype(np.int32)
              for name in names}
  return annotate.EncodedChunk(np.array(ids, np.int32), lengths, starts, fields)


def _pack(docs, seq_len, mode, chunk_docs=None, fields=()):
  packer = packing.Packer(seq_len, mode, CLS, SEP, PAD, fields)
  chunk_docs = chunk_docs or len(docs)
  offsets = np.cumsum([0] + [sum(map(len, d)) for d in docs])
  parts = [packer.add(_chunk(docs[i:i + chunk_docs], 3 if fields else 0, offsets[i], fields))
           for i in range(0, len(docs), chunk_docs)]
  parts.append(packer.finish())
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, packer


def _stream(rows):
  ids = rows["input_ids"][:, 1:]
  return ids[ids != PAD].tolist()


@pytest.mark.parametrize("mode", packing.MODES)
@pytest.mark.parametrize("seq_len", [6, 12, 40])
def test_every_mode_keeps_every_token_in_order(mode, seq_len):
  docs = _documents(seq_len)
  rows, _ = _pack(docs, seq_len, mode)
  assert rows["input_ids"].shape[1] == seq_len and (rows["input_ids"][:, 0] == CLS).all()
  assert _stream(rows) == [t for d in docs for t in sum(d, []) + [SEP]]
  is_pad = rows["input_ids"] == PAD
  assert (np.sort(is_pad, axis=1) == is_pad).all()  # padding only ends a row
  assert ((rows["segment_ids"] == 0) == is_pad).all()
  if mode == "concatenate":
    assert not is_pad[:-1].any()


def _row_sentences(rows, docs):
  """For each sentence (with its document's [SEP] after the last), the rows it lands in."""
  flat = rows["input_ids"][:, 1:]
  where = np.argwhere(flat != PAD)  # (row, col) of each stream token, in stream order
  out, at = [], 0
  for d in docs:
    for i, s in enumerate(d):
      n = len(s) + (i == len(d) - 1)
      out.append((n, set(where[at:at + n, 0].tolist()), where[at, 1]))
      at += n
  return out


def test_full_sentences_never_cut_a_sentence_that_fits():
  seq_len = 9  # sentences are 1 to 9 tokens (+ [SEP]): some longer than a row of 8
  docs = _documents(1, num_docs=60)
  rows, packer = _pack(docs, seq_len, "full_sentences")
  placements = _row_sentences(rows, docs)
  longer = 0
  for n, row_set, col in placements:
    if n <= seq_len - 1:
      assert len(row_set) == 1  # whole, in one row
    else:
      longer += 1
      assert col == 0  # a sentence longer than a row starts a row of its own
  assert packer.units_split == longer > 0
  # Rows do hold several documents (sentences cross document boundaries).
  assert rows["segment_ids"].max() >= 2


def test_per_document_starts_every_document_on_a_new_row():
  docs = _documents(2, num_docs=40)
  rows, packer = _pack(docs, 10, "per_document")
  assert rows["segment_ids"].max() == 1
  firsts = rows["input_ids"][:, 1]
  doc_rows = [-(-(sum(map(len, d)) + 1) // 9) for d in docs]  # rows each document needs
  assert len(rows["input_ids"]) == sum(doc_rows)
  starts = np.cumsum([0] + doc_rows[:-1])
  assert firsts[starts].tolist() == [d[0][0] for d in docs]
  assert packer.units_split == sum(n > 1 for n in doc_rows)


@pytest.mark.parametrize("mode", packing.MODES)
def test_streaming_in_chunks_gives_the_same_rows(mode):
  docs = _documents(3, num_docs=50)
  whole, _ = _pack(docs, 11, mode, fields=(annotate.ENTITY,))
  for chunk_docs in (1, 7):
    parts, _ = _pack(docs, 11, mode, chunk_docs, fields=(annotate.ENTITY,))
    for key in whole:
      np.testing.assert_array_equal(parts[key], whole[key], err_msg=f"{key} {chunk_docs}")


@pytest.mark.parametrize("field", [annotate.ENTITY, annotate.PHRASE])
def test_span_annotations_are_numbered_per_row(field):
  docs = _documents(4, num_docs=30)
  rows, _ = _pack(docs, 9, "concatenate", fields=(field,))
  ent = rows[field]
  assert ent.dtype == np.int32
  assert (ent[:, 0] == 0).all() and (ent[rows["input_ids"] == SEP] == 0).all()
  for row in ent:
    values = row[row > 0]
    # 1, 2, 3, ... in order of appearance, each span contiguous.
    firsts = values[np.concatenate([[True], values[1:] != values[:-1]])]
    assert firsts.tolist() == list(range(1, len(firsts) + 1))


def test_renumber_spans():
  values = np.array([[0, 7, 7, 0, 9, 4, 4, 0], [5, 5, 0, 0, 0, 0, 2, 2]], np.int32)
  np.testing.assert_array_equal(packing.renumber_spans(values),
                                [[0, 1, 1, 0, 2, 3, 3, 0], [1, 1, 0, 0, 0, 0, 2, 2]])


def test_unknown_mode():
  with pytest.raises(ValueError, match="Unknown data.packing 'roberta'"):
    packing.Packer(8, "roberta", CLS, SEP, PAD)
