"""The per-id tables of a vocabulary that the host-side annotations read.

  word_start   bool [V]  the token begins a word (specials too), by the vocabulary's own
                         convention, as the masking library groups words
  barrier      bool [V]  specials and word-start tokens with no letter or digit (punctuation):
                         no PMI n-gram and no word holds one
  word_class   int8 [V]  the pos_class of a one-token word (`annotate.vocab_pos_classes`)

The masking library's own tables, for the jitted step, are `stats.vocab_tables`.
"""

from collections.abc import Sequence

import numpy as np
import tokenizers

from mlmjax.data import annotate
from mlmjax.data import tokenizer as tokenizer_lib
from mlmjax.masking import tables


def from_tokenizer(tok: tokenizers.Tokenizer) -> dict[str, np.ndarray]:
  """The tables of `tok`'s vocabulary (see the module docstring), with the masking library's
  English function words."""
  vocab = tok.get_vocab()
  tokens = [None] * (max(vocab.values()) + 1)
  for t, i in vocab.items():
    tokens[i] = t
  special = np.zeros(len(tokens), bool)
  special[list(tokenizer_lib.special_roles(tok).values())] = True
  # Words as the masking library groups them (its convention, detected from the vocabulary).
  convention = tables.detect_convention(t for t in tokens if t is not None)
  word_start = tables.word_starts(tokens, convention) | special
  return classes(tokens, special, tables.DEFAULT_FUNCTION_WORDS, convention, word_start)


def classes(vocab: Sequence[str | None], special: np.ndarray, function_words: frozenset[str],
            convention: str, word_start: np.ndarray) -> dict[str, np.ndarray]:
  """The tables of a vocabulary given token by token (`from_tokenizer` reads a tokenizer).

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
  word_class = np.where(punctuation | special, annotate.POS_UNKNOWN,
                        annotate.POS_CONTENT).astype(np.int8)
  function_word = np.array([b.lower() in function_words for b in bare])
  word_class[function_word & ~special] = annotate.POS_FUNCTION
  return {"word_start": word_start, "barrier": special | (word_start & punctuation),
          "word_class": word_class}
