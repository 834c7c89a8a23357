"""Annotations by rule, no dependency (version RULES_VERSION): entities, phrases, sentences.

Entities: dates ("5 May 2021", "May 5, 2021", "2021-05-05", "5/5/21", "May 2021"), numbers
("42", "3.14", "1,000", "15%"), and names: runs of capitalised words joined by spaces (a lower
case particle such as "of", "van", "de" may join them: "Bank of England"). A closed-class
first word ("The", "In", "This", "I") is never part of a name; a lone capitalised word is a
name ("Hawaii", "Python") except as a sentence's first word, which is capitalised whatever it
is ("Returns the value."); a run of two or more words is a name wherever it is ("Barack Obama
was born ...").

Phrases: a crude heuristic, runs of two to four content words (letters and hyphens only, none
in the closed-class list) joined by spaces, which catches noun compounds ("default encoding")
but also verb-object pairs ("reads data") and misses phrases with a function word inside
("list of values").

Classes, with the rules, come from the vocabulary (`annotate.vocab_pos_classes`, on packed
rows): a word of one token that is in the closed-class list is a function word, any other word
a content word, punctuation and specials unknown. The closed-class list is the masking
library's `masking.tables.DEFAULT_FUNCTION_WORDS`, passed in (this module imports no JAX).

Sentences (used by full-sentence packing) are always found by rule, whichever annotator finds
the rest: a run of . ! or ? (and closing quotes or brackets) followed by whitespace and an
upper-case letter, digit or opening quote, or a blank line. Abbreviations such as "e.g. Foo"
end a sentence too; that only moves a row break.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator, Sequence

RULES_VERSION = 2
RULES = f"rules-v{RULES_VERSION}"

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
