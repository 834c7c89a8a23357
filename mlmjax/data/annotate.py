"""Text annotations for masking: sentences, entities and part-of-speech classes, per token.

Computed once at preparation (`prepare.py`), in the worker processes that tokenize, and stored
beside the token ids with the same row layout. Each annotation is found on the raw text as
character spans and mapped onto tokens through the tokenizer's offsets, so it does not depend on
the tokenizer's family (WordPiece, SentencePiece, byte-level BPE) or on lowercasing.

  entity_ids  int32  0 = none, k > 0 = the k-th entity span (numbered per row after packing).
  pos_class   int8   0 unknown/special/punctuation, 1 content word, 2 function word; every
                     token of a word has the word's class.

Words are the masking library's words (a word-start token and the continuation tokens after
it), so that "tokens of a word share its class" holds for the units the masker forms.

Two annotators:
  spaCy   any installed pipeline (`data.spacy_pipeline`: a package name or a folder); entities
          from its `ner` / `entity_ruler`, classes from the universal POS tags its tagger,
          morphologizer or attribute_ruler sets.
  rules   no dependency (version RULES_VERSION). Entities: dates ("5 May 2021",
          "May 5, 2021", "2021-05-05", "5/5/21", "May 2021"), numbers ("42", "3.14",
          "1,000", "15%"), and names: two or more capitalised words joined by spaces (a lower
          case particle such as "of", "van", "de" may join them: "Bank of England"), where a
          name starting a sentence loses its first word, because at a sentence start any word
          is capitalised. Classes come from the vocabulary (`vocab_pos_classes`, on packed
          rows): a word of one token that is in the English closed-class list the masking
          library uses (`masking.tables.DEFAULT_FUNCTION_WORDS`) is a function word, any other
          word a content word, punctuation and specials unknown.

Sentences (used by full-sentence packing) are always found by rule: a run of . ! or ? (and
closing quotes or brackets) followed by whitespace and an upper-case letter, digit or opening
quote, or a blank line. Abbreviations such as "e.g. Foo" end a sentence too; that only moves a
row break.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np

ENTITY, POS, NGRAM = "entity_ids", "pos_class", "ngram_ids"
ANNOTATIONS = (ENTITY, POS, NGRAM)
# Found on the text: entities always, POS classes with spaCy (the vocabulary fallback and the
# PMI n-grams are found on packed rows).
TEXT_ANNOTATIONS = (ENTITY, POS)
POS_UNKNOWN, POS_CONTENT, POS_FUNCTION = 0, 1, 2
RULES_VERSION = 1
RULES = f"rules-v{RULES_VERSION}"
DEFAULT_SPACY_PACKAGE = "en_core_web_sm"  # what data.spacy_pipeline="auto" looks for

# Universal POS tags (spaCy's `token.pos_`) by class; PUNCT, SYM, X, SPACE stay unknown (0).
CONTENT_TAGS = frozenset({"NOUN", "PROPN", "VERB", "ADJ", "ADV", "NUM", "INTJ"})
FUNCTION_TAGS = frozenset({"ADP", "AUX", "CCONJ", "DET", "PART", "PRON", "SCONJ"})


class AnnotationError(ValueError):
  """Annotations cannot be made as configured; the message names the fix."""


# ------------------------------------------------------------------------------------ rules

_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])|\n[ \t]*\n\s*")

_MONTH = (r"(?:January|February|March|April|May|June|July|August|September|October|November|"
          r"December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)\.?")
_DAY = r"\d{1,2}(?:st|nd|rd|th)?"
_DATE = (rf"{_MONTH}[ \t]+{_DAY},?[ \t]+\d{{4}}\b|{_DAY}[ \t]+{_MONTH}[ \t]+\d{{4}}\b|"
         rf"{_MONTH}[ \t]+\d{{4}}\b|{_MONTH}[ \t]+{_DAY}\b|\d{{4}}-\d{{2}}-\d{{2}}\b|"
         r"\d{1,2}/\d{1,2}/\d{2,4}\b")
# Not glued to letters ("utf8", "x2" are not numbers) nor part of a dotted name ("3.x").
_NUMBER = r"(?<![\w.])[-+]?\d+(?:[.,]\d+)*%?(?![\w])"
_CAP = r"[A-ZÀ-ÖØ-Þ][\w'’-]*"
_PARTICLE = r"(?:of|the|van|von|der|den|de|del|della|da|du|la|le|al|bin|ibn)"
_NAME = rf"{_CAP}(?:[ \t]+(?:{_PARTICLE}[ \t]+)?{_CAP})+"
# The lookahead fails fast on the characters no entity starts with (10x faster).
_ENTITY = re.compile(rf"(?=[A-ZÀ-ÖØ-Þ0-9+-])(?:(?P<date>{_DATE})|(?P<number>{_NUMBER})|"
                     rf"(?P<name>{_NAME}))")
_FIRST_WORD = re.compile(rf"{_CAP}[ \t]+(?:{_PARTICLE}[ \t]+)?")


def sentence_starts(text: str) -> list[int]:
  """Character offsets where a sentence begins after the first (see the module docstring)."""
  return [m.end() for m in _SENTENCE_END.finditer(text) if m.end() < len(text)]


def rule_entities(text: str, starts: Iterable[int] | None = None) -> list[tuple[int, int]]:
  """Entity character spans [start, end) by rule, in order, non-overlapping.

  Args:
    text: one document.
    starts: sentence start offsets (default: `sentence_starts(text)`); 0 is always one.
  """
  at_start = {0, *(sentence_starts(text) if starts is None else starts)}
  spans = []
  for m in _ENTITY.finditer(text):
    start, end = m.span()
    if m.lastgroup == "name" and start in at_start:
      # Any first word of a sentence is capitalised: keep the name only if two capitalised
      # words remain without it.
      start = _FIRST_WORD.match(text, start).end()
      if not re.fullmatch(_NAME, text[start:end]):
        continue
    spans.append((start, end))
  return spans


def token_classes(vocab: Sequence[str | None], special: np.ndarray,
                  function_words: frozenset[str], convention: str,
                  word_start: np.ndarray) -> dict[str, np.ndarray]:
  """Per-id tables for word grouping and the vocabulary part-of-speech fallback.

  Args:
    vocab: token of each id (None for holes).
    special: bool [V] special tokens.
    function_words: lowercase English closed-class words.
    convention: the vocabulary's word-start convention ("wordpiece", "sentencepiece",
      "byte_level"; `masking.tables.detect_convention`).
    word_start: bool [V] the token begins a word (specials too).
  Returns:
    word_start bool [V]: as given.
    barrier bool [V]: specials and word-start tokens with no letter or digit (punctuation).
    word_class int8 [V]: class of a one-token word: 2 function word, 1 other word, 0 special
      or punctuation.
  """
  marker = {"sentencepiece": "\u2581", "byte_level": "\u0120"}.get(convention, "")
  bare = ["" if t is None else t[len(marker):] if marker and t.startswith(marker) else t
          for t in vocab]
  # A bare SentencePiece "▁" only marks the start of the word that follows: not punctuation.
  punctuation = np.array([t is None or (b != "" and not any(ch.isalnum() for ch in b))
                          for t, b in zip(vocab, bare)])
  word_class = np.where(punctuation | special, POS_UNKNOWN, POS_CONTENT).astype(np.int8)
  word_class[np.array([b.lower() in function_words for b in bare]) & ~special] = POS_FUNCTION
  return {"word_start": word_start, "barrier": special | (word_start & punctuation),
          "word_class": word_class}


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


# ------------------------------------------------------------------------------------ spaCy


def _spacy():
  try:
    import spacy  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise AnnotationError("data.spacy_pipeline names a spaCy pipeline, but spaCy is not "
                          "installed: pip install 'mlmjax[spacy]', or set "
                          "data.spacy_pipeline='' for the rule-based annotations.") from e
  return spacy


def resolve_annotator(spacy_pipeline: str) -> str:
  """The annotator `data.spacy_pipeline` selects: "rules-vN" or "spacy:<name or path>@<id>".

  "" selects the rules; "auto" selects `en_core_web_sm` when spaCy and that package are
  installed, else the rules; any other value must name an installed pipeline package or a
  pipeline folder (`nlp.to_disk`). The part after "@" identifies the pipeline's version, so a
  changed pipeline makes prepared data stale.
  """
  if not spacy_pipeline:
    return RULES
  if spacy_pipeline == "auto":
    try:
      spacy = _spacy()
    except AnnotationError:
      return RULES
    if not spacy.util.is_package(DEFAULT_SPACY_PACKAGE):
      return RULES
    spacy_pipeline = DEFAULT_SPACY_PACKAGE
  spacy = _spacy()
  if os.path.isdir(spacy_pipeline):
    meta_path = os.path.join(spacy_pipeline, "meta.json")
    if not os.path.exists(meta_path):
      raise AnnotationError(f"data.spacy_pipeline={spacy_pipeline!r} is a folder without "
                            "meta.json; save a pipeline there with nlp.to_disk().")
    with open(meta_path, encoding="utf-8") as f:
      meta = json.load(f)
    version = f"{meta.get('version', '?')}-{os.stat(meta_path).st_mtime_ns}"
    return f"spacy:{os.path.abspath(spacy_pipeline)}@{version}"
  if spacy.util.is_package(spacy_pipeline):
    return f"spacy:{spacy_pipeline}@{spacy.util.get_package_version(spacy_pipeline)}"
  raise AnnotationError(f"data.spacy_pipeline={spacy_pipeline!r} is neither an installed "
                        "spaCy package nor a pipeline folder; install it (pip), give a folder "
                        "written by nlp.to_disk(), or set '' for the rule-based annotations.")


class SpacyAnnotator:
  """Entities and POS classes from a spaCy pipeline; loaded once per worker process."""

  def __init__(self, name_or_path: str, wanted: Sequence[str]):
    spacy = _spacy()
    self.nlp = spacy.load(name_or_path)
    factories = set(self.nlp.pipe_factories.values())
    if ENTITY in wanted and not factories & {"ner", "entity_ruler", "beam_ner"}:
      raise AnnotationError(f"The spaCy pipeline {name_or_path!r} finds no entities (its "
                            f"components: {self.nlp.pipe_names}); add an 'ner' or "
                            "'entity_ruler', or drop entity_ids from data.annotations.")
    if POS in wanted and not factories & {"tagger", "morphologizer", "attribute_ruler"}:
      raise AnnotationError(f"The spaCy pipeline {name_or_path!r} sets no part-of-speech tags "
                            f"(its components: {self.nlp.pipe_names}); add a 'tagger' with an "
                            "'attribute_ruler', or a 'morphologizer'.")
    self.wanted = tuple(wanted)

  def __call__(self, texts: Sequence[str]) -> list[dict]:
    """Per text: {"entity": [(start, end)], "words": [(start, end)], "classes": [int]}."""
    # A document longer than spaCy's default limit (1M characters) is still one document.
    self.nlp.max_length = max([self.nlp.max_length, *(len(t) + 1 for t in texts)])
    out = []
    for doc in self.nlp.pipe(texts, batch_size=64):
      item = {}
      if ENTITY in self.wanted:
        item["entity"] = [(e.start_char, e.end_char) for e in doc.ents]
      if POS in self.wanted:
        words = [t for t in doc if not t.is_space]
        item["words"] = [(t.idx, t.idx + len(t.text)) for t in words]
        item["classes"] = [POS_CONTENT if t.pos_ in CONTENT_TAGS else
                           POS_FUNCTION if t.pos_ in FUNCTION_TAGS else POS_UNKNOWN
                           for t in words]
      out.append(item)
    return out


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
    fields: annotation name -> [T] array (entity_ids int32 numbered per document, pos_class).
  """
  ids: np.ndarray
  lengths: np.ndarray
  sentence_start: np.ndarray | None
  fields: dict[str, np.ndarray]


def _flat_spans(per_doc: Sequence[Sequence[tuple[int, int]]], shifts: np.ndarray) -> np.ndarray:
  counts = [len(s) for s in per_doc]
  if not sum(counts):
    return np.zeros((0, 2), np.int64)
  flat = np.array([span for spans in per_doc for span in spans], np.int64)
  return flat + np.repeat(shifts, counts)[:, None]


def encode_chunk(tok, texts: Sequence[str], *, sentences: bool, wanted: Sequence[str],
                 annotator: SpacyAnnotator | None) -> EncodedChunk:
  """Tokenizes `texts` (no special tokens) and makes the annotations found on text.

  Args:
    tok: a `tokenizers.Tokenizer`.
    texts: D documents.
    sentences: also mark sentence starts (full-sentence packing).
    wanted: the annotations to make here: entity_ids, and pos_class with spaCy (the
      vocabulary fallback of pos_class works on packed rows: `vocab_pos_classes`).
    annotator: a SpacyAnnotator, or None for the rules.
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
  sentence_offsets = [sentence_starts(t) for t in texts]
  fields = {}
  spacy_out = annotator(texts) if annotator is not None and wanted else None
  if ENTITY in wanted:
    per_doc = ([d["entity"] for d in spacy_out] if spacy_out is not None else
               [rule_entities(t, s) for t, s in zip(texts, sentence_offsets)])
    # Numbered through the chunk; packing renumbers them per row.
    fields[ENTITY] = spans_to_tokens(_flat_spans(per_doc, shifts), starts, ends)
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
