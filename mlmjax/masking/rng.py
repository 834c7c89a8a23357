"""Per-row randomness: one key per row, split by purpose, so masks do not depend on sharding.

A row's draws come from `fold(key, row)`, then `fold(row_key, purpose)`, and its bits from a
counter: element i of a row's stream is a keyed hash of i. Every value is a pure function of
(key, row, purpose, i), so it is the same whichever device holds the row and however large the
batch is.

Why not `jax.random` below the caller's key: on CPU every threefry call lowers to a rolled loop
of 5 iterations (XLA keeps the compile small that way), and the masker made three such calls per
batch; they were over half of its time (`python -m bench.masking`, docs/BENCHMARKS.md). Masking
needs bits that are uniform and independent across rows, steps and purposes, not a
cryptographic generator, so the streams here are counter-based: the counter goes through two
rounds of `_mix` (Chris Wellons' lowbias32 finalizer, a bijection of uint32 with near-ideal
avalanche), keyed by the key's words. That is ~14 integer operations per 32-bit word, all
elementwise, fused by XLA into the ops that use them. The keys stay JAX PRNG keys of the
caller's implementation (threefry by default), so any `jax.random` function accepts them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

# fold constants: independent streams of a row's key. The core draws all its bits in one call
# (CORE); strategies use the others.
CORE, COUNT, SPANS, MIXTURE = 1, 2, 3, 4

_WEYL = 0x9E3779B9  # 2^32 / golden ratio: spreads consecutive counters over the word


def _mix(x: Array) -> Array:
  """lowbias32: a bijection of uint32 whose output bits each flip with ~1/2 chance per input
  bit (bias 0.17 on the hash-prospector's scale, about that of a random permutation)."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x21F0AAAD)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x735A2D97)
  return x ^ (x >> 15)


def _hash(words: Array, x: Array) -> Array:
  """uint32 hash of the counters x keyed by `words` [..., n] (broadcast against x[..., None]).

  Round j mixes in key word j, so keys differing in any word give unrelated streams.
  """
  h = x * jnp.uint32(_WEYL)
  for j in range(words.shape[-1]):
    h = _mix(h ^ words[..., j]) if j % 2 == 0 else _mix(h + words[..., j])
  return h


def _words(key: Array) -> tuple[Array, bool]:
  """A key's uint32 words [..., n], and whether it is a typed key (else raw words)."""
  typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
  return (jax.random.key_data(key) if typed else jnp.asarray(key, jnp.uint32)), typed


def fold(key: Array, data: Array | int) -> Array:
  """fold_in(key, data), elementwise over `data` (any int shape, broadcast with the key's).

  Like `jax.random.fold_in`: a new key of the same implementation, independent of `key` and of
  other data values. The new words are hashes of counters disjoint from `bits`' (their top bit
  is set), so a folded key never equals a stretch of its parent's stream.
  """
  words, typed = _words(key)
  data = jnp.asarray(data).astype(jnp.uint32)
  n = words.shape[-1]
  shape = jnp.broadcast_shapes(words.shape[:-1], data.shape)
  words, data = jnp.broadcast_to(words, shape + (n,)), jnp.broadcast_to(data, shape)
  counters = data[..., None] * jnp.uint32(n) + jnp.arange(n, dtype=jnp.uint32)
  new = _hash(words[..., None, :], counters | jnp.uint32(1 << 31))
  return jax.random.wrap_key_data(new, impl=jax.random.key_impl(key)) if typed else new


def row_keys(key: Array, batch_size: int) -> Array:
  """[B] keys, one per row: fold(key, row index)."""
  return fold(key, jnp.arange(batch_size, dtype=jnp.uint32))


def bits(key: Array, count: int) -> Array:
  """[..., count] uint32 random words of the stream of each key [...] (counters 0..count-1)."""
  return bits_at(key, jnp.arange(count, dtype=jnp.uint32))


def bits_at(key: Array, counters: Array) -> Array:
  """The words at `counters` [..., N] (any order, repeats allowed) of each key's stream [...]:
  element i of `bits(key, n)` is `bits_at(key, i)`, without computing the others."""
  words, _ = _words(key)
  return _hash(words[..., None, :], jnp.asarray(counters).astype(jnp.uint32))


def row_bits(keys: Array, purpose: int, shape: tuple[int, ...]) -> Array:
  """[B, *shape] uint32 random bits, one independent stream per row and purpose."""
  count = 1
  for d in shape:
    count *= d
  return bits(fold(keys, purpose), count).reshape(keys.shape[:1] + tuple(shape))


def row_uniform(keys: Array, purpose: int, shape: tuple[int, ...]) -> Array:
  """[B, *shape] f32 uniforms in (0, 1), one independent stream per row and purpose."""
  return bits_to_uniform(row_bits(keys, purpose, shape))


def bits_to_uniform(bits: Array) -> Array:
  """f32 in (0, 1) from uint32 bits: 24 random bits, never exactly 0 or 1."""
  return ((bits >> 8).astype(jnp.float32) + 0.5) * (1.0 / (1 << 24))


def halves(words: Array, n: int) -> Array:
  """[B, n] 16-bit values (as uint32) from [B, ceil(n / 2)] random words: half the hashing."""
  return jnp.concatenate([words >> 16, words & 0xFFFF], axis=1)[:, :n]


def row_halves(keys: Array, purpose: int, n: int) -> Array:
  """[B, n] 16-bit random values (as uint32), one independent stream per row and purpose."""
  return halves(row_bits(keys, purpose, (-(-n // 2),)), n)


def half_to_uniform(half: Array) -> Array:
  """f32 in (0, 1) from 16-bit values."""
  return (half.astype(jnp.float32) + 0.5) * (1.0 / (1 << 16))
