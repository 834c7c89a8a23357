"""Token -> unit grouping: words, geometric spans of words, T5 noise spans, annotated spans.

Each function returns unit starts ([B, S] bool, True where a unit begins). The core adds the
starts that always hold (after a special token, at a document boundary), so no unit crosses
[CLS]/[SEP]/PAD or, with segment ids, a document boundary inside a packed row.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mlmjax.masking import rows
from mlmjax.masking import select
from mlmjax.masking.tables import VocabTables

Array = jax.Array


def word_starts(ids: Array, tables: VocabTables) -> Array:
  """[B, S] bool: the token begins a word (WordPiece: no '##'; SentencePiece '▁'; BPE 'Ġ').

  A token after a special token also starts a word (added by the core), so a byte-level
  first word is never fused with <s>, and a '##' piece after [CLS] is a unit of its own.
  """
  return tables.is_word_start[ids]


def annotated_spans(span_ids: Array, word_start: Array) -> tuple[Array, Array]:
  """Units from annotated spans (entities, PMI n-grams); whole words elsewhere.

  Args:
    span_ids: [B, S] int, 0 = no span, k > 0 = the k-th span of the row.
    word_start: [B, S] bool word starts.
  Returns:
    unit_start: [B, S] bool: a span is one unit; outside spans, words are.
    in_span: [B, S] bool.
  """
  in_span = span_ids > 0
  changed = span_ids != rows.shift_right(span_ids, -1)
  return jnp.where(in_span, changed, changed | word_start), in_span


# ----------------------------------------------------------------------------- geometric spans


def span_length_probs(p: float, max_words: int) -> np.ndarray:
  """[max_words] P(length = 1..max_words): Geometric(p) truncated and renormalised (SpanBERT).

  p = 0.2, max 10: mean 3.80 words.
  """
  lengths = np.arange(1, max_words + 1)
  probs = p * (1.0 - p) ** (lengths - 1)
  return probs / probs.sum()


def sample_span_lengths(u: Array, p: float, max_words: int) -> Array:
  """int32 span lengths in words, truncated Geometric(p), from uniforms u (inverse CDF)."""
  if p >= 1.0:
    return jnp.ones(u.shape, jnp.int32)
  q = 1.0 - p
  tail = 1.0 - q ** max_words  # P(length <= max_words) before renormalising
  length = jnp.ceil(jnp.log1p(-u * tail) / np.log(q))
  return jnp.clip(length, 1, max_words).astype(jnp.int32)


def geometric_spans(u: Array, word_start: Array, p: float, max_words: int) -> Array:
  """[B, S] bool span starts: the words of a row cut into consecutive spans of random length.

  Span j covers words [L_1 + ... + L_{j-1}, L_1 + ... + L_j) with L ~ truncated Geo(p), so
  every span starts on a word start and, drawn uniformly, spans have the lengths L (in words).
  Spans are cut short at special tokens and document boundaries.

  Args:
    u: [B, S] uniforms (one span length per possible span).
    word_start: [B, S] bool starts of words that may be masked (specials excluded).
  """
  b, s = word_start.shape
  word = rows.prefix_sum(word_start) - 1  # word index of each token
  lengths = sample_span_lengths(u, p, max_words)
  first_word = rows.prefix_sum(lengths) - lengths  # first word of span j, for j < S
  begins = rows.row_scatter(jnp.zeros((b, s), bool), first_word, jnp.ones((b, s), bool))
  return word_start & jnp.take_along_axis(begins, jnp.maximum(word, 0), axis=1)


# ----------------------------------------------------------------------------- T5 noise spans


def _composition(bits: Array, items: Array, parts: Array) -> Array:
  """[B, S] bool cut points splitting `items` into `parts` non-empty runs, uniformly at random.

  bits: [B, S] 16-bit random values.

  Cut i (1 <= i < items) starts a new run; parts - 1 of them are chosen without replacement.
  """
  s = bits.shape[1]
  pos = jnp.arange(s)
  valid = (pos >= 1) & (pos < items[:, None])
  v, width = select.order_keys(bits, valid, None)
  return v > select.fit_threshold(v, jnp.maximum(parts - 1, 0), width)[:, None]


def t5_noise(bits: Array, eligible: Array, num_noise: Array, mean_length: float
             ) -> tuple[Array, Array]:
  """T5 span corruption's noise mask over the eligible tokens of each row.

  Exactly `num_noise` noise tokens in round(num_noise / mean_length) spans (at least one);
  noise and non-noise runs are uniformly random compositions that alternate, non-noise first,
  as `random_spans_noise_mask` in T5.

  Args:
    bits: [B, 2, S] 16-bit random values.
    eligible: [B, S] bool; ranks over eligible tokens, so specials are skipped.
    num_noise: [B] int32 noise tokens.
  Returns:
    noise: [B, S] bool noise tokens; noise_start: [B, S] bool first token of each noise run.
  """
  b, s = eligible.shape
  n = eligible.sum(axis=1, dtype=jnp.int32)
  num_noise = jnp.clip(num_noise, 0, n)
  keep = n - num_noise
  spans = jnp.round(num_noise / mean_length).astype(jnp.int32)
  spans = jnp.clip(spans, 1, jnp.maximum(jnp.minimum(num_noise, keep), 1))
  noise_cut = _composition(bits[:, 0], num_noise, spans)
  keep_cut = _composition(bits[:, 1], keep, spans)
  # Noise token i lies in noise run j (j cuts at or before i), after keep runs 0..j, which
  # end at the (j+1)-th keep cut (or at `keep` for the last run): its rank is i + that end.
  run = rows.prefix_sum(noise_cut)
  keep_ends = select.compact(rows.pack_bits(keep_cut), s, s)  # ascending; S when unused
  end = jnp.where(run < spans[:, None] - 1, jnp.take_along_axis(keep_ends, run, axis=1),
                  keep[:, None])
  pos = jnp.arange(s)
  rank = jnp.where(pos < num_noise[:, None], pos + end, s)  # S: dropped
  is_noise = rows.row_scatter(jnp.zeros((b, s), bool), rank, jnp.ones((b, s), bool))
  is_start = rows.row_scatter(jnp.zeros((b, s), bool), rank,
                              jnp.broadcast_to(noise_cut | (pos == 0), (b, s)))
  token_rank = jnp.maximum(rows.prefix_sum(eligible) - 1, 0)
  noise = eligible & jnp.take_along_axis(is_noise, token_rank, axis=1)
  return noise, noise & jnp.take_along_axis(is_start, token_rank, axis=1)
