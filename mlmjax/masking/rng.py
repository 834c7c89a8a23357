"""Per-row randomness: one key per row, split by purpose, so masks do not depend on sharding.

A row's draws come from `fold_in(key, row)`, then `fold_in(row_key, purpose)`; with JAX's
partitionable threefry they are the same whichever device holds the row. Random bits are drawn
in as few calls as possible (each PRNG call compiles its own hash rounds) and halved into 16-bit
values where 16 bits suffice.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

# fold_in constants: independent streams of a row's key. The core draws all its bits in one
# call (CORE); strategies use the others.
CORE, COUNT, SPANS, MIXTURE = 1, 2, 3, 4


def row_keys(key: Array, batch_size: int) -> Array:
  """[B] keys, one per row: fold_in(key, row index)."""
  return jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(batch_size))


def row_bits(keys: Array, purpose: int, shape: tuple[int, ...]) -> Array:
  """[B, *shape] uint32 random bits, one independent stream per row and purpose."""
  return jax.vmap(lambda k: jax.random.bits(jax.random.fold_in(k, purpose), shape))(keys)


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
