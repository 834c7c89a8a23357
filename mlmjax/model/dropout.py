"""Dropout whose keep decisions come from a counter hash: cheap on every backend, mesh-independent.

`jax.random.bernoulli` runs threefry2x32 for every element: ~136 integer operations per decision,
which for BERT's 25 dropout sites on [B, S, D] activations costs more device time than the
layers' elementwise work. Dropout needs decisions that are independent across elements, layers
and steps, not a cryptographic stream, so the default here ("hash") takes them from the keyed
counter hash the masker uses (`mlmjax.masking.rng`): two rounds of a 32-bit finalizer per word,
and each word decides two elements (16-bit thresholds). The counter is the element's index in
the global array, so every device computes the decisions of its own shard, and the masks are the
same on any mesh.

"rbg" draws the bits from XLA's RngBitGenerator (Philox on GPU; fast, but its stream depends on
the partitioning), "threefry" is `jax.random.bernoulli` as before (the reference).
"""

import jax
import jax.numpy as jnp

from mlmjax.masking import rng

IMPLEMENTATIONS = ("hash", "rbg", "threefry")
_HALF = 1 << 16  # 16-bit thresholds: two decisions per 32-bit hash word


def global_index(shape: tuple[int, ...]) -> jax.Array:
  """uint32 [*shape]: each element's row-major position, from per-axis iotas (SPMD-friendly)."""
  index = jnp.zeros(shape, jnp.uint32)
  for axis, size in enumerate(shape):
    index = index * jnp.uint32(size) + jax.lax.broadcasted_iota(jnp.uint32, shape, axis)
  return index


def keep_mask(key: jax.Array, rate: float, shape: tuple[int, ...], impl: str = "hash",
              ) -> tuple[jax.Array, float]:
  """(bool [*shape] elements kept, the exact keep probability) for dropout at `rate`."""
  if impl == "threefry":
    return jax.random.bernoulli(key, 1.0 - rate, shape), 1.0 - rate
  threshold = round(rate * _HALF)  # drop an element when its 16 bits fall below this
  if impl == "rbg":
    rbg_key = jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl="rbg")
    halves = jax.random.bits(rbg_key, shape, jnp.uint16)
  elif impl == "hash":
    if shape[-1] % 2:
      halves = rng.bits_at(key, global_index(shape)) >> 16
    else:  # one word per pair of elements: its high half decides the first, the low the second
      words = rng.bits_at(key, global_index((*shape[:-1], shape[-1] // 2)))
      halves = jnp.concatenate([words >> 16, words & 0xFFFF], axis=-1)
  else:
    raise ValueError(f"config.model.dropout_impl must be one of {IMPLEMENTATIONS}, got {impl!r}")
  return halves >= threshold, 1.0 - threshold / _HALF


def dropout(x: jax.Array, rate: float, key: jax.Array | None, impl: str = "hash") -> jax.Array:
  """Inverted dropout of `x`; identity when `key` is None (evaluation) or `rate` is 0."""
  if key is None or rate == 0.0:
    return x
  keep, keep_probability = keep_mask(key, rate, x.shape, impl)
  return jnp.where(keep, x * jnp.asarray(1.0 / keep_probability, x.dtype), 0).astype(x.dtype)
