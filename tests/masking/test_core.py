"""Contract tests of the masking core: eligibility, exact budgets, labels, corruption, keys."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlmjax import masking
from mlmjax.masking import rng
from mlmjax.masking import rows
from mlmjax.masking import select

PAD, CLS, SEP, MASK = 0, 2, 3, 4
B, S, P = 16, 48, 12


def _config(**overrides):
  cfg = masking.default_config()
  cfg.max_predictions = P
  cfg.update(overrides)
  return cfg


def _scheduled(**overrides):
  """Rate = step / 100: one compiled masker serves every rate (the schedule is traced)."""
  cfg = _config(**overrides)
  cfg.schedule.update(kind="linear", start=0.0, end=1.0, steps=100)
  return cfg


@pytest.fixture(scope="module")
def batch(make_ids):
  # Rows of every length class: empty, [CLS] only, [CLS][SEP] (n = 0), short, full, packed.
  lengths = [0, 1, 2, 3, 4, 7, 10, 20, 30, 40, 47, 48, 48, 48, 25, 33]
  ids, seg = make_ids(0, B, S, lengths=lengths)
  packed, pseg = make_ids(1, 4, S, lengths=[48, 48, 40, 44], packed=3)
  ids[-4:], seg[-4:] = packed, pseg
  return {"input_ids": jnp.asarray(ids), "segment_ids": jnp.asarray(seg)}


@pytest.fixture(scope="module")
def run(tables):
  """run(cfg, batch, step, key=0) with one jitted masker per distinct config."""
  cache = {}

  def go(cfg, batch, step=0, key=0):
    name = cfg.to_json()
    if name not in cache:
      cache[name] = jax.jit(masking.make_masker(cfg, tables))
    return cache[name](jax.random.key(key), batch, step)
  return go


def test_output_shapes_and_dtypes(run, batch):
  out = run(_config(), batch)
  assert out.input_ids.shape == (B, S) and out.input_ids.dtype == jnp.int32
  for name in ("positions", "labels"):
    assert getattr(out, name).shape == (B, P) and getattr(out, name).dtype == jnp.int32
  assert out.weights.shape == (B, P) and out.weights.dtype == jnp.float32
  assert out.num_clipped.shape == (B,) and out.num_clipped.dtype == jnp.int32


def test_specials_and_padding_never_selected(run, batch, tables, selected):
  special = np.asarray(tables.is_special)[np.asarray(batch["input_ids"])]
  for step in range(40, 60):  # rates 0.4 to 0.6
    out = run(_scheduled(), batch, step)
    assert not (selected(out) & special).any()
    assert np.isin(np.asarray(out.labels)[np.asarray(out.weights) > 0],
                   np.flatnonzero(np.asarray(tables.is_special)), invert=True).all()


@pytest.mark.parametrize("rate", [0.0, 0.15, 0.5, 1.0])
def test_exact_budget_every_row(run, batch, tables, expected_budget, rate):
  ids = np.asarray(batch["input_ids"])
  out = run(_scheduled(max_predictions=S), batch, round(rate * 100))
  want, clipped = expected_budget(ids, tables, rate, S)
  np.testing.assert_array_equal(np.asarray(out.weights).sum(1), want)
  np.testing.assert_array_equal(np.asarray(out.num_clipped), clipped)
  if rate == 0.0:
    assert np.asarray(out.weights).sum() == 0
    np.testing.assert_array_equal(out.input_ids, ids)
  if rate == 1.0:  # every eligible token, and nothing else
    special = np.asarray(tables.is_special)[ids]
    np.testing.assert_array_equal(np.asarray(out.weights).sum(1), (~special).sum(1))


def test_zero_eligible_rows_get_nothing(run, batch):
  out = run(_config(rate=0.02, min_one=True), batch)  # round(0.02 n) = 0 for n < 25
  # Rows 0-2 have no eligible token: no prediction even with min_one.
  np.testing.assert_array_equal(np.asarray(out.weights)[:3], 0.0)
  assert (np.asarray(out.weights)[3:].sum(1) >= 1).all()


def test_budget_above_max_predictions_is_clipped_and_counted(run, batch, tables,
                                                             expected_budget):
  ids = np.asarray(batch["input_ids"])
  out = run(_scheduled(), batch, 60)
  want, clipped = expected_budget(ids, tables, 0.6, P)
  np.testing.assert_array_equal(np.asarray(out.weights).sum(1), want)
  np.testing.assert_array_equal(np.asarray(out.num_clipped), clipped)
  assert clipped.max() > 0 and (want <= P).all()


def test_labels_positions_weights(run, batch):
  ids = np.asarray(batch["input_ids"])
  out = run(_scheduled(), batch, step=30)
  pos, lab, w = (np.asarray(x) for x in (out.positions, out.labels, out.weights))
  used = w > 0
  np.testing.assert_array_equal(lab[used], np.take_along_axis(ids, pos, 1)[used])
  assert (pos[~used] == 0).all() and (lab[~used] == 0).all() and (w[~used] == 0).all()
  for r in range(B):  # used slots first, ascending, distinct
    n = used[r].sum()
    assert used[r, :n].all() and (np.diff(pos[r, :n]) > 0).all()


def test_unselected_positions_unchanged(run, batch, selected):
  ids = np.asarray(batch["input_ids"])
  out = run(_scheduled(mask_prob=0.0, random_prob=1.0), batch, 30)
  sel = selected(out)
  np.testing.assert_array_equal(np.asarray(out.input_ids)[~sel], ids[~sel])


def test_count_specials_reproduces_bert_budgets(tables, make_ids):
  """BERT: round(0.15 * len(tokens)) with [CLS]/[SEP] counted, min 1: 19 at 128, 77 at 512."""
  for length, p, want in ((128, 20, 19), (512, 80, 77)):
    ids, _ = make_ids(2, 2, length, lengths=[length, length])
    ids[:, length // 2] = SEP  # two segments: [CLS] A [SEP] B [SEP], as BERT's pairs
    cfg = _config(max_predictions=p, count_specials=True, min_one=True)
    out = jax.jit(masking.make_masker(cfg, tables))(jax.random.key(0), {"input_ids": ids}, 0)
    np.testing.assert_array_equal(np.asarray(out.weights).sum(1), [want, want])
  # Counting eligible tokens only (our default): round(0.15 * 509) = 76 at 512.
  cfg.count_specials = False
  out = jax.jit(masking.make_masker(cfg, tables))(jax.random.key(0), {"input_ids": ids}, 0)
  np.testing.assert_array_equal(np.asarray(out.weights).sum(1), [76, 76])


def test_prob_round_mean_is_p_times_n(tables, make_ids):
  """fairseq: int(p * n + U) has mean exactly p * n (here 0.15 * 27 = 4.05)."""
  ids, _ = make_ids(3, 512, 32, lengths=[29] * 512)  # 27 eligible tokens per row
  cfg = _config(count_mode="prob_round")
  f = jax.jit(masking.make_masker(cfg, tables))
  counts = np.concatenate([np.asarray(f(jax.random.key(0), {"input_ids": ids}, s).weights).sum(1)
                           for s in range(8)])
  assert set(np.unique(counts)) == {4.0, 5.0}
  # 4096 rows, sd of the mean = sqrt(0.05 * 0.95 / 4096) = 0.0034: 5 sd tolerance.
  assert abs(counts.mean() - 4.05) < 0.017


def test_bernoulli_and_ceil_counts(tables, make_ids):
  ids, _ = make_ids(4, 512, 32, lengths=[29] * 512)
  out = jax.jit(masking.make_masker(_config(count_mode="ceil"), tables))(
      jax.random.key(0), {"input_ids": ids}, 0)
  assert (np.asarray(out.weights).sum(1) == 5).all()  # ceil(4.05)
  out = jax.jit(masking.make_masker(_config(count_mode="bernoulli"), tables))(
      jax.random.key(0), {"input_ids": ids}, 0)
  counts = np.asarray(out.weights).sum(1)
  # Binomial(27, 0.15): mean 4.05, var 3.44; mean of 512 rows within 5 sd = 0.41.
  assert abs(counts.mean() - 4.05) < 0.41 and abs(counts.var() - 3.44) < 1.2


def test_same_key_and_step_identical_different_step_differs(run, batch):
  cfg = _config(rate=0.3)
  a, b = run(cfg, batch, 7), run(cfg, batch, 7)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  c = run(cfg, batch, 8)
  assert (np.asarray(a.positions) != np.asarray(c.positions)).any(axis=1).sum() >= 10
  d = run(cfg, batch, 7, key=1)
  assert (np.asarray(a.positions) != np.asarray(d.positions)).any()


def test_row_masks_do_not_depend_on_other_rows(run, batch):
  """A row's masks depend on its index, key and step, not on the rest of the batch."""
  cfg = _config(rate=0.3)
  full = run(cfg, batch, 3)
  other = dict(batch, input_ids=batch["input_ids"].at[:8].set(PAD))
  part = run(cfg, other, 3)
  np.testing.assert_array_equal(full.positions[8:], part.positions[8:])
  np.testing.assert_array_equal(full.input_ids[8:], part.input_ids[8:])


def test_replacement_mix_marginals(tables, make_ids, selected):
  """80/10/10 per token: shares of [MASK], changed and kept among ~10k predictions."""
  ids, _ = make_ids(5, 256, 64, lengths=[64] * 256)
  f = jax.jit(masking.make_masker(_config(rate=0.3, max_predictions=20), tables))
  masked = changed = total = 0
  for step in range(2):
    out = f(jax.random.key(0), {"input_ids": ids}, step)
    sel = selected(out)
    new = np.asarray(out.input_ids)[sel]
    masked += (new == MASK).sum()
    changed += ((new != MASK) & (new != ids[sel])).sum()
    total += sel.sum()
  # A random id equals the original with probability 1/60: changed ~ 0.1 * 59/60.
  # sd of a share over ~9700 draws <= 0.005: tolerance 0.02 (4 sd).
  assert abs(masked / total - 0.8) < 0.02
  assert abs(changed / total - 0.1 * 59 / 60) < 0.02


def test_mask_only_mix(run, batch, selected):
  out = run(_scheduled(mask_prob=1.0, random_prob=0.0), batch, 50)
  assert (np.asarray(out.input_ids)[selected(out)] == MASK).all()


def test_random_replacements_never_special_and_uniform(tables, make_ids, selected):
  """non_special: every replacement is one of the 60 non-special ids, uniformly (chi-square)."""
  ids, _ = make_ids(6, 128, 64, lengths=[64] * 128)
  cfg = _config(rate=0.3, max_predictions=20, mask_prob=0.0, random_prob=1.0)
  f = jax.jit(masking.make_masker(cfg, tables))
  draws = []
  for step in range(4):
    out = f(jax.random.key(1), {"input_ids": ids}, step)
    draws.append(np.asarray(out.input_ids)[selected(out)])
  draws = np.concatenate(draws)
  special = np.asarray(tables.is_special)
  assert not special[draws].any()
  allowed = np.flatnonzero(~special)
  counts = np.bincount(draws, minlength=tables.vocab_size)[allowed]
  expected = len(draws) / len(allowed)
  chi2 = ((counts - expected) ** 2 / expected).sum()
  # 59 degrees of freedom: P(chi2 > 100) < 0.001 under uniformity.
  assert chi2 < 100, chi2


def test_full_vocab_source_reaches_specials(tables, make_ids, selected):
  ids, _ = make_ids(7, 128, 64, lengths=[64] * 128)
  cfg = _config(rate=0.3, mask_prob=0.0, random_prob=1.0, random_source="full_vocab")
  out = jax.jit(masking.make_masker(cfg, tables))(jax.random.key(0), {"input_ids": ids}, 0)
  draws = np.asarray(out.input_ids)[selected(out)]
  assert np.asarray(tables.is_special)[draws].any() and draws.max() < tables.vocab_size


def test_p_larger_than_sequence(tables, make_ids, expected_budget):
  ids, _ = make_ids(8, 4, 8, lengths=[8, 6, 2, 0])
  out = jax.jit(masking.make_masker(_config(rate=1.0, max_predictions=16), tables))(
      jax.random.key(0), {"input_ids": ids}, 0)
  assert out.positions.shape == (4, 16)
  np.testing.assert_array_equal(np.asarray(out.weights).sum(1), [6, 4, 0, 0])


def test_token_batch_and_dict_agree(run, batch):
  cfg = _config()
  a = run(cfg, batch, 1)
  b = run(cfg, masking.TokenBatch(**batch), 1)
  np.testing.assert_array_equal(a.input_ids, b.input_ids)


def test_bad_config_raises_clear_error(tables):
  with pytest.raises(ValueError, match="mask_prob"):
    masking.make_masker(_config(mask_prob=0.9, random_prob=0.2), tables)
  with pytest.raises(ValueError, match="unknown masking strategy"):
    masking.make_masker(_config(strategy="nope"), tables)


def test_no_large_intermediates_or_callbacks(tables, batch, intermediate_shapes):
  """The jaxpr holds no [B, S, S] or [B, S, V] array and no host callback."""
  masker = masking.make_masker(_config(), tables)
  jaxpr = jax.make_jaxpr(masker)(jax.random.key(0), batch, 0)
  assert "callback" not in str(jaxpr)
  shapes = intermediate_shapes(jaxpr)
  assert (B, P) in shapes  # the walk sees the jaxpr's arrays
  assert not [x for x in shapes if len(x) >= 3 and x[-2:] in ((S, S), (S, tables.vocab_size))]


def test_row_keys_depend_only_on_index():
  k = jax.random.key(3)
  np.testing.assert_array_equal(jax.random.key_data(rng.row_keys(k, 8))[:4],
                                jax.random.key_data(rng.row_keys(k, 4)))


def _reference_units(v, head, eligible, budget, truncate):
  """BERT's greedy (skip) or SpanBERT's (truncate) over units in key order, in plain numpy."""
  chosen = np.zeros(v.shape, bool)
  for r in range(v.shape[0]):
    units = [(v[r, h], h, np.flatnonzero(eligible[r] & (head[r] == h))) for h in
             np.flatnonzero(v[r] > 0)]
    left = budget[r]
    for _, _, tokens in sorted(units, key=lambda u: -int(u[0])):
      if len(tokens) <= left:
        chosen[r, tokens] = True
        left -= len(tokens)
      elif truncate:
        chosen[r, tokens[:left]] = True
        break
  return chosen


@pytest.mark.parametrize("uniform", [False, True])
@pytest.mark.parametrize("truncate", [False, True])
def test_select_units_matches_greedy_reference(truncate, uniform):
  """Weighted (32-bit Gumbel) keys and uniform ones (the 16-bit threshold, then the walk)."""
  gen = np.random.default_rng(4)
  b, s = 64, 40
  eligible = gen.random((b, s)) < 0.9
  start = eligible & ((gen.random((b, s)) < 0.4) | rows.shift_right(~eligible, True))
  head = select.unit_heads(jnp.asarray(start))
  keys = rng.row_keys(jax.random.key(0), b)
  log_weight = None if uniform else jnp.asarray(gen.normal(size=(b, s)), jnp.float32)
  half = rng.row_halves(keys, 9, s) >> (12 if uniform else 0)  # uniform: force many ties
  v, width = select.order_keys(half, jnp.asarray(start), log_weight)
  budget = jnp.asarray(gen.integers(0, 16, b))
  token_key = jnp.where(jnp.asarray(eligible), jnp.take_along_axis(v, head, axis=1), 0)
  got = jax.jit(select.select_units, static_argnums=(1, 5, 6))(v, width, head, token_key,
                                                            budget, truncate, uniform)
  want = _reference_units(np.asarray(v), np.asarray(head), eligible, np.asarray(budget), truncate)
  np.testing.assert_array_equal(got, want)
  assert (np.asarray(got).sum(1) <= np.asarray(budget)).all()


def test_select_tokens_takes_the_largest_keys_exactly_even_with_ties():
  """The 16-bit threshold plus the tie rule equals a plain top-`budget` by full key."""
  gen = np.random.default_rng(5)
  b, s = 64, 40
  eligible = jnp.asarray(gen.random((b, s)) < 0.8)
  half = rng.row_halves(rng.row_keys(jax.random.key(1), b), 9, s) >> 13  # 3 bits: many ties
  v, width = select.order_keys(half, eligible, None)
  budget = jnp.asarray(gen.integers(0, 30, b))
  got, got_bits = jax.jit(select.select_tokens)(half, eligible, None, budget)
  got = np.asarray(got)
  np.testing.assert_array_equal(got_bits, rows.pack_bits(jnp.asarray(got)))
  order = np.argsort(-np.asarray(v).astype(np.int64), axis=1, kind="stable")
  for r in range(b):
    k = min(int(budget[r]), int(np.sum(np.asarray(v)[r] > 0)))
    want = np.zeros(s, bool)
    want[order[r, :k]] = True
    np.testing.assert_array_equal(got[r], want, err_msg=f"row {r}")


def test_unit_keys_recomputed_from_heads_equal_the_gathered_ones():
  gen = np.random.default_rng(6)
  b, s = 32, 48
  eligible = jnp.asarray(gen.random((b, s)) < 0.9)
  start = eligible & (jnp.asarray(gen.random((b, s)) < 0.3) | rows.shift_right(~eligible, True))
  keys = rng.row_keys(jax.random.key(3), b)
  half = rng.bits(keys, s) >> 16
  head, v, token_key, _ = select.unit_keys(half, start, eligible, None,
                                         lambda at: rng.bits_at(keys, at) >> 16)
  np.testing.assert_array_equal(
      token_key, jnp.where(eligible, jnp.take_along_axis(v, head, axis=1), 0))
  assert int((token_key > 0).sum()) == int(eligible.sum())  # every eligible token has a key
  # An eligible first token that starts no unit belongs to none: no key, as the gather gives.
  _, _, token_key, _ = select.unit_keys(half, start.at[:, 0].set(False), eligible.at[:, 0].set(True),
                                      None, lambda at: rng.bits_at(keys, at) >> 16)
  assert not bool(token_key[:, 0].any())


@pytest.mark.parametrize("bits", [3, 16])
def test_radix_select_equals_the_bisection(bits):
  """Same threshold as `fit_threshold` on every row (ties, budget 0, budget >= eligible, rows
  with nothing eligible), and the packed above / tied sets and count that go with it."""
  gen = np.random.default_rng(bits)
  b, s = 96, 70
  half = jnp.asarray(gen.integers(0, 1 << bits, (b, s)), jnp.uint32)
  eligible = jnp.asarray(gen.random((b, s)) < gen.random((b, 1)))
  eligible = eligible.at[0].set(False)
  budget = jnp.asarray(gen.integers(0, s + 5, b), jnp.int32).at[1].set(0)
  t, above, tied, n_above = jax.jit(select.radix_select)(half, eligible, budget)
  want = select.fit_threshold(jnp.where(eligible, half, 0), budget, 16)
  np.testing.assert_array_equal(t, want)
  np.testing.assert_array_equal(above, rows.pack_bits(eligible & (half > want[:, None])))
  np.testing.assert_array_equal(tied, rows.pack_bits(eligible & (half == want[:, None])))
  np.testing.assert_array_equal(n_above, (eligible & (half > want[:, None])).sum(1))
