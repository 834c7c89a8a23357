"""Vocabulary tables for masking: which ids are special, start words, and how common they are.

Built once on the host from a vocabulary or a tokenizer; a pytree of [V] arrays that the jitted
masker closes over (or takes as an argument), with `mask_id`, `pad_id` and `vocab_size` static.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# Word-boundary markers of the three tokenizer families. WordPiece marks continuations ('##');
# SentencePiece ('▁') and byte-level BPE ('Ġ', a leading space) mark word starts.
WORDPIECE, SENTENCEPIECE, BYTE_LEVEL = "wordpiece", "sentencepiece", "byte_level"
_MARKERS = {WORDPIECE: "##", SENTENCEPIECE: "\u2581", BYTE_LEVEL: "\u0120"}

# English closed-class words: the vocabulary-level fallback of syntax-aware masking when the
# data carries no part-of-speech classes.
DEFAULT_FUNCTION_WORDS = frozenset("""
a an the this that these those my your his her its our their some any no every each either
neither all both much many more most few less least other another such what which who whom whose
i me you he him she it we us they them myself yourself himself herself itself ourselves themselves
and or but nor so yet for if then than because while although though unless since until whether
as at by from in into of off on onto out over to up with within without about above across after
against along among around before behind below beneath beside between beyond down during except
inside near through toward towards under upon via
be am is are was were been being have has had having do does did doing
will would shall should can could may might must ought
not n't 's 're 've 'd 'll 'm there here where when why how very just also too only
""".split())


@dataclasses.dataclass(frozen=True)
class VocabTables:
  """Per-vocabulary-id tables, all [V]; `mask_id`, `pad_id`, `vocab_size` are static.

  Attributes:
    is_special: [V] bool, never selected for prediction and never a random replacement
      (by default). Includes PAD, CLS, SEP, MASK, UNK.
    is_word_start: [V] bool, the token begins a word (WordPiece: no '##'; SentencePiece: '▁';
      byte-level BPE: 'Ġ'). Specials are word starts.
    frequency: [V] f32 corpus counts (zeros when unknown).
    idf: [V] f32 inverse document frequency (zeros when unknown).
    function_word: [V] bool, the token is (the start of) a closed-class word.
    mask_id: id of the mask token.
    pad_id: id of the padding token, -1 if the vocabulary has none.
    vocab_size: number of tokenizer ids V (the model's embedding may be padded larger).
    special_ranges: the ids of `is_special` as (start, stop) runs when there are few (static;
      () when unknown or many): testing a few ranges is cheaper than a table lookup.
  """
  is_special: jax.Array
  is_word_start: jax.Array
  frequency: jax.Array
  idf: jax.Array
  function_word: jax.Array
  mask_id: int
  pad_id: int
  vocab_size: int
  special_ranges: tuple[tuple[int, int], ...] = ()

  @classmethod
  def from_vocab(cls, tokens: Sequence[str] | Mapping[str, int],
                 special_tokens: Iterable[str] = DEFAULT_SPECIAL_TOKENS,
                 mask_token: str = "[MASK]", *, pad_token: str | None = None,
                 frequency: Any = None, idf: Any = None,
                 function_words: Iterable[str] | None = None,
                 convention: str = "auto") -> VocabTables:
    """Tables from a vocabulary: a list of tokens (index = id) or a {token: id} mapping.

    Args:
      tokens: the vocabulary.
      special_tokens: tokens never masked; each must be in the vocabulary.
      mask_token: the token that replaces masked inputs; must be in the vocabulary.
      pad_token: the padding token; default: the first of "[PAD]", "<pad>" among the specials.
      frequency: optional [V] corpus counts (frequency strategy, unigram replacements).
      idf: optional [V] inverse document frequencies (semantic strategy).
      function_words: words marked as function words; default: a built-in English list.
      convention: "auto", "wordpiece", "sentencepiece", "byte_level" or "none" (every token
        starts a word). "auto" picks the marker most tokens carry.
    """
    vocab = _as_id_list(tokens)
    index = {t: i for i, t in enumerate(vocab) if t is not None}
    special_tokens = list(special_tokens)
    missing = [t for t in special_tokens + [mask_token] if t not in index]
    if missing:
      raise ValueError(f"special tokens {missing} are not in the vocabulary; pass the "
                       "tokenizer's own special tokens via special_tokens= and mask_token=")
    if pad_token is None:
      pad_token = next((t for t in ("[PAD]", "<pad>") if t in special_tokens), None)
    size = len(vocab)
    is_special = np.zeros(size, bool)
    is_special[[index[t] for t in special_tokens]] = True
    is_special[index[mask_token]] = True
    is_special[[i for i, t in enumerate(vocab) if t is None]] = True  # holes in the id space
    if convention == "auto":
      convention = detect_convention(t for t in vocab if t is not None)
    is_start = word_starts(vocab, convention) | is_special
    words = DEFAULT_FUNCTION_WORDS if function_words is None else frozenset(function_words)
    function = np.array([t is not None and _bare(t, convention) in words for t in vocab]) & is_start
    return cls(
        is_special=jnp.asarray(is_special),
        is_word_start=jnp.asarray(is_start),
        frequency=jnp.asarray(_vector(frequency, size, "frequency")),
        idf=jnp.asarray(_vector(idf, size, "idf")),
        function_word=jnp.asarray(function & ~is_special),
        mask_id=index[mask_token],
        pad_id=index[pad_token] if pad_token in index else -1,
        vocab_size=size,
        special_ranges=_runs(is_special))

  @classmethod
  def from_tokenizer(cls, tokenizer: Any, **kwargs: Any) -> VocabTables:
    """Tables from a `tokenizers.Tokenizer` or a `transformers` tokenizer (slow or fast).

    Special tokens are the tokenizer's own; keyword arguments go to `from_vocab`.
    """
    vocab = tokenizer.get_vocab()
    if hasattr(tokenizer, "all_special_tokens"):  # transformers
      specials = list(tokenizer.all_special_tokens)
      mask = tokenizer.mask_token
      kwargs.setdefault("pad_token", tokenizer.pad_token)
    elif hasattr(tokenizer, "get_added_tokens_decoder"):  # tokenizers.Tokenizer
      specials = [t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special]
      mask = next((t for t in ("[MASK]", "<mask>") if t in specials), None)
    else:
      raise TypeError(f"unsupported tokenizer {type(tokenizer).__name__}: pass a "
                      "tokenizers.Tokenizer, a transformers tokenizer, or use from_vocab()")
    if not mask:
      raise ValueError("the tokenizer has no mask token: add one (e.g. '[MASK]') or use "
                       "from_vocab()")
    kwargs.setdefault("special_tokens", [t for t in specials if t in vocab])
    kwargs.setdefault("mask_token", mask)
    return cls.from_vocab(vocab, **kwargs)


jax.tree_util.register_dataclass(
    VocabTables,
    data_fields=["is_special", "is_word_start", "frequency", "idf", "function_word"],
    meta_fields=["mask_id", "pad_id", "vocab_size", "special_ranges"])

MAX_SPECIAL_RANGES = 8


def _runs(flags: np.ndarray) -> tuple[tuple[int, int], ...]:
  """The (start, stop) runs of True in `flags`, or () if there are more than MAX_SPECIAL_RANGES."""
  edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
  runs = tuple((int(a), int(b)) for a, b in zip(edges[::2], edges[1::2]))
  return runs if len(runs) <= MAX_SPECIAL_RANGES else ()


def detect_convention(tokens: Iterable[str]) -> str:
  """The subword convention whose marker most tokens carry; "none" if no token carries one."""
  counts = dict.fromkeys(_MARKERS, 0)
  for t in tokens:
    for name, marker in _MARKERS.items():
      counts[name] += t.startswith(marker) and len(t) > len(marker)
  best = max(counts, key=counts.get)
  return best if counts[best] else "none"


def word_starts(vocab: Sequence[str | None], convention: str) -> np.ndarray:
  """[V] bool: which tokens begin a word under `convention`."""
  if convention == "none":
    return np.ones(len(vocab), bool)
  if convention not in _MARKERS:
    raise ValueError(f"unknown convention {convention!r}; use auto, {', '.join(_MARKERS)} or none")
  marker = _MARKERS[convention]
  marked = np.array([t is not None and t.startswith(marker) for t in vocab])
  return ~marked if convention == WORDPIECE else marked


def _bare(token: str, convention: str) -> str:
  """The token's text without its word-boundary marker, lowercased."""
  marker = _MARKERS.get(convention, "")
  if marker and token.startswith(marker):
    token = token[len(marker):]
  return token.lower()


def _as_id_list(tokens: Sequence[str] | Mapping[str, int]) -> list[str | None]:
  """A list indexed by id; ids a mapping leaves out are None."""
  if isinstance(tokens, Mapping):
    vocab: list[str | None] = [None] * (max(tokens.values()) + 1)
    for t, i in tokens.items():
      vocab[i] = t
    return vocab
  return list(tokens)


def _vector(values: Any, size: int, name: str) -> np.ndarray:
  if values is None:
    return np.zeros(size, np.float32)
  values = np.asarray(values, np.float32)
  if values.shape != (size,):
    raise ValueError(f"{name} has shape {values.shape}; it needs one value per id, ({size},)")
  return values
