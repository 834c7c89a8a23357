"""Packing tokenized documents into fixed-length rows, streaming, with aligned annotations.

Each row is `[CLS]` followed by W = seq_len - 1 positions; every document is followed by
`[SEP]`; padding ([PAD], annotations 0) only ever ends a row. Three modes (`data.packing`):

  full_sentences  RoBERTa's FULL-SENTENCES: whole sentences, in corpus order, fill a row while
                  they fit and may cross document boundaries; a sentence that does not fit in
                  what is left starts the next row. A sentence longer than a whole row is cut
                  across rows (counted in the manifest as `units_split`).
  per_document    each document starts a new row; one longer than a row continues in the next
                  rows (counted as `units_split`); nothing is truncated.
  concatenate     one stream cut every W tokens (no padding but in the last row; sentences and
                  documents are cut anywhere).

`segment_ids[r, t]` is k when position t holds (a piece of) the k-th document of row r, from 1;
[CLS] belongs to the first, each [SEP] to the document it ends, padding is 0. Span annotations
(entity_ids, phrase_ids, ngram_ids) are renumbered per row: the k-th span of the row is k; a
span cut by a row break becomes one span in each row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mlmjax.data import annotate

MODES = ("full_sentences", "per_document", "concatenate")
SPAN_FIELDS = (annotate.ENTITY, annotate.PHRASE, annotate.NGRAM)
FIELD_DTYPES = {"input_ids": np.int32, "segment_ids": np.int32, annotate.ENTITY: np.int32,
                annotate.PHRASE: np.int32, annotate.POS: np.int8, annotate.NGRAM: np.int32}


def place(lengths: np.ndarray, width: int, mode: str, position: int = 0
          ) -> tuple[np.ndarray, int]:
  """Where each unit starts in the flat [rows * width] layout, and where the next would.

  Args:
    lengths: int64 [U] unit lengths (sentences, or documents), [SEP] included.
    width: W, positions per row after [CLS].
    mode: one of MODES.
    position: the first free flat position.
  Returns:
    starts int64 [U] and the flat position after the last unit.
  """
  if mode == "concatenate":
    ends = position + np.cumsum(lengths)
    return ends - lengths, int(ends[-1]) if len(ends) else position
  if mode not in MODES:
    raise ValueError(f"Unknown data.packing {mode!r}; use one of {MODES}.")
  fresh_always = mode == "per_document"
  starts = np.empty(len(lengths), np.int64)
  p = position
  # Sequential by nature (each unit's place depends on the previous); about 1 µs a unit.
  for i, n in enumerate(lengths.tolist()):
    col = p % width
    if col and (fresh_always or n > width - col):
      p += width - col
    starts[i] = p
    p += n
  return starts, p


def renumber_spans(values: np.ndarray) -> np.ndarray:
  """[N, S] span ids renumbered 1, 2, ... per row in order of appearance (0 stays 0).

  A new span begins wherever the id changes, so ids need only differ between neighbours.
  """
  inside = values > 0
  prev = np.concatenate([np.zeros_like(values[:, :1]), values[:, :-1]], axis=1)
  begins = inside & (values != prev)
  return np.where(inside, np.cumsum(begins, axis=1, dtype=np.int32), 0).astype(values.dtype)


class Packer:
  """Streams documents into rows; `add` returns the rows completed so far, `finish` the rest.

  Rows come out as {"input_ids": int32 [n, S], "segment_ids": int32 [n, S], field: [n, S]}.
  """

  def __init__(self, seq_len: int, mode: str, cls_id: int, sep_id: int, pad_id: int,
               fields: Sequence[str] = ()):
    if mode not in MODES:
      raise ValueError(f"Unknown data.packing {mode!r}; use one of {MODES}.")
    self.seq_len, self.width, self.mode = seq_len, seq_len - 1, mode
    self.cls_id, self.sep_id, self.pad_id = cls_id, sep_id, pad_id
    self.fields = tuple(fields)
    self.documents = 0  # documents seen: the next document's global index
    self.units_split = 0  # units (sentences or documents) longer than a row
    self._carry = self._empty(0)  # the partial last row, flat, shorter than W
    self._carry_len = 0

  def _empty(self, size: int) -> dict[str, np.ndarray]:
    out = {"input_ids": np.full(size, self.pad_id, np.int32),
           "doc": np.full(size, -1, np.int64)}
    out.update({f: np.zeros(size, FIELD_DTYPES[f]) for f in self.fields})
    return out

  def add(self, chunk: annotate.EncodedChunk) -> dict[str, np.ndarray]:
    """Packs the documents of `chunk` (none empty); returns the rows it completed."""
    num_docs = len(chunk.lengths)
    if not num_docs:
      return self._rows(self._empty(0), 0)
    # The chunk as one stream with [SEP] after each document.
    with_sep = chunk.lengths + 1
    ends = np.cumsum(with_sep)
    size = int(ends[-1])
    is_sep = np.zeros(size, bool)
    is_sep[ends - 1] = True
    stream = self._empty(size)
    stream["input_ids"][~is_sep] = chunk.ids
    stream["input_ids"][is_sep] = self.sep_id
    stream["doc"] = np.repeat(np.arange(self.documents, self.documents + num_docs), with_sep)
    for f in self.fields:
      stream[f][~is_sep] = chunk.fields[f]
    self.documents += num_docs

    # Units: sentences (a document's last one takes its [SEP]) or whole documents.
    unit_begins = np.zeros(size, bool)
    unit_begins[ends - with_sep] = True
    if self.mode == "full_sentences":
      unit_begins[~is_sep] |= chunk.sentence_start
    first = np.flatnonzero(unit_begins)
    lengths = np.diff(np.append(first, size))
    self.units_split += int((lengths > self.width).sum())
    starts, end = place(lengths, self.width, self.mode, self._carry_len)
    positions = np.repeat(starts - first, lengths) + np.arange(size)

    # per_document never adds to a started row, so its last row is complete at once.
    if self.mode == "per_document":
      end = -(-end // self.width) * self.width
    num_rows = -(-end // self.width)
    flat = self._empty(num_rows * self.width)
    for key, values in stream.items():
      flat[key][:self._carry_len] = self._carry[key][:self._carry_len]
      flat[key][positions] = values
    complete = end // self.width
    self._carry_len = end - complete * self.width
    self._carry = {k: v[complete * self.width:] for k, v in flat.items()}
    return self._rows({k: v[:complete * self.width] for k, v in flat.items()}, complete)

  def finish(self) -> dict[str, np.ndarray]:
    """The last, padded row (if a row was started)."""
    rows = self._rows(self._carry, 1 if self._carry_len else 0)
    self._carry, self._carry_len = self._empty(0), 0
    return rows

  def _rows(self, flat: dict[str, np.ndarray], num_rows: int) -> dict[str, np.ndarray]:
    w = self.width
    flat = {k: v[:num_rows * w].reshape(num_rows, w) for k, v in flat.items()}
    out = {"input_ids": np.concatenate(
        [np.full((num_rows, 1), self.cls_id, np.int32), flat["input_ids"]], axis=1)}
    doc = flat["doc"]
    # Documents in the stream are consecutive integers and a row never begins with padding, so
    # the k-th document of a row is its index minus that of the row's first one, plus 1.
    segments = np.where(doc >= 0, doc - doc[:, :1] + 1, 0).astype(np.int32)
    out["segment_ids"] = np.concatenate([np.ones((num_rows, 1), np.int32), segments], axis=1)
    for f in self.fields:
      values = np.concatenate([np.zeros((num_rows, 1), flat[f].dtype), flat[f]], axis=1)
      out[f] = renumber_spans(values) if f in SPAN_FIELDS else values
    return out


def pack(doc_ids: Sequence[np.ndarray], seq_len: int, cls_id: int, sep_id: int, pad_id: int,
         mode: str = "concatenate", sentence_starts: Sequence[np.ndarray] | None = None
         ) -> tuple[np.ndarray, np.ndarray]:
  """Packs documents in memory (see the module docstring); for tests and small corpora.

  Args:
    doc_ids: token ids of each document, without special tokens; none may be empty.
    seq_len: S, tokens per row including [CLS].
    cls_id, sep_id, pad_id: the special tokens' ids.
    mode: one of MODES.
    sentence_starts: for full_sentences, bool [len(doc)] per document (first token True).
  Returns:
    input_ids int32 [N, S] and segment_ids int32 [N, S].
  """
  lengths = np.array([len(d) for d in doc_ids], np.int64)
  ids = np.concatenate(doc_ids).astype(np.int32)
  starts = (np.concatenate(sentence_starts) if sentence_starts is not None else
            np.zeros(len(ids), bool))
  packer = Packer(seq_len, mode, cls_id, sep_id, pad_id)
  parts = [packer.add(annotate.EncodedChunk(ids, lengths, starts, {})), packer.finish()]
  return tuple(np.concatenate([p[k] for p in parts]) for k in ("input_ids", "segment_ids"))
