"""Tests of unit grouping: words, forced starts, geometric spans, T5 noise spans, annotations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlmjax.masking import core
from mlmjax.masking import rng
from mlmjax.masking import rows
from mlmjax.masking import select
from mlmjax.masking import units

PAD, CLS, SEP = 0, 2, 3
W, PIECE = 5, 45  # first word id, first '##' piece id of the conftest vocabulary


def test_forced_starts_after_specials_and_documents(tables):
  ids = jnp.array([[CLS, PIECE, W, PIECE, SEP, PIECE, W, PAD]])
  seg = jnp.array([[1, 1, 1, 2, 2, 3, 3, 0]])
  np.testing.assert_array_equal(core.forced_starts(ids, tables, None),
                                [[1, 1, 0, 0, 0, 1, 0, 0]])
  np.testing.assert_array_equal(core.forced_starts(ids, tables, seg), [[1, 1, 0, 1, 0, 1, 0, 1]])


def test_unit_heads():
  start = jnp.array([[0, 1, 0, 0, 1, 0, 0, 1]], bool)
  np.testing.assert_array_equal(select.unit_heads(start), [[0, 1, 1, 1, 4, 4, 4, 7]])


def test_annotated_spans_are_single_units():
  span_ids = jnp.array([[0, 1, 1, 1, 0, 0, 2, 2, 3, 0]])
  word = jnp.array([[1, 1, 1, 0, 1, 0, 1, 1, 1, 0]], bool)
  start, in_span = units.annotated_spans(span_ids, word)
  # Spans 1, 2 and 3 each start once; outside spans the word starts; after a span, a new unit.
  np.testing.assert_array_equal(start, [[1, 1, 0, 0, 1, 0, 1, 0, 1, 1]])
  np.testing.assert_array_equal(in_span, span_ids > 0)


def test_span_length_probs_truncated_geometric():
  probs = units.span_length_probs(0.2, 10)
  np.testing.assert_allclose(probs[:3], [0.224, 0.179, 0.143], atol=1e-3)
  assert abs((np.arange(1, 11) * probs).sum() - 3.80) < 0.01


def test_sampled_span_lengths_match_truncated_geometric():
  u = jax.random.uniform(jax.random.key(0), (200_000,), minval=1e-7, maxval=1.0)
  lengths = np.asarray(units.sample_span_lengths(u, 0.2, 10))
  assert lengths.min() == 1 and lengths.max() == 10
  counts = np.bincount(lengths, minlength=11)[1:]
  expected = units.span_length_probs(0.2, 10) * len(lengths)
  chi2 = ((counts - expected) ** 2 / expected).sum()
  assert chi2 < 30  # 9 degrees of freedom: P(chi2 > 30) < 0.001
  assert abs(lengths.mean() - 3.80) < 0.02  # sd of the mean: 2.7 / sqrt(2e5) = 0.006


_geometric = jax.jit(units.geometric_spans, static_argnums=(2, 3))


def test_geometric_spans_histogram_in_words():
  """Spans over rows of one-token words: lengths in words follow truncated Geo(0.2)."""
  b, s = 256, 128
  words = jnp.ones((b, s), bool).at[:, 0].set(False)
  u = rng.row_uniform(rng.row_keys(jax.random.key(1), b), rng.SPANS, (s,))
  starts = np.asarray(_geometric(u, words, 0.2, 10))
  lengths = []
  for row in starts:
    pos = np.flatnonzero(row)
    lengths += list(np.diff(pos))  # complete spans (the last one is cut by the row end)
  lengths = np.asarray(lengths)
  counts = np.bincount(lengths, minlength=11)[1:]
  expected = units.span_length_probs(0.2, 10) * len(lengths)
  assert ((counts - expected) ** 2 / expected).sum() < 30
  assert abs(lengths.mean() - 3.8) < 0.1  # ~8000 spans, sd of the mean 0.03


def test_geometric_spans_start_on_word_starts(tables, make_ids):
  ids, _ = make_ids(0, 32, 64, piece_prob=0.5)
  ids = jnp.asarray(ids)
  words = core.eligible_tokens(ids, tables) & units.word_starts(ids, tables)
  u = rng.row_uniform(rng.row_keys(jax.random.key(0), 32), rng.SPANS, (64,))
  starts = _geometric(u, words, 0.2, 10)
  assert not np.asarray(starts & ~words).any()
  assert np.asarray(starts).sum(1).min() >= 1


_t5 = jax.jit(units.t5_noise, static_argnums=3)


@pytest.mark.parametrize("num_noise,mean", [(0, 3.0), (1, 3.0), (15, 3.0), (30, 3.0), (44, 3.0),
                                            (20, 1.0)])
def test_t5_noise_exact_counts(num_noise, mean):
  b, s = 64, 48
  eligible = jnp.ones((b, s), bool).at[:, 0].set(False).at[:, 47].set(False)  # 46 eligible
  bits = rng.row_halves(rng.row_keys(jax.random.key(2), b), rng.SPANS, 2 * s).reshape(b, 2, s)
  noise, start = _t5(bits, eligible, jnp.full((b,), num_noise), mean)
  noise, start = np.asarray(noise), np.asarray(start)
  np.testing.assert_array_equal(noise.sum(1), num_noise)
  assert not (noise & ~np.asarray(eligible)).any()
  runs = (noise & ~np.pad(noise[:, :-1], ((0, 0), (1, 0)))).sum(1)  # maximal noise runs
  want = 0 if num_noise == 0 else max(1, min(round(num_noise / mean), num_noise, 46 - num_noise))
  np.testing.assert_array_equal(runs, want)  # runs never touch: non-noise between them
  np.testing.assert_array_equal(start.sum(1), want)
  if 0 < num_noise < 46:
    assert not noise[:, 1].any()  # as T5: a non-noise run comes first


def test_t5_noise_is_uniform_over_positions():
  b, s = 512, 40
  eligible = jnp.ones((b, s), bool)
  bits = rng.row_halves(rng.row_keys(jax.random.key(3), b), rng.SPANS, 2 * s).reshape(b, 2, s)
  noise, _ = _t5(bits, eligible, jnp.full((b,), 12), 3.0)
  rate = np.asarray(noise).mean(0)
  assert rate[0] == 0  # non-noise first
  assert np.abs(rate[5:-5] - 0.3).max() < 0.1  # interior positions near 12/40


@pytest.mark.parametrize("s", [40, 128, 1000])
def test_prefix_sum_is_exact_for_its_whole_input_range(s):
  """Blocks of 128 by a bf16 matmul, then block offsets: exact for 0..256 per element."""
  x = np.random.default_rng(s).integers(0, 257, (3, s))
  np.testing.assert_array_equal(rows.prefix_sum(jnp.asarray(x, jnp.int32)), np.cumsum(x, axis=1))


@pytest.mark.parametrize("s", [1, 31, 32, 33, 128, 500])
def test_packed_bits_count_combine_and_list_the_true_positions(s):
  """pack_bits / count_bits / bits_from / nth_set_bit against numpy, with word edges, empty
  and full rows, and ranks past the end or negative."""
  gen = np.random.default_rng(s)
  mask = gen.random((6, s)) < np.array([0.0, 1.0, 0.05, 0.5, 0.95, 0.3])[:, None]
  bits = rows.pack_bits(jnp.asarray(mask))
  assert bits.shape == (6, -(-s // 32)) and bits.dtype == jnp.uint32
  np.testing.assert_array_equal(rows.count_bits(bits), mask.sum(1))
  first = gen.integers(0, s + 40, 6)
  from_first = np.arange(-(-s // 32) * 32) >= first[:, None]
  np.testing.assert_array_equal(rows.bits_from(jnp.asarray(first), bits.shape[1]),
                                rows.pack_bits(jnp.asarray(from_first)))
  ranks = np.concatenate([np.arange(-1, s + 1)[None].repeat(6, 0)], 1)
  got = np.asarray(jax.jit(rows.nth_set_bit, static_argnums=2)(bits, jnp.asarray(ranks), s))
  for r in range(6):
    where = np.flatnonzero(mask[r])
    want = [where[k] if 0 <= k < len(where) else s for k in ranks[r]]
    np.testing.assert_array_equal(got[r], want, err_msg=f"row {r}")


def test_bit_planes_hold_each_bit_of_the_values():
  values = np.random.default_rng(0).integers(0, 1 << 16, (5, 70))
  planes = np.asarray(rows.bit_planes(jnp.asarray(values, jnp.uint32)))
  for j in range(16):
    bit = (values >> (15 - j)) & 1 == 1
    np.testing.assert_array_equal(planes[j], rows.pack_bits(jnp.asarray(bit)), err_msg=f"{j}")


@pytest.mark.parametrize("s", [1, 31, 32, 33, 128, 300])
def test_last_and_next_set_bits_match_a_scan(s):
  """Unit heads and unit ends from packed bits, against a plain loop, across word edges."""
  gen = np.random.default_rng(s)
  mask = gen.random((4, s)) < np.array([0.0, 0.05, 0.3, 1.0])[:, None]
  bits = rows.pack_bits(jnp.asarray(mask))
  last = np.asarray(rows.last_set_at_or_before(bits, s))
  after = np.asarray(rows.next_set_after(bits, s))
  for r in range(4):
    for i in range(s):
      before = np.flatnonzero(mask[r, :i + 1])
      later = np.flatnonzero(mask[r, i + 1:])
      assert last[r, i] == (before[-1] if len(before) else -1), (r, i)
      assert after[r, i] == (i + 1 + later[0] if len(later) else s), (r, i)
