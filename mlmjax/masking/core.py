"""Core of on-device masking: batch and result types, budgeted unit selection, 80/10/10 corruption.

Every strategy reduces to a `Plan` (which tokens move together, and how likely each unit is);
`apply_plan` then does the rest, identically for all strategies:

1. eligible tokens: not special (PAD included), per the vocabulary tables;
2. a token budget per row, `round(rate * eligible)` by default, capped at P = max_predictions;
3. units drawn without replacement in proportion to their weights (Gumbel top-k), whole units
   only, until the budget is met;
4. corruption of the chosen tokens: [MASK] / random id / kept, per token or per unit.

All randomness comes from per-row keys [B] (`rng.row_keys`), so a row's masks depend on the batch
key, the step and the row's index, never on how the batch is sharded across devices.

How the draw runs without sorting (sorts and top-k are slow on CPU, and the selection must be
exact): each unit gets a random key whose order is a weighted random order (Gumbel keys for
weights, 16 random bits when uniform), with its position in the low bits so keys are distinct; a
bisection finds the key threshold above which the units just fit the budget (16 steps in uint16
lanes for uniform keys, ties at the threshold then going by position; 32 steps for weighted
ones); BERT's rule then continues down the order, skipping units too long for what is left (or,
SpanBERT's, cuts the next unit to fit). Cost: O(B * S * 32), no [B, S, S]. Corruption is decided
per position, elementwise, so nothing is gathered into prediction slots and scattered back but
the chosen positions themselves (`compact`).

What made it fast on CPU (`mlmjax-bench-masking`; docs/BENCHMARKS.md has the measurements): no
threefry below the caller's key (`rng`), narrow lanes in the bisection, no gathers where a value
can be recomputed (unit keys from their heads, specials by id ranges), and few passes over [B, S].
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlmjax.masking import corruption
from mlmjax.masking import rng
from mlmjax.masking import rows
from mlmjax.masking.tables import VocabTables

Array = jax.Array

# Unit log-weights at or above PRIORITY rank above every ordinary unit ("these first, then top
# up": entity masking). Ordinary log-weights are clipped to +-MAX_LOG_WEIGHT: with Gumbel noise
# from f32 uniforms bounded in [-2.8, 16.7], a priority unit always outranks the rest.
PRIORITY = 100.0
MAX_LOG_WEIGHT = 60.0

@dataclasses.dataclass(frozen=True)
class TokenBatch:
  """Device-side input, all [B, S]; annotations are optional (None when absent).

  Attributes:
    input_ids: int32 packed rows: [CLS] ... [SEP] ... then PAD.
    entity_ids: int32, 0 = no entity, k > 0 = the k-th entity span of the row.
    pos_class: int8, coarse syntactic class of each token (0 = unknown).
    ngram_ids: int32, 0 = none, k > 0 = the k-th high-PMI n-gram span of the row.
    segment_ids: int32, k = the k-th document of the packed row, 0 for padding.
    example_ids: [B] int32 global example index, used only by static (dupe-factor) masking.
  """
  input_ids: Array
  entity_ids: Array | None = None
  pos_class: Array | None = None
  ngram_ids: Array | None = None
  segment_ids: Array | None = None
  example_ids: Array | None = None


@dataclasses.dataclass(frozen=True)
class MaskedBatch:
  """Masker output.

  Attributes:
    input_ids: [B, S] int32 corrupted inputs.
    positions: [B, P] int32 positions to predict, ascending; unused slots hold 0.
    labels: [B, P] int32 original ids at `positions`; 0 in unused slots.
    weights: [B, P] f32, 1.0 for a real prediction, 0.0 for an unused slot.
    num_clipped: [B] int32 tokens the budget lost to max_predictions (a metric).
  """
  input_ids: Array
  positions: Array
  labels: Array
  weights: Array
  num_clipped: Array


@dataclasses.dataclass(frozen=True)
class Plan:
  """What a strategy decides; the core does the rest.

  Attributes:
    unit_start: [B, S] bool, True where a new unit begins, or None: every token is a unit.
      The core adds the starts that are always there (after a special token or a document
      boundary), so a plan never has to.
    log_weight: [B, S] f32 log-weight of the unit starting at each position (read at the unit's
      first token), or None: uniform. -inf: never select; >= PRIORITY: select first.
    truncate: [B] bool (or a bool): cut the unit that overflows the budget (SpanBERT) instead of
      skipping it (BERT); None: `config.fill == "truncate"`.
    unit_replace: [B] bool (or a bool): decide [MASK]/random/keep once per unit; None:
      `config.replace_per == "unit"`.
  """
  unit_start: Array | None = None
  log_weight: Array | None = None
  truncate: Array | bool | None = None
  unit_replace: Array | bool | None = None


@dataclasses.dataclass(frozen=True)
class Context:
  """What a strategy may read besides the batch: built by the masker at trace time.

  Attributes:
    config: the masking ConfigDict (read in Python at trace time, never traced).
    step: [] int32 training step.
    rate: [] f32 mask rate at this step (from the schedule).
    state: running state from `init_state` / `update_state`, or None.
    embeddings: [V', D] word-embedding table (contextual masking), or None.
    replacement: where random replacement ids come from (built once by make_masker); None:
      built from the (concrete) tables at trace time.
  """
  config: ml_collections.ConfigDict
  step: Array
  rate: Array
  state: Any = None
  embeddings: Array | None = None
  replacement: corruption.ReplacementTable | None = None


for _cls in (TokenBatch, MaskedBatch, Plan):
  jax.tree_util.register_dataclass(
      _cls, data_fields=[f.name for f in dataclasses.fields(_cls)], meta_fields=[])


def as_token_batch(batch: TokenBatch | Mapping[str, Any]) -> TokenBatch:
  """A TokenBatch of arrays from a TokenBatch or a dict with "input_ids" (+ known keys)."""
  if not isinstance(batch, TokenBatch):
    if "input_ids" not in batch:
      raise KeyError("the batch has no 'input_ids'")
    names = {f.name for f in dataclasses.fields(TokenBatch)}
    batch = TokenBatch(**{k: v for k, v in batch.items() if k in names})
  return jax.tree.map(jnp.asarray, batch)


# ----------------------------------------------------------------------------- units


def special_tokens(ids: Array, tables: VocabTables) -> Array:
  """[B, S] bool: `tables.is_special[ids]`, by range tests when the specials are a few runs
  of ids (as in every common vocabulary): vectorised compares beat a gather on CPU."""
  if not tables.special_ranges:
    return tables.is_special[ids]
  hit = jnp.zeros(ids.shape, bool)
  for start, stop in tables.special_ranges:
    hit = hit | ((ids == start) if stop == start + 1 else ((ids >= start) & (ids < stop)))
  return hit


def eligible_tokens(ids: Array, tables: VocabTables) -> Array:
  """[B, S] bool: tokens that may be selected (not special; PAD is special)."""
  return ~special_tokens(ids, tables)


def forced_starts(ids: Array, tables: VocabTables, segment_ids: Array | None) -> Array:
  """[B, S] bool: positions that start a unit whatever the strategy says.

  The first token, a token after a special token (so '##x' after [CLS] is its own unit, and a
  byte-level word is never fused with <s>), and the first token of each document.
  """
  starts = rows.shift_right(special_tokens(ids, tables), True)
  if segment_ids is not None:
    starts = starts | (segment_ids != rows.shift_right(segment_ids, -1))
  return starts


def unit_heads(start: Array) -> Array:
  """[B, S] int32 position of the latest unit start at or before each position (0 if none).

  With the starts of eligible units (forced starts included), that is each token's unit.
  """
  return jnp.maximum(latest_starts(start), 0)


def latest_starts(start: Array) -> Array:
  """[B, S] int32 position of the latest start at or before each position, -1 if none."""
  s = start.shape[1]
  pos = jnp.arange(s, dtype=jnp.int32)
  # A doubling scan (each pass takes the max over twice the window) that stops once every
  # token sees a start within its window: words are short, so that is a few passes, not
  # log2(S); and the loop keeps `start` materialised instead of recomputing it in each pass.
  def body(carry):
    latest, shift = carry
    shifted = jnp.where(pos >= shift, jnp.roll(latest, shift, axis=1), -1)
    return jnp.maximum(latest, shifted), shift * 2

  def unresolved(carry):
    latest, shift = carry
    return (shift < s) & jnp.any((latest < 0) & (pos >= shift))

  return jax.lax.while_loop(unresolved, body, (jnp.where(start, pos, -1), 1))[0]


# ----------------------------------------------------------------------------- budget


def _snap(x: Array) -> Array:
  """x on a 1/1024 grid, so f32 noise (0.15f * 20 = 3.0000001) does not move a round or ceil."""
  return jnp.round(x * 1024.0) / 1024.0


def round_count(x: Array) -> Array:
  """round(x) half to even, as Python's round(), robust to f32 noise in x = rate * n."""
  return jnp.round(_snap(x))


def token_budget(keys: Array, coin: Array, config: ml_collections.ConfigDict, rate: Array,
                 ids: Array, eligible: Array, tables: VocabTables,
                 max_predictions: int) -> tuple[Array, Array]:
  """Tokens to select per row, and how many the cap at max_predictions removed.

  n is the number of eligible tokens, or of all non-PAD tokens when `count_specials` (BERT
  counts [CLS] and [SEP]). `count_mode`: "exact" round(rate*n) (half to even, as Python's
  round), "ceil" ceil(rate*n), "prob_round" floor(rate*n + U) (fairseq; mean exactly rate*n),
  "bernoulli" Binomial(n, rate) (Hugging Face). `min_one` gives at least one when possible.

  Args:
    keys: [B] row keys (bernoulli mode); coin: [B] f32 uniforms (prob_round mode).
    rate: [] f32 (the scheduled rate).
  Returns:
    budget: [B] int32, at most min(eligible, max_predictions).
    num_clipped: [B] int32 tokens over max_predictions.
  """
  n_eligible = eligible.sum(axis=1, dtype=jnp.int32)
  counted = (ids != tables.pad_id) if config.count_specials else eligible
  n = counted.sum(axis=1, dtype=jnp.int32)
  x = rate * n.astype(jnp.float32)
  mode = config.count_mode
  if mode == "exact":
    k = round_count(x)
  elif mode == "ceil":
    k = jnp.ceil(_snap(x))
  elif mode == "prob_round":
    k = jnp.floor(x + coin)
  elif mode == "bernoulli":  # one coin per counted token, as Hugging Face draws them
    heads = rng.half_to_uniform(rng.row_halves(keys, rng.COUNT, ids.shape[1])) < rate
    k = (counted & heads).sum(axis=1)
  else:
    raise ValueError(f"unknown count_mode {mode!r}; use exact, ceil, prob_round or bernoulli")
  k = k.astype(jnp.int32)
  if config.min_one:
    k = jnp.maximum(k, 1)
  k = jnp.clip(k, 0, n_eligible)
  return jnp.minimum(k, max_predictions), jnp.maximum(k - max_predictions, 0)


# ----------------------------------------------------------------------------- selection


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


def select_tokens(v: Array, width: int, budget: Array, uniform: bool) -> Array:
  """[B, S] bool: the `budget` largest keys of each row (all of them when fewer), exactly."""
  if not uniform:
    return v > fit_threshold(v, budget, width)[:, None]
  t = random_threshold(v, width, budget)[:, None]
  low = width - 16
  chosen = v > t
  # Keys whose random bits equal the threshold's: the highest positions first, as their low
  # bits order them, while the budget lasts (usually 0 or 1 key in a row).
  tied = (v >> low == t >> low) & (v > 0) & ~chosen
  need = budget - chosen.sum(axis=1, dtype=jnp.int32)
  tied_from_right = rows.prefix_sum(tied[:, ::-1])[:, ::-1]
  return chosen | (tied & (tied_from_right <= need[:, None]))


def _skip_fill(v: Array, token_key: Array, head: Array, chosen: Array, left: Array) -> Array:
  """BERT's rule after the prefix: walk down the order, take each unit that still fits.

  Equivalent: repeatedly take the best remaining unit no longer than what is left. Each round
  takes one unit in every row that has one that fits, so `left` drops in every active row: at
  most max(budget) rounds, rarely more than two.
  """
  b, s = v.shape
  length = rows.row_scatter(jnp.zeros((b, s), jnp.int32), head, (token_key > 0).astype(jnp.int32),
                       add=True)  # tokens per unit, at its start

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
                 truncate: Array | bool, uniform: bool = False) -> Array:
  """[B, S] bool chosen tokens: whole units in key order within the budget.

  Args:
    v: [B, S] uint32 order keys from `order_keys` (0 off unit starts), < 2^width.
    head: [B, S] int32 start of each token's unit (`unit_heads`).
    token_key: [B, S] each eligible token's unit key, 0 for ineligible tokens (`unit_keys`).
    budget: [B] int32 tokens.
    truncate: [B] bool or bool: cut the first unit that overflows (exact budget) instead of
      skipping it and going on (BERT; may fall short).
    uniform: the keys are `order_keys`' uniform ones (16 random bits above the position).
  """
  left_of = lambda chosen: budget - chosen.sum(axis=1, dtype=jnp.int32)
  if truncate is not False:
    t = fit_threshold(token_key, budget, width)[:, None]
    chosen = token_key > t
    left = left_of(chosen)
    # The next unit in the order overflowed: its first `left` tokens.
    pos = jnp.arange(v.shape[1], dtype=jnp.int32)
    cut_chosen = chosen | ((token_key == t) & (t > 0) & (pos - head < left[:, None]))
  if truncate is True:
    return cut_chosen
  # Skipping: any prefix of the order that fits may start the walk down the order, so the
  # cheaper 16-bit threshold serves for uniform keys (the walk then takes the tied units).
  if uniform:
    chosen = token_key > random_threshold(token_key, width, budget)[:, None]
  elif truncate is False:
    chosen = token_key > fit_threshold(token_key, budget, width)[:, None]
  skip_chosen = _skip_fill(v, token_key, head, chosen, left_of(chosen))
  if truncate is False:
    return skip_chosen
  return jnp.where(jnp.asarray(truncate)[:, None], cut_chosen, skip_chosen)


def compact(chosen: Array, num_slots: int) -> Array:
  """[B, P] ascending positions of the chosen tokens; S in unused slots. Needs <= P chosen."""
  b, s = chosen.shape
  slot = jnp.where(chosen, rows.prefix_sum(chosen) - 1, num_slots)  # unchosen: out of range
  pos = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
  return rows.row_scatter(jnp.full((b, num_slots), s, jnp.int32), slot, pos)


# ----------------------------------------------------------------------------- the core


def apply_plan(keys: Array, batch: TokenBatch, tables: VocabTables, ctx: Context,
               plan: Plan) -> MaskedBatch:
  """Selects units per the plan within the budget and corrupts them.

  Args:
    keys: [B] per-row keys.
    batch: input ids [B, S] (+ segment_ids, used for unit boundaries when segment_aware).
    ctx: config (max_predictions, count and replacement options) and this step's rate.
    plan: the strategy's units and weights.
  Returns:
    the MaskedBatch; positions, labels, weights are [B, P] with P = max_predictions.
  """
  config = ctx.config
  ids = batch.input_ids
  b, s = ids.shape
  p = int(config.max_predictions)
  slots = min(p, s)
  truncate = config.fill == "truncate" if plan.truncate is None else plan.truncate
  unit_replace = config.replace_per == "unit" if plan.unit_replace is None else plan.unit_replace
  table = ctx.replacement or corruption.replacement_table(tables, config.random_source)
  # All the core's random bits in one draw per row, one or two 32-bit words per position (16
  # bits suffice for all but the random-id buckets): "key" holds the order key (high half)
  # and the replacement decision (low half), "bucket" the random id, "extra" the alias coin
  # (weighted sources only) and the per-unit decision (per-unit mode only). Drawn per position
  # rather than per prediction slot, the corruption is elementwise over [B, S]: no gather into
  # slots and no scatter back (both slow on CPU). The last word is the count coin.
  extra = not table.uniform or unit_replace is not False
  uses = ["key", "bucket"] + (["extra"] if extra else [])
  core_keys = rng.fold(keys, rng.CORE)
  words = rng.bits(core_keys, len(uses) * s + 1)
  word = {name: words[:, i * s:(i + 1) * s] for i, name in enumerate(uses)}
  coin = words[:, -1]

  eligible = eligible_tokens(ids, tables)
  budget, num_clipped = token_budget(keys, rng.bits_to_uniform(coin), config, ctx.rate, ids,
                                     eligible, tables, slots)
  order_half = word["key"] >> 16
  if plan.unit_start is None:  # single tokens: the bisection alone is exact
    head = None
    v, width = order_keys(order_half, eligible, plan.log_weight)
    chosen = select_tokens(v, width, budget, uniform=plan.log_weight is None)
  else:
    segments = batch.segment_ids if config.segment_aware else None
    start = eligible & (plan.unit_start | forced_starts(ids, tables, segments))
    head, v, token_key, width = unit_keys(order_half, start, eligible, plan.log_weight,
                                          lambda at: rng.bits_at(core_keys, at) >> 16)
    chosen = select_units(v, width, head, token_key, budget, truncate,
                          uniform=plan.log_weight is None)
  positions = compact(chosen, slots)
  used = positions < s
  positions = jnp.where(used, positions, 0)
  labels = jnp.where(used, jnp.take_along_axis(ids, positions, axis=1), 0)
  decide = corruption.decisions(rng.half_to_uniform(word["key"] & 0xFFFF), word.get("extra"),
                                head, unit_replace)
  inputs = corruption.corrupt(ids, chosen, decide, word["bucket"], word.get("extra"),
                              tables.mask_id, table, config)
  pad = ((0, 0), (0, p - slots))
  return MaskedBatch(
      input_ids=inputs,
      positions=jnp.pad(positions, pad),
      labels=jnp.pad(labels, pad),
      weights=jnp.pad(used.astype(jnp.float32), pad),
      num_clipped=num_clipped)
