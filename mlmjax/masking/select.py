"""Budgeted unit selection: which tokens a row predicts, exactly, without sorting.

Each unit gets a random key whose descending order is a draw without replacement in proportion to
the unit's weight (Gumbel keys; 16 random bits when uniform), with its position in the low bits
so keys are distinct (`order_keys`). A bisection over the keys finds the threshold above which
units just fit the budget (`fit_threshold`: 32 steps). Uniform single tokens take a radix select
over the 16 random bits instead (`radix_select`: 16 steps on bit planes), ties at the threshold
then going by position. BERT's rule then walks on down the order taking the units that still
fit, or SpanBERT's cuts the next one (`select_units`); `compact` lists the chosen positions.
Cost O(B * S * 32), no [B, S, S].

Sorting, top-k and scatters are avoided: on CPU they cost more than the whole masker. Instead
chosen and tied tokens are packed 32 to a word (`rows.pack_bits`), so counting them, taking the
rightmost ties and listing positions work on [B, S / 32] words and popcounts. `core.apply_plan`
calls these.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from mlmjax.masking import rng
from mlmjax.masking import rows

Array = jax.Array

# Unit log-weights at or above PRIORITY rank above every ordinary unit ("these first, then top
# up": entity masking). Ordinary log-weights are clipped to +-MAX_LOG_WEIGHT: with Gumbel noise
# from f32 uniforms bounded in [-2.8, 16.7], a priority unit always outranks the rest.
PRIORITY = 100.0
MAX_LOG_WEIGHT = 60.0


def unit_heads(start: Array) -> Array:
  """[B, S] int32 position of the latest unit start at or before each position (0 if none).

  With the starts of eligible units (forced starts included), that is each token's unit.
  """
  return jnp.maximum(latest_starts(start), 0)


def latest_starts(start: Array) -> Array:
  """[B, S] int32 position of the latest start at or before each position, -1 if none.

  From the starts packed 32 to a word: elementwise, no scan over the row.
  """
  return rows.last_set_at_or_before(rows.pack_bits(start), start.shape[1])


def order_keys(half: Array, start: Array, log_weight: Array | None) -> tuple[Array, int]:
  """[B, S] uint32 distinct keys of the units (0: not a selectable unit start), and their width.

  Args:
    half: [B, S] 16-bit random values.
    start: [B, S] bool selectable unit starts.
    log_weight: [B, S] unit log-weights at the starts, or None (uniform).
  Returns:
    keys: larger first, in an order that is a draw without replacement in proportion to
      exp(log_weight): the random value when uniform, else the Gumbel key lw - log(-log u)
      mapped monotonically to uint32. The low bits hold the position, so keys are distinct: a
      tie of the random parts (probability 2^-16 for a pair) is broken by position.
    width: keys are < 2^width (16 + log2 S when uniform, else 32).
  """
  s = start.shape[1]
  low = max(1, (s - 1).bit_length())
  pos = jnp.arange(s, dtype=jnp.uint32)
  if log_weight is None:
    v, width, never = (half << low) | pos, 16 + low, ~start
  else:
    gumbel = -jnp.log(-jnp.log(rng.half_to_uniform(half)))
    lw = log_weight.astype(jnp.float32)
    never = ~start | (lw == -jnp.inf)
    lw = jnp.where(lw >= PRIORITY, PRIORITY, jnp.clip(lw, -MAX_LOG_WEIGHT, MAX_LOG_WEIGHT))
    f = jax.lax.bitcast_convert_type(lw + gumbel, jnp.uint32)
    f = jnp.where(f >> 31 == 1, ~f, f | jnp.uint32(1 << 31))  # float order -> uint32 order
    v, width = ((f >> low) << low) | pos, 32
  return jnp.where(never, 0, jnp.maximum(v, 1)), width


def _count_dtype(n: int):
  """The narrowest integer type that counts to n: narrow lanes make the bisection's compares and
  sums 2-4x faster on CPU (and use less bandwidth everywhere)."""
  return jnp.uint8 if n < 256 else jnp.int16 if n < 2**15 else jnp.int32


def fit_threshold(v: Array, budget: Array, width: int = 32) -> Array:
  """[B] uint32 smallest t with #{v > t} <= budget: the tokens that fit, in key order.

  v: [B, S] keys < 2^width. A bisection over the keys' bits: one [B, S] count per bit, in
  uint16 lanes when width <= 16.
  """
  dtype = jnp.uint16 if width <= 16 else jnp.uint32
  count = _count_dtype(v.shape[1])
  vt = v.T.astype(dtype)  # counting along the major axis vectorises better on CPU
  def body(_, bounds):
    lo, hi = bounds
    mid = lo + (hi - lo) // 2
    above = (vt > mid[None, :]).astype(count).sum(axis=0, dtype=count)
    fits = above.astype(jnp.int32) <= budget
    return jnp.where(fits, lo, mid + 1), jnp.where(fits, mid, hi)
  b = v.shape[0]
  lo = jnp.zeros((b,), dtype)
  hi = jnp.full((b,), (1 << width) - 1, dtype)
  return jax.lax.fori_loop(0, width, body, (lo, hi))[1].astype(jnp.uint32)


def random_threshold(v: Array, width: int, budget: Array) -> Array:
  """[B] uint32 threshold T with #{v > T} <= budget, for uniform keys `(random16 << low) | pos`.

  The bisection runs on the 16 random bits alone, in uint16 lanes (3x faster on CPU than over
  all `width` bits); units whose random bits tie at the threshold fit or not by their position
  bits, which the callers resolve as the full keys order them.
  """
  low = width - 16
  t = fit_threshold(v >> low, budget, 16)
  return (t << low) | jnp.uint32((1 << low) - 1)


def select_tokens(half: Array, eligible: Array, log_weight: Array | None,
                  budget: Array) -> tuple[Array, Array]:
  """The `budget` best eligible tokens of each row: exactly the `budget` largest `order_keys`
  (all eligible tokens when fewer).

  Args:
    half: [B, S] 16-bit random values; eligible: [B, S] bool.
    log_weight: [B, S] token log-weights, or None (uniform).
    budget: [B] int32.
  Returns:
    chosen: [B, S] bool, and the same as packed bits [B, W] (`rows.pack_bits`).
  """
  if log_weight is not None:
    v, width = order_keys(half, eligible, log_weight)
    chosen = v > fit_threshold(v, budget, width)[:, None]
    return chosen, rows.pack_bits(chosen)
  # Uniform keys are (half, position): the threshold on the 16 random bits by radix select,
  # then the tokens whose bits tie with it, from the right (their positions order them) while
  # the budget lasts; usually 0 or 1 of them.
  t, above_bits, tied_bits, n_above = radix_select(half, eligible, budget)
  # The `need` rightmost tied tokens: from the (#tied - need)-th (0-based) on.
  skip = jnp.maximum(rows.count_bits(tied_bits) - (budget - n_above), 0)
  first = rows.nth_set_bit(tied_bits, skip[:, None], half.shape[1])
  t = t[:, None].astype(half.dtype)
  chosen = eligible & ((half > t) | ((half == t) & (jnp.arange(half.shape[1]) >= first)))
  return chosen, above_bits | (tied_bits & rows.bits_from(first[:, 0], tied_bits.shape[1]))


def radix_select(half: Array, eligible: Array, budget: Array
                 ) -> tuple[Array, Array, Array, Array]:
  """The smallest t with #{eligible half > t} <= budget, by radix select over bit planes.

  Equals `fit_threshold` over the 16-bit values, but from the top bit down on the tokens packed
  32 to a word (`rows.bit_planes`): each of the 16 steps keeps the tokens that still match the
  threshold's leading bits and counts them with popcounts, on [B, S / 32] words, where the
  bisection compares and counts all [B, S] values 16 times.

  Args:
    half: [B, S] 16-bit values; eligible: [B, S] bool; budget: [B] int32.
  Returns:
    t: [B] int32 threshold; above, tied: [B, W] packed bits of the eligible tokens with
    half > t and half == t; n_above: [B] int32 tokens in `above`.
  """
  planes = rows.bit_planes(half)

  def step(j, carry):
    t, above, tied, n_above = carry
    ones = tied & planes[j]  # matching so far, with a 1 in this bit
    n_ones = rows.count_bits(ones)
    bit = n_above + n_ones > budget  # [B]: the threshold's bit is 1 (the ones do not all fit)
    row = bit[:, None]
    return (t * 2 + bit, jnp.where(row, above, above | ones), jnp.where(row, ones, tied & ~ones),
            jnp.where(bit, n_above, n_above + n_ones))

  eligible_bits = rows.pack_bits(eligible)
  zeros = jnp.zeros_like(budget)
  return jax.lax.fori_loop(0, 16, step,
                           (zeros, jnp.zeros_like(eligible_bits), eligible_bits, zeros))


def _skip_fill(v: Array, token_key: Array, chosen: Array, left: Array) -> Array:
  """BERT's rule after the prefix: walk down the order, take each unit that still fits.

  Equivalent: repeatedly take the best remaining unit no longer than what is left. Each round
  takes one unit in every row that has one that fits, so `left` drops in every active row: at
  most max(budget) rounds, rarely more than two.
  """
  s = v.shape[1]
  # Tokens per unit, at its start: a unit runs up to the next selectable start or keyless token.
  pos = jnp.arange(s)
  length = rows.next_set_after(rows.pack_bits((v > 0) | (token_key == 0)), s) - pos

  def candidates(chosen, left):
    return (v > 0) & ~chosen & (length <= left[:, None])

  def body(carry):
    chosen, left, _, rounds = carry
    cand = candidates(chosen, left)
    best = jnp.max(jnp.where(cand, v, 0), axis=1, keepdims=True)
    left = left - jnp.where(cand & (v == best), length, 0).sum(axis=1)
    chosen = chosen | ((token_key == best) & (best > 0))
    return chosen, left, candidates(chosen, left).any(), rounds + 1

  init = (chosen, left, candidates(chosen, left).any(), 0)
  return jax.lax.while_loop(lambda c: c[2] & (c[3] < s), body, init)[0]


def unit_keys(half: Array, start: Array, eligible: Array, log_weight: Array | None,
              half_at: Callable[[Array], Array]) -> tuple[Array, Array, Array, int]:
  """Units and their keys: (head, v, token_key, width), each [B, S] but width.

  head: start of each token's unit (`unit_heads`); v, width: `order_keys` at the starts;
  token_key: each eligible token's unit key (0 elsewhere). `half_at(positions)` gives the
  random 16 bits `half` holds at those positions: with uniform keys each token recomputes its
  unit's key from its head instead of gathering it (gathers are slow on CPU).
  """
  v, width = order_keys(half, start, log_weight)
  latest = latest_starts(start)
  head = jnp.maximum(latest, 0)
  if log_weight is not None:
    return head, v, jnp.where(eligible, jnp.take_along_axis(v, head, axis=1), 0), width
  low = width - 16
  token_key = jnp.maximum((half_at(head) << low) | head.astype(jnp.uint32), 1)  # = v[head]
  return head, v, jnp.where(eligible & (latest >= 0), token_key, 0), width


def select_units(v: Array, width: int, head: Array, token_key: Array, budget: Array,
                 truncate: Array | bool, uniform: bool = False,
                 room: Array | None = None) -> Array | tuple[Array, Array]:
  """[B, S] bool chosen tokens: whole units in key order within the budget.

  Args:
    v: [B, S] uint32 order keys from `order_keys` (0 off unit starts), < 2^width.
    head: [B, S] int32 start of each token's unit (`unit_heads`).
    token_key: [B, S] each eligible token's unit key, 0 for ineligible tokens (`unit_keys`).
    budget: [B] int32 tokens.
    truncate: [B] bool or bool: cut the first unit that overflows (exact budget) instead of
      skipping it and going on (BERT; may fall short).
    uniform: the keys are `order_keys`' uniform ones (16 random bits above the position).
    room: [B] int32 or None. Given (with truncate=True), the unit that reaches the budget is
      taken whole, as far as `room` tokens in all allow (PMI-Masking draws units "until 15% of
      the tokens are selected": a unit's chance then does not depend on its length); returns
      (chosen, [B] int32 tokens of that unit left out for want of room).
  """
  left_of = lambda chosen: budget - chosen.sum(axis=1, dtype=jnp.int32)
  if truncate is not False:
    t = fit_threshold(token_key, budget, width)[:, None]
    chosen = token_key > t
    left = left_of(chosen)
    # The next unit in the order reaches the budget: its first `left` tokens, or all of it.
    pos = jnp.arange(v.shape[1], dtype=jnp.int32)
    crossing = (token_key == t) & (t > 0) & (left[:, None] > 0)
    take = left if room is None else room - (budget - left)
    cut_chosen = chosen | (crossing & (pos - head < take[:, None]))
    if room is not None:
      return cut_chosen, (crossing & (pos - head >= take[:, None])).sum(axis=1, dtype=jnp.int32)
  if truncate is True:
    return cut_chosen
  # Skipping: any prefix of the order that fits may start the walk down the order, so the
  # cheaper 16-bit threshold serves for uniform keys (the walk then takes the tied units).
  if uniform:
    chosen = token_key > random_threshold(token_key, width, budget)[:, None]
  elif truncate is False:
    chosen = token_key > fit_threshold(token_key, budget, width)[:, None]
  skip_chosen = _skip_fill(v, token_key, chosen, left_of(chosen))
  if truncate is False:
    return skip_chosen
  return jnp.where(jnp.asarray(truncate)[:, None], cut_chosen, skip_chosen)


def compact(chosen: Array, num_slots: int, length: int) -> Array:
  """[B, P] ascending positions of the chosen tokens; `length` (S) in unused slots.

  chosen: [B, W] packed bits (`rows.pack_bits`) with at most P = num_slots set per row.
  """
  ranks = jnp.arange(num_slots, dtype=jnp.int32)
  return rows.nth_set_bit(chosen, jnp.broadcast_to(ranks, (chosen.shape[0], num_slots)), length)
