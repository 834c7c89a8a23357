"""Synthetic training rows: a made-up WordPiece vocabulary of any size, and rows packed from it.

The vocabulary ([PAD] [UNK] [CLS] [SEP] [MASK], a few function words, then word pieces and '##'
continuations) becomes a real WordPiece tokenizer (`data.tokenizer.bert_tokenizer`), so its
tables are made as a trained tokenizer's are: the masking library's `VocabTables` (with
Zipf-like frequencies and IDF) and the per-id classes preparation reads
(`data.token_tables.from_tokenizer`). Rows look as `data/packing.py` makes them ([CLS] doc [SEP] doc
[SEP], right-padded when asked) and carry every annotation a strategy reads: entity, phrase and
n-gram spans placed every few words (there is no text to find them in), numbered per row by
`packing.renumber_spans`, and part-of-speech classes by preparation's vocabulary fallback
(`annotate.vocab_pos_classes`). Nothing is read from disk: a benchmark needs no corpus.
"""

from __future__ import annotations

import numpy as np
import tokenizers

from mlmjax import masking
from mlmjax.data import annotate, packing, token_tables
from mlmjax.data import tokenizer as tokenizer_lib

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD, CLS, SEP = 0, 2, 3
FUNCTION_WORDS = ("the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "with")


def synthetic_tokenizer(vocab_size: int) -> tokenizers.Tokenizer:
  """A WordPiece tokenizer of `vocab_size` ids: specials, function words, then pieces ('##' one
  in three)."""
  if vocab_size < len(SPECIALS) + len(FUNCTION_WORDS) + 8:
    raise ValueError(f"config.data.vocab_size={vocab_size} is too small for the synthetic "
                     "vocabulary")
  fillers = [f"##p{i}" if i % 3 == 2 else f"w{i}"
             for i in range(vocab_size - len(SPECIALS) - len(FUNCTION_WORDS))]
  vocab = [*SPECIALS, *FUNCTION_WORDS, *fillers]
  return tokenizer_lib.bert_tokenizer({t: i for i, t in enumerate(vocab)}, lowercase=True)


def synthetic_tables(tok: tokenizers.Tokenizer) -> masking.VocabTables:
  """The tokenizer's tables, with Zipf-like frequencies and IDF by id, so every strategy runs."""
  rank = np.arange(1, tok.get_vocab_size() + 1, dtype=np.float32)
  return masking.VocabTables.from_tokenizer(tok, frequency=1e7 / rank,
                                            idf=np.log1p(len(rank) / rank).astype(np.float32))


def synthetic_rows(tok: tokenizers.Tokenizer, batch: int, seq_len: int, seed: int = 0,
                   pad_fraction: float = 0.0) -> dict[str, np.ndarray]:
  """[B, S] packed rows with segment ids and every annotation (entity, n-gram, part of speech).

  Each row is [CLS] doc [SEP] doc [SEP] then [PAD]; ids are Zipf-distributed over the words.
  With pad_fraction > 0, row lengths are uniform with that mean padding.
  """
  rng = np.random.default_rng(seed)
  classes = token_tables.from_tokenizer(tok)
  words = np.flatnonzero(classes["word_class"] > annotate.POS_UNKNOWN)  # no special, no punctuation
  p = 1.0 / np.arange(1, len(words) + 1)
  ids = rng.choice(words, size=(batch, seq_len), p=p / p.sum()).astype(np.int32)
  cut = int(round(2 * pad_fraction * (seq_len - 4)))
  lengths = seq_len - rng.integers(0, cut + 1, batch) if cut else np.full(batch, seq_len)
  segments = np.zeros((batch, seq_len), np.int32)
  for r, n in enumerate(lengths):
    split = int(rng.integers(2, n - 1))  # the first document's [SEP]
    ids[r, 0], ids[r, split], ids[r, n - 1], ids[r, n:] = CLS, SEP, SEP, PAD
    segments[r, :split + 1], segments[r, split + 1:n] = 1, 2
  return {"input_ids": ids, "segment_ids": segments, **annotations(ids, classes, rng)}


def annotations(ids: np.ndarray, classes: dict[str, np.ndarray],
                rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Entity, phrase and n-gram spans of two words each (about one in six words each; phrases
  never on entities) and part-of-speech classes, as preparation stores them.

  `classes`: `token_tables.from_tokenizer` of the tokenizer (word starts, barriers, word classes).
  """
  word, _ = annotate.word_index(ids, classes["word_start"], classes["barrier"])
  word = word.reshape(ids.shape)
  barrier = classes["barrier"][ids]

  def spans(period: int, offset: np.ndarray) -> np.ndarray:
    """Words 0 and 1 of every `period` words (counted from `offset`) as one span each."""
    at = word + offset
    inside = (at % period < 2) & ~barrier
    return packing.renumber_spans(np.where(inside, at // period + 1, 0).astype(np.int32))

  entity_offset = rng.integers(0, 6, (ids.shape[0], 1))
  return {"entity_ids": spans(6, entity_offset),
          "phrase_ids": spans(6, entity_offset + 3),  # words 3-4 of 6: off the entities
          "ngram_ids": spans(5, rng.integers(0, 5, (ids.shape[0], 1))),
          "pos_class": annotate.vocab_pos_classes(ids, classes)}
