"""Dropout from a counter hash: the rate it promises, fresh masks per key, the same on any mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlmjax.model import dropout as dropout_lib


def test_global_index_is_the_row_major_position():
  np.testing.assert_array_equal(dropout_lib.global_index((3, 4, 6)),
                                np.arange(72, dtype=np.uint32).reshape(3, 4, 6))


@pytest.mark.parametrize("impl", dropout_lib.IMPLEMENTATIONS)
@pytest.mark.parametrize("last", [768, 33])  # a pair of elements per hash word, or one each
def test_drop_rate_and_scale(impl, last):
  x = jnp.ones((64, 16, last), jnp.float32)
  out = np.asarray(dropout_lib.dropout(x, 0.1, jax.random.key(0), impl))
  kept = out != 0
  # 64 x 16 x 768 = 786k Bernoulli(0.9) draws: the standard error of the kept share is 0.0003.
  assert abs(kept.mean() - 0.9) < 0.003 * (1 if last == 768 else 4)
  _, keep_probability = dropout_lib.keep_mask(jax.random.key(0), 0.1, x.shape, impl)
  np.testing.assert_allclose(out[kept], 1.0 / keep_probability, rtol=1e-6)  # inverted dropout
  assert abs(keep_probability - 0.9) < 1e-4


def test_hash_masks_follow_the_key_and_have_no_pattern():
  shape = (8, 128, 64)
  a, _ = dropout_lib.keep_mask(jax.random.key(1), 0.5, shape)
  b, _ = dropout_lib.keep_mask(jax.random.key(1), 0.5, shape)
  c, _ = dropout_lib.keep_mask(jax.random.key(2), 0.5, shape)
  np.testing.assert_array_equal(a, b)
  assert 0.45 < float(jnp.mean(a != c)) < 0.55  # another key: independent decisions
  # The two halves of a hash word decide elements d and d + D/2: they must not agree more
  # than chance (0.5 at rate 0.5; 65k pairs, standard error 0.002).
  agree = jnp.mean(a[..., :32] == a[..., 32:])
  assert abs(float(agree) - 0.5) < 0.01
  # Neighbouring rows and positions are independent too.
  assert abs(float(jnp.mean(a[1:] == a[:-1])) - 0.5) < 0.01


def test_hash_masks_depend_on_the_global_position_only():
  """What makes the masks the same on any mesh: each element's decision is a function of its
  position in the global array, which the SPMD partitioner gives every shard as an offset iota."""
  key = jax.random.key(3)
  keep, _ = dropout_lib.keep_mask(key, 0.1, (4, 8, 6))
  words = np.asarray(jax.vmap(lambda i: dropout_lib.rng.bits_at(key, i))(
      jnp.arange(4 * 8 * 3, dtype=jnp.uint32)))
  halves = np.concatenate([words.reshape(4, 8, 3) >> 16, words.reshape(4, 8, 3) & 0xFFFF], -1)
  np.testing.assert_array_equal(keep, halves >= round(0.1 * 65536))
  index = dropout_lib.global_index((4, 8, 6))
  np.testing.assert_array_equal(index[2:], np.arange(2 * 48, 4 * 48).reshape(2, 8, 6))


def test_no_key_or_rate_zero_is_the_identity():
  x = jnp.ones((2, 3, 4))
  assert dropout_lib.dropout(x, 0.1, None) is x
  assert dropout_lib.dropout(x, 0.0, jax.random.key(0)) is x


def test_unknown_implementation_is_named():
  with pytest.raises(ValueError, match="dropout_impl"):
    dropout_lib.keep_mask(jax.random.key(0), 0.1, (2, 2), "philox")
