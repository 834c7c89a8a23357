"""Row-wise tools on [B, S] arrays: prefix sums, bit sets, shifts and scatters, fast on CPU.

Each keeps the batch as its leading (or batching) dimension, so batch-sharded inputs stay
sharded.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def prefix_sum(x: Array) -> Array:
  """[B, S] int32 inclusive prefix sums along axis 1 of small ints (0 <= x <= 256), exact.

  Sums within blocks of 128 are one matmul with a triangular matrix (bf16 inputs, f32
  accumulation: exact here), then block offsets are added: on CPU ~5x faster than cumsum.
  """
  b, s = x.shape
  block = min(s, 128)
  pad = -s % block
  x = jnp.pad(x, ((0, 0), (0, pad))).astype(jnp.bfloat16).reshape(b, -1, block)
  tri = jnp.asarray(np.triu(np.ones((block, block))), jnp.bfloat16)  # a constant, not a kernel
  within = jnp.einsum("bnk,kj->bnj", x, tri, preferred_element_type=jnp.float32)
  totals = within[:, :, -1]
  # Each block's offset: the totals of the blocks before it, by a tiny matmul (XLA:CPU's cumsum
  # over a handful of blocks costs more than the whole block matmul). HIGHEST keeps it exact on
  # GPU and TPU too, whose default f32 matmuls round to TF32 or bf16.
  before = jnp.asarray(np.triu(np.ones((totals.shape[1],) * 2), k=1), jnp.float32)
  offsets = jnp.matmul(totals, before, precision=jax.lax.Precision.HIGHEST)
  within = within + offsets[:, :, None]
  return within.reshape(b, -1)[:, :s].astype(jnp.int32)


def pack_bits(mask: Array) -> Array:
  """[..., B, ceil(S / 32)] uint32 words of mask [..., B, S]: bit i of word j is token 32 j + i.

  Bit sets let the selection count, combine and list chosen tokens per 32 at a time.
  """
  s = mask.shape[-1]
  pad = [(0, 0)] * (mask.ndim - 1) + [(0, -s % 32)]
  mask = jnp.pad(mask, pad).reshape(mask.shape[:-1] + (-1, 32))
  shifted = mask.astype(jnp.uint32) << jnp.arange(32, dtype=jnp.uint32)
  return shifted.sum(axis=-1, dtype=jnp.uint32)  # distinct bits: the sum is their OR


def bit_planes(values: Array, bits: int = 16) -> Array:
  """[bits, B, ceil(S / 32)] uint32: plane j is `pack_bits` of bit (bits - 1 - j) of values [B, S].

  One variadic reduction makes every plane, so XLA evaluates each value once, not once per
  plane (the values are usually a hash that XLA fuses into this kernel).
  """
  b, s = values.shape
  x = jnp.pad(values.astype(jnp.uint32), ((0, 0), (0, -s % 32))).reshape(b, -1, 32)
  at = jnp.arange(32, dtype=jnp.uint32)
  planes = tuple(((x >> (bits - 1 - j)) & 1) << at for j in range(bits))
  planes = jax.lax.reduce(planes, (jnp.uint32(0),) * bits,
                          lambda p, q: tuple(a | c for a, c in zip(p, q)), (2,))
  return jnp.stack(planes)


def count_bits(words: Array) -> Array:
  """[B] int32 set bits per row of words [B, W]."""
  return jax.lax.population_count(words).astype(jnp.int32).sum(axis=1)


def bits_from(first: Array, num_words: int) -> Array:
  """[B, W] uint32 words with the bits of positions >= first [B] set."""
  offset = first[:, None] - 32 * jnp.arange(num_words)  # first bit within each word
  partial = jnp.uint32(0xFFFFFFFF) << jnp.clip(offset, 0, 31).astype(jnp.uint32)
  return jnp.where(offset <= 0, jnp.uint32(0xFFFFFFFF), jnp.where(offset >= 32, 0, partial))


def last_set_at_or_before(words: Array, length: int) -> Array:
  """[B, length] int32 position of the last set bit at or before each position; -1 if none.

  words: [B, W] from `pack_bits`. For position 32 w + i: the latest of the last set bit of
  each earlier word and the last set bit of word w's bits 0..i (counting leading zeros).
  Written as one reduction over the words ([B, W, 32, W], fused, never materialised; B S^2 / 32
  work, small next to a model at any S): XLA computes a reduction once, where it would fuse an
  elementwise select into every consumer and redo it there (a gather by the result, for one,
  then runs ~10x slower).
  """
  b, w = words.shape
  index = jnp.arange(w)
  last = lambda x: 31 - jax.lax.clz(x).astype(jnp.int32)  # index of the highest set bit
  top = jnp.where(words != 0, 32 * index + last(words), -1)  # [B, W]
  prefix = words[:, :, None] & (jnp.uint32(0xFFFFFFFF) >> (31 - jnp.arange(32, dtype=jnp.uint32)))
  local = jnp.where(prefix != 0, 32 * index[:, None] + last(prefix), -1)  # [B, W, 32]
  candidates = jnp.where(index < index[:, None, None], top[:, None, None, :],  # [B, W, 32, W]
                         jnp.where(index == index[:, None, None], local[..., None], -1))
  return candidates.max(axis=3).reshape(b, -1)[:, :length]


def next_set_after(words: Array, length: int) -> Array:
  """[B, length] int32 position of the first set bit after each position; `length` if none.

  words: [B, W] from `pack_bits`; the mirror image of `last_set_at_or_before`.
  """
  b, w = words.shape
  index = jnp.arange(w)
  lowest = lambda x: 31 - jax.lax.clz(x & (~x + 1)).astype(jnp.int32)  # index of the lowest bit
  bottom = jnp.where(words != 0, 32 * index + lowest(words), length)
  suffix = words[:, :, None] & (jnp.uint32(0xFFFFFFFE) << jnp.arange(32, dtype=jnp.uint32))
  local = jnp.where(suffix != 0, 32 * index[:, None] + lowest(suffix), length)
  candidates = jnp.where(index > index[:, None, None], bottom[:, None, None, :],
                         jnp.where(index == index[:, None, None], local[..., None], length))
  return jnp.minimum(candidates.min(axis=3).reshape(b, -1)[:, :length], length)


def nth_set_bit(words: Array, ranks: Array, length: int) -> Array:
  """[B, K] position of the ranks[b, k]-th (0-based) set bit of row b; `length` if none.

  words: [B, W] from `pack_bits`. The word holding each rank is found by comparing running
  counts of set bits ([B, K, W]; W = S / 32 is small), the bit inside it by counting set bits
  in its 32 prefixes. No scatter and no [B, K, S] comparison: on CPU several times faster than
  a prefix sum and a scatter, and the batch stays leading, so batch-sharded inputs stay sharded.
  """
  counts = jax.lax.population_count(words).astype(jnp.int32)
  w = counts.shape[1]
  # Set bits in words 0..i; the [B, W, W] sum is small.
  upto = jnp.sum(jnp.where(jnp.arange(w)[:, None] <= jnp.arange(w), counts[:, :, None], 0),
                 axis=1)
  ranks = ranks.astype(jnp.int32)
  done = upto[:, None, :] <= ranks[:, :, None]  # [B, K, W]: words wholly before the rank's
  word_index = done.sum(axis=2, dtype=jnp.int32)
  rank_in_word = ranks - jnp.where(done, counts[:, None, :], 0).sum(axis=2)
  word = jnp.where(jnp.arange(w) == word_index[:, :, None], words[:, None, :],
                   jnp.uint32(0)).max(axis=2)  # words[b, word_index]: a select, not a gather
  # The bit: how many of the word's 32 prefixes hold at most rank_in_word set bits. A sum, not
  # a bisection, so that XLA keeps the result instead of recomputing the chain in every
  # element of the [B, S] computations that use it.
  prefixes = jnp.uint32(0xFFFFFFFF) >> jnp.arange(31, -1, -1, dtype=jnp.uint32)  # bits 0..i
  in_prefix = jax.lax.population_count(word[:, :, None] & prefixes).astype(jnp.int32)
  bit = (in_prefix <= rank_in_word[:, :, None]).sum(axis=2, dtype=jnp.int32)
  return jnp.where((word_index < w) & (ranks >= 0), word_index * 32 + bit, length)


def row_scatter(base: Array, index: Array, values: Array, add: bool = False) -> Array:
  """base[b, index[b, i]] = (or +=) values[b, i]; out-of-range indices are dropped.

  base: [B, N]; index, values: [B, M]. Written per row (vmap), so the scatter keeps the batch as
  a batching dimension and a batch-sharded input stays sharded (no all-gather).
  """
  def one(row, i, v):
    return row.at[i].add(v, mode="drop") if add else row.at[i].set(v, mode="drop")
  return jax.vmap(one)(base, index, values)


def shift_right(x: Array, fill: Any) -> Array:
  """[B, S] x[:, s - 1] at s, `fill` at s = 0."""
  return jnp.pad(x[:, :-1], ((0, 0), (1, 0)), constant_values=fill)
