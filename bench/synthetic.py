"""Synthetic training data for the benchmarks: a vocabulary, its tables and packed rows.

A vocabulary of any size ([PAD] [UNK] [CLS] [SEP] [MASK], a few function words, then word and
'##' pieces) with Zipf-like frequencies, and rows packed as `data/packing.py` makes them
([CLS] doc [SEP] doc [SEP], right-padded when asked), with every annotation a masking strategy
reads. Nothing is read from disk, so a benchmark needs no prepared corpus.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from mlmjax import masking

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD, CLS, SEP = 0, 2, 3
FUNCTION_WORDS = ("the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "with")


def synthetic_vocab(size: int) -> list[str]:
  """Specials, function words, then whole-word pieces and '##' continuations (1 in 3)."""
  if size < len(SPECIALS) + len(FUNCTION_WORDS) + 8:
    raise ValueError(f"config.data.vocab_size={size} is too small for the synthetic vocabulary")
  fillers = [f"##p{i}" if i % 3 == 2 else f"w{i}"
             for i in range(size - len(SPECIALS) - len(FUNCTION_WORDS))]
  return list(SPECIALS) + list(FUNCTION_WORDS) + fillers


def synthetic_tables(vocab: list[str]) -> masking.VocabTables:
  """Tables with Zipf-like frequencies and IDF, so every strategy has what it needs."""
  rank = np.arange(1, len(vocab) + 1, dtype=np.float32)
  frequency = 1e7 / rank
  idf = np.log1p(len(vocab) / rank).astype(np.float32)
  return masking.VocabTables.from_vocab(vocab, SPECIALS, "[MASK]", frequency=frequency, idf=idf)


def synthetic_rows(tables: masking.VocabTables, batch: int, seq_len: int, seed: int = 0,
                   pad_fraction: float = 0.0) -> dict[str, np.ndarray]:
  """[B, S] packed rows with segment ids and every annotation (entity, n-gram, part of speech).

  Each row is [CLS] doc [SEP] doc [SEP] then [PAD]; ids are Zipf-distributed over the
  non-special vocabulary. With pad_fraction > 0, row lengths are uniform with that mean padding.
  """
  rng = np.random.default_rng(seed)
  is_special = np.asarray(tables.is_special)
  ordinary = np.flatnonzero(~is_special)
  p = 1.0 / np.arange(1, len(ordinary) + 1)
  ids = rng.choice(ordinary, size=(batch, seq_len), p=p / p.sum()).astype(np.int32)
  cut = int(round(2 * pad_fraction * (seq_len - 4)))
  lengths = seq_len - rng.integers(0, cut + 1, batch) if cut else np.full(batch, seq_len)
  segments = np.zeros((batch, seq_len), np.int32)
  for r, n in enumerate(lengths):
    split = int(rng.integers(2, n - 1))  # the first document's [SEP]
    ids[r, 0], ids[r, split], ids[r, n - 1], ids[r, n:] = CLS, SEP, SEP, PAD
    segments[r, :split + 1], segments[r, split + 1:n] = 1, 2
  return {"input_ids": ids, "segment_ids": segments, **annotations(ids, tables, rng)}


def annotations(ids: np.ndarray, tables: masking.VocabTables,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Entity, phrase and n-gram spans of two words each (about one in six words each; phrases
  never on entities), part-of-speech classes.

  Spans are numbered per row from 1 as `packing.renumber_spans` leaves them; pos_class follows
  `annotate.vocab_pos_classes`: 0 special, 1 content word, 2 function word.
  """
  special = np.asarray(tables.is_special)[ids]
  starts = np.asarray(tables.is_word_start)[ids] & ~special
  starts[:, 1] |= ~special[:, 1]  # a row's first piece starts a word even if it is '##'
  words = np.cumsum(starts, axis=1)  # word index of each token, from 1

  def spans(period: int, offset: np.ndarray | None = None) -> np.ndarray:
    offset = rng.integers(0, period, (ids.shape[0], 1)) if offset is None else offset
    phase = (words + offset) % period
    return np.where(((phase == 0) | (phase == 1)) & ~special & (words > 0),
                    (words + offset) // period + 1, 0).astype(np.int32)

  def renumber(x: np.ndarray) -> np.ndarray:
    new = np.zeros_like(x)
    for r in range(x.shape[0]):
      ks = np.unique(x[r][x[r] > 0])
      new[r] = np.where(x[r] > 0, np.searchsorted(ks, x[r]) + 1, 0)
    return new

  function = np.asarray(tables.function_word)[ids]
  pos = np.where(special, 0, np.where(function, 2, 1)).astype(np.int8)
  entity_offset = rng.integers(0, 6, (ids.shape[0], 1))
  return {"entity_ids": renumber(spans(6, entity_offset)),
          "phrase_ids": renumber(spans(6, entity_offset + 3)),  # words 3-4 of 6: off entities
          "ngram_ids": renumber(spans(5)), "pos_class": pos}


def batch_fields(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The fields a training batch carries for this masking config (what prepared data holds)."""
  return ("input_ids", "segment_ids") + masking.batch_fields(config.masking)
