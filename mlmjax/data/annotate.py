"""Text annotations for masking: sentences, entities, phrases and syntax classes, per token.

Computed once at preparation (`prepare.py`), in the worker processes that tokenize, and stored
beside the token ids with the same row layout. Each annotation is found on the raw text as
character spans and mapped onto tokens through the tokenizer's offsets, so it does not depend on
the tokenizer's family (WordPiece, SentencePiece, byte-level BPE) or on lowercasing.

  entity_ids  int32  0 = none, k > 0 = the k-th entity span (numbered per row after packing).
  phrase_ids  int32  0 = none, k > 0 = the k-th multi-word phrase (ERNIE 1.0's phrase-level
                     units: two words or more), never sharing a token with an entity: a phrase
                     that overlaps one is dropped whole, since ERNIE masks the entity as its
                     own unit.
  pos_class   int8   0 unknown/special/punctuation, 1 content word, 2 function word, and from a
                     dependency parse 3 predicate, 4 core argument; every token of a word has
                     the word's class.

Words are the masking library's words (a word-start token and the continuation tokens after
it), so that "tokens of a word share its class" holds for the units the masker forms.

Two annotators find them on the text: spaCy (spacy_annotator.py: any installed pipeline,
`data.spacy_pipeline`) and rules (rules.py: no dependency; they also find the sentences that
full-sentence packing uses, whichever annotator finds the rest). This module holds what both
share: the annotations' names and values, the vocabulary fallback of pos_class (on the per-id
tables of token_tables.py), the alignment of character spans to tokens, and
`tokenize_and_annotate`, which the tokenizing workers (workers.py) run on each chunk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from mlmjax.data import rules

ENTITY, PHRASE, POS, NGRAM = "entity_ids", "phrase_ids", "pos_class", "ngram_ids"
ANNOTATIONS = (ENTITY, PHRASE, POS, NGRAM)
# Found on the text: entities and phrases always, POS classes with spaCy (the vocabulary
# fallback and the PMI n-grams are found on packed rows).
TEXT_ANNOTATIONS = (ENTITY, PHRASE, POS)
POS_UNKNOWN, POS_CONTENT, POS_FUNCTION, POS_PREDICATE, POS_ARGUMENT = 0, 1, 2, 3, 4


class AnnotationError(ValueError):
  """Annotations cannot be made as configured; the message names the fix."""


def word_index(input_ids: np.ndarray, word_start: np.ndarray, barrier: np.ndarray,
               segment_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Words of packed rows, flat: (word of each token int64 [B*S], first token of each word).

  A word begins at a word-start token, at every barrier token and after one, at a row start
  and at a document (segment) change, so none spans [SEP] or a document boundary.
  """
  ids = input_ids.reshape(-1)
  is_barrier = barrier[ids]
  starts = word_start[ids] | is_barrier
  starts[1:] |= is_barrier[:-1]
  starts[::input_ids.shape[1]] = True
  if segment_ids is not None:
    seg = segment_ids.reshape(-1)
    starts[1:] |= seg[1:] != seg[:-1]
  return np.cumsum(starts) - 1, np.flatnonzero(starts)


def share_word_class(values: np.ndarray, input_ids: np.ndarray,
                     tables: dict[str, np.ndarray]) -> np.ndarray:
  """[B, S] each token takes the value at its word's first token (words as `word_index`)."""
  word, first = word_index(input_ids, tables["word_start"], tables["barrier"])
  return values.reshape(-1)[first][word].reshape(values.shape)


def row_pos_classes(rows: dict[str, np.ndarray], tables: dict[str, np.ndarray]) -> np.ndarray:
  """int8 [B, S] pos_class of packed rows: the annotator's, shared by each word's tokens, or
  the vocabulary fallback when the annotator found none on the text."""
  if POS in rows:
    return share_word_class(rows[POS], rows["input_ids"], tables)
  return vocab_pos_classes(rows["input_ids"], tables)


def vocab_pos_classes(input_ids: np.ndarray, tables: dict[str, np.ndarray]) -> np.ndarray:
  """int8 [B, S] the vocabulary fallback of pos_class on packed rows.

  A one-token word has its token's class (2 if it is a function word); a longer word is a
  content word (1) unless its first token is punctuation (0). All tokens of a word share it.
  """
  word, first = word_index(input_ids, tables["word_start"], tables["barrier"])
  ids = input_ids.reshape(-1)
  first_class = tables["word_class"][ids[first]]
  single = np.diff(np.append(first, len(ids))) == 1
  cls = np.where(single, first_class, np.minimum(first_class, POS_CONTENT)).astype(np.int8)
  return cls[word].reshape(input_ids.shape)


# ------------------------------------------------------------------------ alignment to tokens


def spans_to_tokens(spans: np.ndarray, token_starts: np.ndarray,
                    token_ends: np.ndarray) -> np.ndarray:
  """Span ids per token: k (1-based, in order) on the tokens that overlap span k, else 0.

  Args:
    spans: int64 [K, 2] character spans [start, end), sorted, non-overlapping.
    token_starts, token_ends: int64 [T] token character offsets, nondecreasing.
  Returns:
    int32 [T]. A token overlapping two spans (a word tokenized differently by the annotator)
    goes to the first; spans that cover no token (only whitespace) are dropped, and the rest
    are numbered without gaps.
  """
  num_tokens = len(token_starts)
  ids = np.zeros(num_tokens + 1, np.int32)
  if not len(spans):
    return ids[:-1]
  first = np.searchsorted(token_ends, spans[:, 0], side="right")
  stop = np.searchsorted(token_starts, spans[:, 1], side="left")
  # A span may not reach back into the tokens of the span before it.
  first = np.maximum(first, np.concatenate([[0], np.maximum.accumulate(stop)[:-1]]))
  keep = first < stop
  first, stop = first[keep], stop[keep]
  k = np.arange(1, len(first) + 1, dtype=np.int32)
  np.add.at(ids, first, k)
  np.add.at(ids, stop, -k)
  return np.cumsum(ids[:-1], dtype=np.int32)


def words_to_tokens(words: np.ndarray, classes: np.ndarray, token_starts: np.ndarray,
                    token_ends: np.ndarray) -> np.ndarray:
  """int8 [T] class of the word holding each token's last character (0 outside words)."""
  if not len(words):
    return np.zeros(len(token_starts), np.int8)
  last = token_ends - 1
  index = np.searchsorted(words[:, 0], last, side="right") - 1
  inside = (index >= 0) & (token_ends > token_starts)
  inside &= last < words[np.maximum(index, 0), 1]
  return np.where(inside, classes[np.maximum(index, 0)], 0).astype(np.int8)


def sentence_start_tokens(starts: np.ndarray, token_ends: np.ndarray) -> np.ndarray:
  """bool [T]: the token begins a sentence (the first token, and the first that ends after
  each sentence start offset; a byte-level token may carry the space before it)."""
  flags = np.zeros(len(token_ends) + 1, bool)
  flags[0] = True
  flags[np.searchsorted(token_ends, starts, side="right")] = True
  return flags[:-1]


@dataclasses.dataclass
class EncodedChunk:
  """Token ids and annotations of consecutive documents, flat (documents end to end).

  Attributes:
    ids: int32 [T] token ids, without special tokens.
    lengths: int64 [D] tokens per document.
    sentence_start: bool [T] or None, first token of each sentence.
    fields: annotation name -> [T] array (entity_ids, phrase_ids int32 numbered through
      the chunk, pos_class int8).
  """
  ids: np.ndarray
  lengths: np.ndarray
  sentence_start: np.ndarray | None
  fields: dict[str, np.ndarray]


def without_empty_documents(chunk: EncodedChunk) -> tuple[EncodedChunk, int]:
  """The chunk without its documents that encode to no token, and how many those were (`ids`
  stays as it is: they had none)."""
  keep = chunk.lengths > 0
  return (EncodedChunk(chunk.ids, chunk.lengths[keep], chunk.sentence_start, chunk.fields),
          int((~keep).sum()))


def _flat_spans(per_doc: Sequence[Sequence[tuple[int, int]]], shifts: np.ndarray) -> np.ndarray:
  counts = [len(s) for s in per_doc]
  if not sum(counts):
    return np.zeros((0, 2), np.int64)
  flat = np.array([span for spans in per_doc for span in spans], np.int64)
  return flat + np.repeat(shifts, counts)[:, None]


def _drop_touching(phrase_ids: np.ndarray, entity_ids: np.ndarray) -> np.ndarray:
  """phrase_ids without the phrases that share a token with an entity (their ids become 0).

  Disjoint character spans can still meet in one token (a tokenizer that glues a word to
  the one after it); a phrase there is dropped whole, as an overlapping one is.
  """
  touching = np.unique(phrase_ids[(phrase_ids > 0) & (entity_ids > 0)])
  return np.where(np.isin(phrase_ids, touching), 0, phrase_ids).astype(np.int32)


def tokenize_and_annotate(tok, texts: Sequence[str], *, sentences: bool, wanted: Sequence[str],
                 annotator: Callable[[Sequence[str]], list[dict]] | None,
                 function_words: frozenset[str]) -> EncodedChunk:
  """Tokenizes `texts` (no special tokens) and makes the annotations found on text.

  Args:
    tok: a `tokenizers.Tokenizer`.
    texts: D documents.
    sentences: also mark sentence starts (full-sentence packing).
    wanted: the annotations to make here: entity_ids, phrase_ids, and pos_class with spaCy
      (the vocabulary fallback of pos_class works on packed rows: `vocab_pos_classes`).
    annotator: a `spacy_annotator.SpacyAnnotator`, or None for the rules.
    function_words: lowercase closed-class words, for the rules.
  """
  encodings = tok.encode_batch(list(texts), add_special_tokens=False)
  lengths = np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))
  ids = np.concatenate([np.array(e.ids, np.int32) for e in encodings] or [np.zeros(0, np.int32)])
  if not sentences and not wanted:
    return EncodedChunk(ids, lengths, None, {})
  # Documents end to end as one text: character offsets shift by the preceding texts'
  # lengths (+1, so that no span touches the next document), and one searchsorted maps all.
  shifts = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]], dtype=np.int64)
  offsets = np.concatenate([np.array(e.offsets, np.int64).reshape(-1, 2) for e in encodings])
  offsets += np.repeat(shifts, lengths)[:, None]
  starts, ends = offsets[:, 0], offsets[:, 1]
  sentence_offsets = [rules.sentence_starts(t) for t in texts]
  fields = {}
  spacy_out = annotator(texts) if annotator is not None and wanted else None
  if ENTITY in wanted or PHRASE in wanted:
    # Phrases need the entities too, to stay clear of them.
    entities = ([d["entity"] for d in spacy_out] if spacy_out is not None else
                [rules.rule_entities(t, function_words, s)
                 for t, s in zip(texts, sentence_offsets)])
    # Numbered through the chunk; packing renumbers them per row.
    entity_ids = spans_to_tokens(_flat_spans(entities, shifts), starts, ends)
    if ENTITY in wanted:
      fields[ENTITY] = entity_ids
  if PHRASE in wanted:
    phrases = ([d["phrase"] for d in spacy_out] if spacy_out is not None else
               [rules.rule_phrases(t, function_words, e) for t, e in zip(texts, entities)])
    fields[PHRASE] = _drop_touching(spans_to_tokens(_flat_spans(phrases, shifts), starts, ends),
                                    entity_ids)
  if POS in wanted:
    if spacy_out is None:
      raise AnnotationError("pos_class on text needs a spaCy pipeline; the vocabulary "
                            "fallback runs on packed rows.")
    classes = np.array([c for d in spacy_out for c in d["classes"]], np.int8)
    fields[POS] = words_to_tokens(_flat_spans([d["words"] for d in spacy_out], shifts),
                                  classes, starts, ends)
  sentence_start = None
  if sentences:
    sentence_start = sentence_start_tokens(_flat_spans(
        [[(s, s) for s in [0, *offs]] for offs in sentence_offsets], shifts)[:, 0], ends)
  return EncodedChunk(ids, lengths, sentence_start, fields)
