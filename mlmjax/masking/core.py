"""Core of on-device masking: batch and result types, the budget, and `apply_plan`.

Every strategy reduces to a `Plan` (which tokens move together, and how likely each unit is);
`apply_plan` then does the rest, identically for all strategies:

1. eligible tokens: not special (PAD included), per the vocabulary tables;
2. a token budget per row, `round(rate * eligible)` by default, capped at P = max_predictions;
3. units drawn without replacement in proportion to their weights (Gumbel top-k), whole units
   only, until the budget is met;
4. corruption of the chosen tokens: [MASK] / random id / kept, per token or per unit.

All randomness comes from per-row keys [B] (`rng.row_keys`), so a row's masks depend on the batch
key, the step and the row's index, never on how the batch is sharded across devices.

The selection (step 3) lives in `select.py` and runs without sorting. Corruption (step 4, in
`corruption.py`) is decided per position, elementwise, so nothing is gathered into prediction
slots and scattered back; the chosen positions are listed from packed bits (`select.compact`).

What made it fast on CPU (`python -m bench.masking`; docs/BENCHMARKS.md has the measurements): no
threefry below the caller's key (`rng`), narrow lanes in the bisection, no gathers where a value
can be recomputed (unit keys from their heads, specials by id ranges), bit sets instead of prefix
sums and scatters (`rows.pack_bits`), and few passes over [B, S].
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from mlmjax.masking import corruption
from mlmjax.masking import rng
from mlmjax.masking import rows
from mlmjax.masking import select
from mlmjax.masking.tables import VocabTables

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class TokenBatch:
  """Device-side input, all [B, S]; annotations are optional (None when absent).

  Attributes:
    input_ids: int32 packed rows: [CLS] ... [SEP] ... then PAD.
    entity_ids: int32, 0 = no entity, k > 0 = the k-th entity span of the row.
    phrase_ids: int32, 0 = none, k > 0 = the k-th multi-word phrase (noun chunk) of the row;
      phrases never overlap entities.
    pos_class: int8, syntactic class of each token (0 = unknown; data/annotate.py).
    ngram_ids: int32, 0 = none, k > 0 = the k-th high-PMI n-gram span of the row.
    segment_ids: int32, k = the k-th document of the packed row, 0 for padding.
    example_ids: [B] int32 global example index, used only by static (dupe-factor) masking.
  """
  input_ids: Array
  entity_ids: Array | None = None
  phrase_ids: Array | None = None
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
    merge_adjacent: [B] bool (or a bool): with unit_replace, chosen units that touch are
      merged into one run first and the run gets one decision (SpanBERT merges adjacent spans
      so). Per row for a mixture, whose span rows merge and other rows do not.
  """
  unit_start: Array | None = None
  log_weight: Array | None = None
  truncate: Array | bool | None = None
  unit_replace: Array | bool | None = None
  merge_adjacent: Array | bool = False


@dataclasses.dataclass(frozen=True)
class Context:
  """What a strategy may read besides the batch: built by the masker at trace time.

  Attributes:
    config: the masking ConfigDict (read in Python at trace time, never traced).
    step: [] int32 training step.
    rate: [] f32 mask rate at this step (from the schedule).
    state: running state from `init_state` / `update_state`, or None.
    hidden: [B, S, D] the model's hidden states of the unmasked rows (contextual masking), or
      None.
    replacement: where random replacement ids come from (built once by make_masker); None:
      built from the (concrete) tables at trace time.
  """
  config: ml_collections.ConfigDict
  step: Array
  rate: Array
  state: Any = None
  hidden: Array | None = None
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
  # Counted by popcounts of the packed masks: the selection packs `eligible` too, and XLA:CPU
  # shares that instead of making an int32 [B, S] copy to sum.
  n_eligible = rows.count_bits(rows.pack_bits(eligible))
  counted = (ids != tables.pad_id) if config.count_specials else eligible
  n = rows.count_bits(rows.pack_bits(counted))
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


def per_unit_draw(keys: Array, rate: Array, eligible: Array, start: Array | None,
                  log_weight: Array | None, max_predictions: int
                  ) -> tuple[Array, Array, Array]:
  """ERNIE's count: every unit is drawn on its own with probability `rate`, so a unit's chance
  does not depend on its length and a row's count varies (`count_mode="per_unit"`).

  Args:
    keys: [B] row keys; rate: [] f32.
    eligible: [B, S] bool; start: [B, S] bool eligible unit starts, or None (tokens).
    log_weight: the plan's unit log-weights or None; only -inf (never) is read: the draw is
      alike for every other unit.
  Returns:
    budget: [B] int32 tokens of the drawn units, at most max_predictions;
    num_clipped: [B] int32 drawn tokens over max_predictions;
    log_weight: [B, S] the drawn units first (the selection then takes them, in random order,
      while the budget lasts), the rest never.
  """
  coin = rng.half_to_uniform(rng.row_halves(keys, rng.COUNT, eligible.shape[1]))
  drawn = (eligible if start is None else start) & (coin < rate)
  if log_weight is not None:
    drawn &= log_weight > -jnp.inf
  in_drawn = drawn if start is None else (  # a token is drawn with its unit's first token
      eligible & jnp.take_along_axis(drawn, select.unit_heads(start), axis=1))
  count = in_drawn.sum(axis=1, dtype=jnp.int32)
  budget = jnp.minimum(count, max_predictions)
  return budget, count - budget, jnp.where(drawn, select.PRIORITY, -jnp.inf)


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
  start = None
  if plan.unit_start is not None:
    segments = batch.segment_ids if config.segment_aware else None
    start = eligible & (plan.unit_start | forced_starts(ids, tables, segments))
  log_weight = plan.log_weight
  if config.count_mode == "per_unit":
    budget, num_clipped, log_weight = per_unit_draw(keys, ctx.rate, eligible, start,
                                                    log_weight, slots)
  else:
    budget, num_clipped = token_budget(keys, rng.bits_to_uniform(coin), config, ctx.rate, ids,
                                       eligible, tables, slots)
  order_half = word["key"] >> 16
  if start is None:  # single tokens: the threshold alone is exact
    head = None
    chosen, chosen_bits = select.select_tokens(order_half, eligible, log_weight, budget)
  else:
    head, v, token_key, width = select.unit_keys(order_half, start, eligible, log_weight,
                                                 lambda at: rng.bits_at(core_keys, at) >> 16)
    if config.fill == "whole":
      chosen, cut = select.select_units(v, width, head, token_key, budget, True,
                                        uniform=log_weight is None,
                                        room=jnp.full((b,), slots, jnp.int32))
      num_clipped = num_clipped + cut
    else:
      chosen = select.select_units(v, width, head, token_key, budget, truncate,
                                   uniform=log_weight is None)
    chosen_bits = rows.pack_bits(chosen)
  positions = select.compact(chosen_bits, slots, s)
  used = positions < s
  positions = jnp.where(used, positions, 0)
  labels = jnp.where(used, jnp.take_along_axis(ids, positions, axis=1), 0)
  if plan.merge_adjacent is not False and head is not None:  # one decision per chosen run
    runs = select.unit_heads(chosen & ~rows.shift_right(chosen, False))
    head = jnp.where(jnp.asarray(plan.merge_adjacent)[..., None], runs, head)
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
