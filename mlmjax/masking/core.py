"""Core of on-device masking: batch and result types, budgeted unit selection, 80/10/10 corruption.

Every strategy reduces to a `Plan` (which tokens move together, and how likely each unit is);
`apply_plan` then does the rest, identically for all strategies:

1. eligible tokens: not special (PAD included), per the vocabulary tables;
2. a token budget per row, `round(rate * eligible)` by default, capped at P = max_predictions;
3. units drawn without replacement in proportion to their weights (Gumbel top-k), whole units
   only, until the budget is met;
4. corruption of the chosen tokens: [MASK] / random id / kept, per token or per unit.

All randomness comes from per-row keys [B] (`row_keys`), so a row's masks depend on the batch key,
the step and the row's index, never on how the batch is sharded across devices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from mlmjax.masking.tables import VocabTables

Array = jax.Array

# A unit log-weight at or above this is clipped to it: such units rank above every ordinary unit
# (Gumbel noise is far smaller), which gives "these first, then top up" (entity masking).
PRIORITY = 1e4

# fold_in constants, one per independent use of a row's key.
_SELECT, _COUNT, _DECIDE, _RANDOM_ID, _UNIT = 1, 2, 3, 4, 5


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
  """
  unit_start: Array | None = None
  log_weight: Array | None = None


@dataclasses.dataclass(frozen=True)
class Context:
  """What a strategy may read besides the batch: built by the masker at trace time.

  Attributes:
    config: the masking ConfigDict (read in Python at trace time, never traced).
    step: [] int32 training step.
    rate: [] f32 mask rate at this step (from the schedule).
    state: running state from `init_state` / `update_state`, or None.
    embeddings: [V', D] word-embedding table (contextual masking), or None.
  """
  config: ml_collections.ConfigDict
  step: Array
  rate: Array
  state: Any = None
  embeddings: Array | None = None


for _cls in (TokenBatch, MaskedBatch, Plan):
  jax.tree_util.register_dataclass(
      _cls, data_fields=[f.name for f in dataclasses.fields(_cls)], meta_fields=[])


def as_token_batch(batch: TokenBatch | Mapping[str, Any]) -> TokenBatch:
  """A TokenBatch from a TokenBatch or a dict with "input_ids" (other known keys optional)."""
  if not isinstance(batch, TokenBatch):
    if "input_ids" not in batch:
      raise KeyError("the batch has no 'input_ids'")
    names = {f.name for f in dataclasses.fields(TokenBatch)}
    batch = TokenBatch(**{k: v for k, v in batch.items() if k in names})
  return jax.tree.map(jnp.asarray, batch)


# ----------------------------------------------------------------------------- randomness


def row_keys(key: Array, batch_size: int) -> Array:
  """[B] keys, one per row: fold_in(key, row index)."""
  return jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(batch_size))


def row_uniform(keys: Array, purpose: int, shape: tuple[int, ...]) -> Array:
  """[B, *shape] f32 uniforms in [0, 1), one independent stream per row and purpose."""
  return jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, purpose), shape))(keys)


# ----------------------------------------------------------------------------- units


def eligible_tokens(ids: Array, tables: VocabTables) -> Array:
  """[B, S] bool: tokens that may be selected (not special; PAD is special)."""
  return ~tables.is_special[ids]


def forced_starts(ids: Array, tables: VocabTables, segment_ids: Array | None) -> Array:
  """[B, S] bool: positions that start a unit whatever the strategy says.

  The first token, a token after a special token (so '##x' after [CLS] is its own unit, and a
  byte-level word is never fused with <s>), and the first token of each document.
  """
  prev_special = jnp.pad(tables.is_special[ids][:, :-1], ((0, 0), (1, 0)), constant_values=True)
  if segment_ids is None:
    return prev_special
  changed = jnp.pad(segment_ids[:, 1:] != segment_ids[:, :-1], ((0, 0), (1, 0)),
                    constant_values=True)
  return prev_special | changed


def word_starts(ids: Array, tables: VocabTables, segment_ids: Array | None = None) -> Array:
  """[B, S] bool: the token begins a word (vocabulary table plus forced starts)."""
  return tables.is_word_start[ids] | forced_starts(ids, tables, segment_ids)


def unit_heads(start: Array, eligible: Array) -> tuple[Array, Array]:
  """Position of each token's unit start, and each unit's length.

  Args:
    start: [B, S] bool unit starts (forced starts included).
    eligible: [B, S] bool; a unit never contains an ineligible token.
  Returns:
    head: [B, S] int32 position of the unit's first token (-1 or stale where ineligible).
    length: [B, S] int32 tokens in the unit that starts here (meaningful where `start`).
  """
  s = start.shape[1]
  pos = jnp.arange(s, dtype=jnp.int32)
  start = start & eligible
  head = jax.lax.cummax(jnp.where(start, pos, -1), axis=1)
  # A unit ends before the next start or the next ineligible token.
  ends_after = jnp.pad(start[:, 1:] | ~eligible[:, 1:], ((0, 0), (0, 1)), constant_values=True)
  end = jax.lax.cummin(jnp.where(ends_after, pos, s), axis=1, reverse=True)
  return head, end - pos + 1


# ----------------------------------------------------------------------------- budget


def token_budget(keys: Array, config: ml_collections.ConfigDict, rate: Array, ids: Array,
                 eligible: Array, tables: VocabTables, max_predictions: int) -> tuple[Array, Array]:
  """Tokens to select per row, and how many the cap at max_predictions removed.

  n is the number of eligible tokens, or of all non-PAD tokens when `count_specials` (BERT
  counts [CLS] and [SEP]). `count_mode`: "exact" round(rate*n) (half to even, as Python's
  round), "ceil" ceil(rate*n), "prob_round" floor(rate*n + U) (fairseq; mean exactly rate*n),
  "bernoulli" Binomial(n, rate) (Hugging Face). `min_one` gives at least one when possible.

  Returns:
    budget: [B] int32, at most min(eligible, max_predictions).
    num_clipped: [B] int32 tokens over max_predictions.
  """
  n_eligible = eligible.sum(axis=1, dtype=jnp.int32)
  n = n_eligible
  if config.count_specials:
    n = (ids != tables.pad_id).sum(axis=1, dtype=jnp.int32)
  x = rate * n.astype(jnp.float32)
  # Snap to a 1/1024 grid so f32 noise (0.15f * 20 = 3.0000001) does not move a round or ceil.
  snapped = jnp.round(x * 1024.0) / 1024.0
  mode = config.count_mode
  if mode == "exact":
    k = jnp.round(snapped)
  elif mode == "ceil":
    k = jnp.ceil(snapped)
  elif mode == "prob_round":
    k = jnp.floor(x + row_uniform(keys, _COUNT, ()))
  elif mode == "bernoulli":
    k = jax.vmap(lambda key, m: jax.random.binomial(jax.random.fold_in(key, _COUNT), m, rate))(
        keys, n.astype(jnp.float32))
  else:
    raise ValueError(f"unknown count_mode {mode!r}; use exact, ceil, prob_round or bernoulli")
  k = k.astype(jnp.int32)
  if config.min_one:
    k = jnp.maximum(k, 1)
  k = jnp.clip(k, 0, n_eligible)
  return jnp.minimum(k, max_predictions), jnp.maximum(k - max_predictions, 0)


# ----------------------------------------------------------------------------- selection


def _scores(keys: Array, eligible_starts: Array, log_weight: Array | None) -> Array:
  """[B, S] f32 random scores: top-k of them is a weighted draw without replacement."""
  u = row_uniform(keys, _SELECT, eligible_starts.shape[1:])
  if log_weight is None:
    score = u  # uniform weights: plain uniforms rank the same as Gumbel keys, for less work
  else:
    gumbel = -jnp.log(-jnp.log(jnp.maximum(u, 1e-20)))
    lw = jnp.minimum(log_weight.astype(jnp.float32), PRIORITY)
    score = jnp.where(lw == -jnp.inf, -jnp.inf, lw + gumbel)
  return jnp.where(eligible_starts, score, -jnp.inf)


def _select_tokens(score: Array, budget: Array, num_slots: int) -> Array:
  """[B, P'] ascending positions of the `budget` best single-token units; S where unused."""
  s = score.shape[1]
  best, where = jax.lax.top_k(score, num_slots)
  used = (jnp.arange(num_slots) < budget[:, None]) & (best > -jnp.inf)
  return jnp.sort(jnp.where(used, where, s), axis=1)


def _take_lengths(cand_len: Array, budget: Array, fill: str) -> Array:
  """[B, K] tokens taken from each candidate unit, candidates in score order.

  "skip" (BERT whole-word): a unit that would overflow the budget is skipped and later, smaller
  units may still fit; never splits a unit, may fall short. "truncate" (SpanBERT): units are
  taken in order and the first one that overflows is cut to meet the budget exactly.
  """
  if fill == "truncate":
    before = jnp.cumsum(cand_len, axis=1) - cand_len
    return jnp.clip(budget[:, None] - before, 0, cand_len)
  if fill != "skip":
    raise ValueError(f"unknown fill {fill!r}; use skip or truncate")

  def take(count, length):
    fits = count + length <= budget
    taken = jnp.where(fits, length, 0)
    return count + taken, taken

  _, taken = jax.lax.scan(take, jnp.zeros_like(budget), cand_len.T, unroll=True)
  return taken.T


def _select_units(score: Array, head: Array, length: Array, eligible: Array, budget: Array,
                  num_slots: int, fill: str) -> Array:
  """[B, P'] ascending positions of the tokens of the chosen units; S where unused."""
  b, s = score.shape
  # Each taken unit holds at least one token, so the best K units suffice; 2P leaves room for
  # skipped ones.
  k = min(s, 2 * num_slots)
  best, cand = jax.lax.top_k(score, k)
  cand_len = jnp.where(best > -jnp.inf, jnp.take_along_axis(length, cand, axis=1), 0)
  taken = _take_lengths(cand_len, budget, fill)
  taken_at = jnp.zeros((b, s), jnp.int32).at[jnp.arange(b)[:, None], cand].set(taken)
  pos = jnp.arange(s, dtype=jnp.int32)
  safe_head = jnp.maximum(head, 0)
  chosen = eligible & (pos - safe_head < jnp.take_along_axis(taken_at, safe_head, axis=1))
  # Ascending positions of the chosen tokens: top-k of (S - position) over chosen tokens.
  rank, _ = jax.lax.top_k(jnp.where(chosen, s - pos, 0), num_slots)
  return jnp.where(rank > 0, s - rank, s)


# ----------------------------------------------------------------------------- corruption


def random_token_ids(keys: Array, shape: tuple[int, ...], tables: VocabTables,
                     source: str) -> Array:
  """[B, *shape] int32 replacement ids.

  "non_special": uniform over ids that are not special (default); "full_vocab": uniform over
  [0, vocab_size) as BERT and Hugging Face do; "unigram": proportional to `tables.frequency`
  over non-special ids (SpanBERT). Sampling inverts a [V] CDF: no [B, S, V] intermediate.
  """
  u = row_uniform(keys, _RANDOM_ID, shape)
  if source == "full_vocab":
    return jnp.minimum((u * tables.vocab_size).astype(jnp.int32), tables.vocab_size - 1)
  if source == "non_special":
    weight = (~tables.is_special).astype(jnp.float32)
  elif source == "unigram":
    weight = jnp.where(tables.is_special, 0.0, tables.frequency)
  else:
    raise ValueError(f"unknown random_source {source!r}; use non_special, full_vocab or unigram")
  cdf = jnp.cumsum(weight)
  ids = jnp.searchsorted(cdf, u * cdf[-1], side="right").astype(jnp.int32)
  return jnp.minimum(ids, tables.vocab_size - 1)


def _decision_uniforms(keys: Array, positions: Array, heads: Array, per: str) -> Array:
  """[B, P] uniforms deciding mask / random / keep, per token or shared by a unit's tokens."""
  if per == "token":
    return row_uniform(keys, _DECIDE, positions.shape[1:])
  if per != "unit":
    raise ValueError(f"unknown replace_per {per!r}; use token or unit")
  # A unit's uniform is keyed by its start position, so all its tokens draw the same value.
  def one_row(key, h):
    key = jax.random.fold_in(key, _UNIT)
    return jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i)))(h)
  return jax.vmap(one_row)(keys, heads)


def corrupt(keys: Array, ids: Array, positions: Array, used: Array, heads: Array,
            tables: VocabTables, config: ml_collections.ConfigDict) -> Array:
  """[B, S] inputs with the chosen positions replaced: [MASK], a random id, or kept.

  Args:
    positions: [B, P] chosen positions; `used` [B, P] marks real slots.
    heads: [B, P] start position of each chosen token's unit (per-unit decisions).
  """
  b, s = ids.shape
  original = jnp.take_along_axis(ids, positions, axis=1)
  u = _decision_uniforms(keys, positions, heads, config.replace_per)
  random_ids = random_token_ids(keys, positions.shape[1:], tables, config.random_source)
  new = jnp.where(u < config.mask_prob, tables.mask_id,
                  jnp.where(u < config.mask_prob + config.random_prob, random_ids, original))
  # Unused slots scatter out of bounds and are dropped, so they never touch position 0.
  target = jnp.where(used, positions, s)
  return ids.at[jnp.arange(b)[:, None], target].set(new.astype(ids.dtype), mode="drop")


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
  eligible = eligible_tokens(ids, tables)
  budget, num_clipped = token_budget(keys, config, ctx.rate, ids, eligible, tables, slots)
  if plan.unit_start is None:
    score = _scores(keys, eligible, plan.log_weight)
    positions = _select_tokens(score, budget, slots)
    heads = positions
  else:
    segments = batch.segment_ids if config.segment_aware else None
    start = eligible & (plan.unit_start | forced_starts(ids, tables, segments))
    head, length = unit_heads(start, eligible)
    score = _scores(keys, start, plan.log_weight)
    positions = _select_units(score, head, length, eligible, budget, slots, config.fill)
    heads = jnp.take_along_axis(head, jnp.minimum(positions, s - 1), axis=1)
  used = positions < s
  positions = jnp.where(used, positions, 0)
  labels = jnp.where(used, jnp.take_along_axis(ids, positions, axis=1), 0)
  inputs = corrupt(keys, ids, positions, used, heads, tables, config)
  pad = ((0, 0), (0, p - slots))
  return MaskedBatch(
      input_ids=inputs,
      positions=jnp.pad(positions, pad).astype(jnp.int32),
      labels=jnp.pad(labels, pad).astype(jnp.int32),
      weights=jnp.pad(used.astype(jnp.float32), pad),
      num_clipped=num_clipped.astype(jnp.int32))
