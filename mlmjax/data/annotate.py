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

Two annotators:
  spaCy   any installed pipeline (`data.spacy_pipeline`: a package name, a folder, or "auto",
          the best installed English pipeline package). Entities from its `ner` /
          `entity_ruler`. Phrases: with a parse, its noun chunks without a leading determiner
          or pronoun; with POS tags only, maximal runs of ADJ/NOUN/PROPN/NUM ending in a NOUN
          or PROPN. Classes from the universal POS tags its tagger, morphologizer or
          attribute_ruler sets, refined by the parse when a component sets one (see
          `spacy_word_class`).
  rules   no dependency (version RULES_VERSION). Entities: dates ("5 May 2021",
          "May 5, 2021", "2021-05-05", "5/5/21", "May 2021"), numbers ("42", "3.14",
          "1,000", "15%"), and names: runs of capitalised words joined by spaces (a lower case
          particle such as "of", "van", "de" may join them: "Bank of England"). A closed-class
          first word ("The", "In", "This", "I") is never part of a name; a lone capitalised
          word is a name ("Hawaii", "Python") except as a sentence's first word, which is
          capitalised whatever it is ("Returns the value."); a run of two or more words is a
          name wherever it is ("Barack Obama was born ..."). Phrases: a crude heuristic, runs
          of two to four content words (letters and hyphens only, none in the closed-class
          list) joined by spaces, which catches noun compounds ("default encoding") but also
          verb-object pairs ("reads data") and misses phrases with a function word inside
          ("list of values"). Classes come from the vocabulary (`vocab_pos_classes`,
          on packed rows): a word of one token that is in the closed-class list is a
          function word, any other word a content word, punctuation and specials unknown.
          The closed-class list is the masking library's `masking.tables
          .DEFAULT_FUNCTION_WORDS`, passed in (this module imports no JAX).

Sentences (used by full-sentence packing) are always found by rule: a run of . ! or ? (and
closing quotes or brackets) followed by whitespace and an upper-case letter, digit or opening
quote, or a blank line. Abbreviations such as "e.g. Foo" end a sentence too; that only moves a
row break.
"""

from __future__ import annotations

import bisect
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

ENTITY, PHRASE, POS, NGRAM = "entity_ids", "phrase_ids", "pos_class", "ngram_ids"
ANNOTATIONS = (ENTITY, PHRASE, POS, NGRAM)
# Found on the text: entities and phrases always, POS classes with spaCy (the vocabulary
# fallback and the PMI n-grams are found on packed rows).
TEXT_ANNOTATIONS = (ENTITY, PHRASE, POS)
POS_UNKNOWN, POS_CONTENT, POS_FUNCTION, POS_PREDICATE, POS_ARGUMENT = 0, 1, 2, 3, 4
RULES_VERSION = 2
RULES = f"rules-v{RULES_VERSION}"
# What data.spacy_pipeline="auto" prefers among the installed English pipelines; any other
# English pipeline comes after these, by name.
PREFERRED_SPACY_PACKAGES = ("en_core_web_sm", "en_core_web_md", "en_core_web_lg",
                            "en_core_web_trf")

# Universal POS tags (spaCy's `token.pos_`) by class; PUNCT, SYM, X, SPACE stay unknown (0).
CONTENT_TAGS = frozenset({"NOUN", "PROPN", "VERB", "ADJ", "ADV", "NUM", "INTJ"})
FUNCTION_TAGS = frozenset({"ADP", "AUX", "CCONJ", "DET", "PART", "PRON", "SCONJ"})
# Phrases from tags alone: runs of these tags that end in a noun.
PHRASE_TAGS = frozenset({"ADJ", "NOUN", "PROPN", "NUM"})
PHRASE_HEAD_TAGS = frozenset({"NOUN", "PROPN"})
# Dependency labels (spaCy's English ClearNLP labels, and their Universal Dependencies forms)
# of a clause's head: a predicate when the word is a verb or an auxiliary.
PREDICATE_DEPS = frozenset({"ROOT", "ccomp", "xcomp", "advcl", "relcl", "acl", "acl:relcl",
                            "csubj", "csubjpass", "csubj:pass", "parataxis"})
# Subjects and objects: the head word of a core argument (its modifiers keep their own class).
ARGUMENT_DEPS = frozenset({"nsubj", "nsubjpass", "nsubj:pass", "dobj", "obj", "iobj",
                           "dative", "attr", "oprd"})
VERBAL_TAGS = frozenset({"VERB", "AUX"})


class AnnotationError(ValueError):
  """Annotations cannot be made as configured; the message names the fix."""


# ------------------------------------------------------------------------------------ rules

_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])|\n[ \t]*\n\s*")
# What may come between a sentence start and its first word.
_OPENING = re.compile(r"[\s\"'(\[“‘]*")

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
_JOIN = rf"[ \t]+(?:{_PARTICLE}[ \t]+)?"
_NAME = rf"{_CAP}(?:{_JOIN}{_CAP})*"
# The lookahead fails fast on the characters no entity starts with (10x faster).
_ENTITY = re.compile(rf"(?=[A-ZÀ-ÖØ-Þ0-9+-])(?:(?P<date>{_DATE})|(?P<number>{_NUMBER})|"
                     rf"(?P<name>{_NAME}))")
_CAP_WORD = re.compile(_CAP)
_JOIN_RE = re.compile(_JOIN)

# A phrase word: letters, maybe joined by hyphens, not glued to other word characters,
# apostrophes, dots of a dotted name ("os.path") or other symbols ("a/b", "x@y").
_LETTERS = r"[^\W\d_]+"
_PHRASE_WORD = (rf"(?<![\w'’.@/\\-]){_LETTERS}(?:-{_LETTERS})*"
                r"(?![\w'’@/\\-]|\.\w)")
_WORD_RUN = re.compile(rf"{_PHRASE_WORD}(?:[ \t]+{_PHRASE_WORD})+")
_RUN_WORD = re.compile(r"\S+")
MAX_RULE_PHRASE_WORDS = 4


def sentence_starts(text: str) -> list[int]:
  """Character offsets where a sentence begins after the first (see the module docstring)."""
  return [m.end() for m in _SENTENCE_END.finditer(text) if m.end() < len(text)]


def _name_span(text: str, start: int, end: int, sentence_first: bool,
               function_words: frozenset[str]) -> tuple[int, int] | None:
  """The name in the capitalised run text[start:end], or None (see the module docstring)."""
  first_end = _CAP_WORD.match(text, start).end()
  if text[start:first_end].lower() in function_words:
    # "The Bank of England", "In Paris": a closed-class word is capitalised as a sentence's
    # first word or in a title, never as part of a name.
    if first_end == end:
      return None
    return _JOIN_RE.match(text, first_end).end(), end
  if sentence_first and first_end == end:
    return None  # any sentence's first word is capitalised: alone, it says nothing
  return start, end


def rule_entities(text: str, function_words: frozenset[str],
                  starts: Iterable[int] | None = None) -> list[tuple[int, int]]:
  """Entity character spans [start, end) by rule, in order, non-overlapping.

  Args:
    text: one document.
    function_words: lowercase closed-class words (`masking.tables.DEFAULT_FUNCTION_WORDS`).
    starts: sentence start offsets (default: `sentence_starts(text)`); 0 is always one.
  """
  starts = sentence_starts(text) if starts is None else starts
  # A sentence's first word may follow an opening quote or bracket.
  first_words = {_OPENING.match(text, s).end() for s in (0, *starts)}
  spans = []
  for m in _ENTITY.finditer(text):
    span = m.span()
    if m.lastgroup == "name":
      span = _name_span(text, *span, span[0] in first_words, function_words)
    if span is not None:
      spans.append(span)
  return spans


def drop_overlapping(spans: Sequence[tuple[int, int]],
                     others: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
  """`spans` without those that share a character with any of `others` (sorted, disjoint)."""
  if not others:
    return list(spans)
  ends = [e for _, e in others]
  kept = []
  for start, end in spans:
    i = bisect.bisect_right(ends, start)  # the first other span ending after `start`
    if i == len(others) or others[i][0] >= end:
      kept.append((start, end))
  return kept


def _content_pieces(run: str, offset: int,
                    function_words: frozenset[str]) -> Iterator[tuple[int, int]]:
  """Pieces of 2..MAX_RULE_PHRASE_WORDS consecutive content words of a run of words.

  Each stretch of content words is cut into pieces of MAX_RULE_PHRASE_WORDS from its start.
  """
  content = [w not in function_words for w in run.lower().split()]
  spans = None  # the words' offsets, found only in a run that holds a piece
  i = 0
  while i < len(content):
    j = i
    while j < len(content) and content[j] and j - i < MAX_RULE_PHRASE_WORDS:
      j += 1
    if j - i >= 2:
      spans = spans or [m.span() for m in _RUN_WORD.finditer(run)]
      yield offset + spans[i][0], offset + spans[j - 1][1]
    i = max(j, i + 1)


def rule_phrases(text: str, function_words: frozenset[str],
                 entities: Sequence[tuple[int, int]] = ()) -> list[tuple[int, int]]:
  """Phrase character spans [start, end) by rule, in order, disjoint from `entities`.

  A phrase is 2 to MAX_RULE_PHRASE_WORDS consecutive words joined only by spaces, each of
  letters (hyphens allowed) and none a closed-class word; a longer run is cut into pieces of
  MAX_RULE_PHRASE_WORDS from its start (a last piece of one word is no phrase). A run never
  crosses punctuation or a line break, so never a sentence end.

  Args:
    text: one document.
    function_words: lowercase closed-class words (`masking.tables.DEFAULT_FUNCTION_WORDS`).
    entities: sorted, disjoint entity spans; a phrase overlapping one is dropped.
  """
  phrases = [span for m in _WORD_RUN.finditer(text)
             for span in _content_pieces(m.group(), m.start(), function_words)]
  return drop_overlapping(phrases, entities)


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


def _package_meta(module: str) -> dict | None:
  """meta.json of an installed pipeline package, read without importing the package."""
  try:
    spec = importlib.util.find_spec(module)
  except (ImportError, ValueError):
    return None
  locations = (spec and spec.submodule_search_locations) or []
  for folder in locations:
    path = os.path.join(folder, "meta.json")
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        return json.load(f)
  return None


def _preference(name: str) -> tuple[int, str]:
  known = PREFERRED_SPACY_PACKAGES
  return (known.index(name) if name in known else len(known), name)


def installed_english_pipelines() -> list[str]:
  """Installed spaCy pipeline packages whose language is English, best first.

  Best: PREFERRED_SPACY_PACKAGES in that order, then the others by name. Packages are found
  by their "spacy_models" entry points (what `spacy.util.get_installed_models` lists) and
  their meta.json, read afresh and without importing them: `get_installed_models` imports
  every pipeline package (a transformer pipeline pulls in torch) and reads entry points that
  were cached when spaCy was first imported, so it misses a package installed since.
  """
  names = set()
  for entry_point in importlib.metadata.entry_points(group="spacy_models"):
    meta = _package_meta(entry_point.module)
    if meta is not None and meta.get("lang") == "en":
      names.add(entry_point.name)
  return sorted(names, key=_preference)


def resolve_annotator(spacy_pipeline: str) -> str:
  """The annotator `data.spacy_pipeline` selects: "rules-vN" or "spacy:<name or path>@<id>".

  "" selects the rules; "auto" selects the best installed English pipeline package
  (`installed_english_pipelines`) when spaCy is installed, else the rules; any other value
  must name an installed pipeline package or a pipeline folder (`nlp.to_disk`). The part after
  "@" identifies the pipeline's version, so a changed pipeline makes prepared data stale.
  """
  if not spacy_pipeline:
    return RULES
  if spacy_pipeline == "auto":
    try:
      _spacy()
    except AnnotationError:
      return RULES
    english = installed_english_pipelines()
    if not english:
      return RULES
    spacy_pipeline = english[0]
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


def _char_span(tokens) -> tuple[int, int]:
  return tokens[0].idx, tokens[-1].idx + len(tokens[-1].text)


def noun_chunk_phrases(doc) -> list[tuple[int, int]]:
  """Character spans of a parsed doc's noun chunks of two words or more.

  A leading determiner or pronoun is neither counted nor included ("the old car" gives "old
  car", "my car" nothing): it is no part of what a phrase-level mask should hide.
  """
  spans = []
  for chunk in doc.noun_chunks:
    tokens = list(chunk)
    while tokens and tokens[0].pos_ in ("DET", "PRON"):
      tokens.pop(0)
    if sum(not (t.is_punct or t.is_space) for t in tokens) >= 2:
      spans.append(_char_span(tokens))
  return spans


def tagged_phrases(doc) -> list[tuple[int, int]]:
  """Character spans of the phrases a tagger alone can find, in a doc without a parse.

  Maximal runs of PHRASE_TAGS tokens cut back to end in a PHRASE_HEAD_TAGS token, two tokens
  or more: a noun with its adjective, number and noun modifiers ("3 big red apples").
  """
  spans, run = [], []
  for token in [*doc, None]:
    if token is not None and token.pos_ in PHRASE_TAGS:
      run.append(token)
      continue
    while run and run[-1].pos_ not in PHRASE_HEAD_TAGS:
      run.pop()
    if len(run) >= 2:
      spans.append(_char_span(run))
    run = []
  return spans


def tag_class(token) -> int:
  """The class of a word by its universal POS tag: 1 content, 2 function, 0 otherwise."""
  return (POS_CONTENT if token.pos_ in CONTENT_TAGS else
          POS_FUNCTION if token.pos_ in FUNCTION_TAGS else POS_UNKNOWN)


def is_predicate(token) -> bool:
  """Whether a parsed token is a predicate: a verb or auxiliary that heads a clause.

  Its dependency is in PREDICATE_DEPS, or it is conjoined to a predicate ("ran and jumped").
  A verbless root (a title, "Built-in Functions") is no predicate: it keeps its tag's class.
  Without POS tags, any clause head is a predicate.
  """
  if token.pos_ and token.pos_ not in VERBAL_TAGS:
    return False
  if token.dep_ == "conj":
    return token.head.i != token.i and is_predicate(token.head)
  return token.dep_ in PREDICATE_DEPS


def spacy_word_class(token, parsed: bool) -> int:
  """The pos_class of a spaCy token: from the parse, if any, then from its POS tag.

  With a parse, predicates are 3 (`is_predicate`) and core arguments 4; every other word, and
  every word without a parse, has its tag's class (`tag_class`). A core argument is the head
  word of a subject or object (ARGUMENT_DEPS), whatever its tag: a pronoun subject is an
  argument. Determiners, modifiers and prepositional objects keep their tag's class.
  """
  if parsed and is_predicate(token):
    return POS_PREDICATE
  if parsed and token.dep_ in ARGUMENT_DEPS:
    return POS_ARGUMENT
  return tag_class(token)


# Run once when a pipeline loads, to see which annotations its components set.
_PROBE = "The old cat chased a small mouse in the garden."


class SpacyAnnotator:
  """Entities, phrases and POS classes from a spaCy pipeline; loaded once per worker process."""

  def __init__(self, name_or_path: str, wanted: Sequence[str]):
    spacy = _spacy()
    self.nlp = spacy.load(name_or_path)
    factories = set(self.nlp.pipe_factories.values())
    probe = self.nlp(_PROBE)
    tagged, parsed = probe.has_annotation("POS"), probe.has_annotation("DEP")
    if ENTITY in wanted and not factories & {"ner", "entity_ruler", "beam_ner"}:
      raise AnnotationError(f"The spaCy pipeline {name_or_path!r} finds no entities (its "
                            f"components: {self.nlp.pipe_names}); add an 'ner' or "
                            "'entity_ruler', or drop entity_ids from data.annotations.")
    if POS in wanted and not tagged:
      raise AnnotationError(f"The spaCy pipeline {name_or_path!r} sets no part-of-speech tags "
                            f"(its components: {self.nlp.pipe_names}); add a 'tagger' with an "
                            "'attribute_ruler', or a 'morphologizer'.")
    if PHRASE in wanted and not (tagged or parsed):
      raise AnnotationError(f"The spaCy pipeline {name_or_path!r} finds no phrases: it sets "
                            f"neither a parse nor part-of-speech tags (its components: "
                            f"{self.nlp.pipe_names}); add a 'parser', or a 'tagger' with an "
                            "'attribute_ruler', or drop phrase_ids from data.annotations.")
    self.wanted = tuple(wanted)

  def annotate(self, doc) -> dict:
    """{"entity": [(start, end)], "phrase": [(start, end)], "words": [(start, end)],
    "classes": [int]}: what `wanted` asks for (entities for phrases too), as character spans
    of `doc.text`; words are the doc's tokens but whitespace, each with its class."""
    item = {}
    parsed = doc.has_annotation("DEP")
    entities = [(e.start_char, e.end_char) for e in doc.ents]
    if ENTITY in self.wanted or PHRASE in self.wanted:
      item["entity"] = entities
    if PHRASE in self.wanted:
      phrases = noun_chunk_phrases(doc) if parsed else tagged_phrases(doc)
      item["phrase"] = drop_overlapping(phrases, entities)
    if POS in self.wanted:
      words = [t for t in doc if not t.is_space]
      item["words"] = [(t.idx, t.idx + len(t.text)) for t in words]
      item["classes"] = [spacy_word_class(t, parsed) for t in words]
    return item

  def __call__(self, texts: Sequence[str]) -> list[dict]:
    """Per text, `annotate` of its doc."""
    # A document longer than spaCy's default limit (1M characters) is still one document.
    self.nlp.max_length = max([self.nlp.max_length, *(len(t) + 1 for t in texts)])
    return [self.annotate(doc) for doc in self.nlp.pipe(texts, batch_size=64)]


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


def encode_chunk(tok, texts: Sequence[str], *, sentences: bool, wanted: Sequence[str],
                 annotator: SpacyAnnotator | None,
                 function_words: frozenset[str]) -> EncodedChunk:
  """Tokenizes `texts` (no special tokens) and makes the annotations found on text.

  Args:
    tok: a `tokenizers.Tokenizer`.
    texts: D documents.
    sentences: also mark sentence starts (full-sentence packing).
    wanted: the annotations to make here: entity_ids, phrase_ids, and pos_class with spaCy
      (the vocabulary fallback of pos_class works on packed rows: `vocab_pos_classes`).
    annotator: a SpacyAnnotator, or None for the rules.
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
  sentence_offsets = [sentence_starts(t) for t in texts]
  fields = {}
  spacy_out = annotator(texts) if annotator is not None and wanted else None
  if ENTITY in wanted or PHRASE in wanted:
    # Phrases need the entities too, to stay clear of them.
    entities = ([d["entity"] for d in spacy_out] if spacy_out is not None else
                [rule_entities(t, function_words, s) for t, s in zip(texts, sentence_offsets)])
    # Numbered through the chunk; packing renumbers them per row.
    entity_ids = spans_to_tokens(_flat_spans(entities, shifts), starts, ends)
    if ENTITY in wanted:
      fields[ENTITY] = entity_ids
  if PHRASE in wanted:
    phrases = ([d["phrase"] for d in spacy_out] if spacy_out is not None else
               [rule_phrases(t, function_words, e) for t, e in zip(texts, entities)])
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
