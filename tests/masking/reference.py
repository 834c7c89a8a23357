"""A slow reference masker in plain numpy: the oracle the fast masker's outputs are compared with.

Written from the masking contract (shared/DESIGN.md, docs/MASKING.md) one row at a time, with
loops and lists: units (tokens, words, geometric spans of words, annotated spans), weights,
Gumbel top-k without replacement, the token budget round(rate * eligible) capped at P, fill
rules (skip, truncate, whole), never a special or padding token, never a split unit (but the
one a truncating fill cuts), and the [MASK] / random id / keep corruption, per token or per
unit.

To be comparable exactly, it takes the fast path's random numbers and nothing else from it:
the per-row keys (`masking.example_keys`) and the words of their streams (`masking.rng`), laid
out as `core.apply_plan` documents. Everything done with them is redone here.

Per row r and position i, the draws are:
  key word[i]      high 16 bits: the order key of a unit starting at i; low 16: the [MASK] /
                   random / keep uniform of token i (per-token decisions)
  bucket word[i]   the random replacement id of token i (bits * N / 2^32, N candidates)
  extra word[i]    low 16: the decision of a unit (or merged run) starting at i (per-unit
                   decisions); high 16: token i's alias coin (unigram replacements). Drawn only
                   when one of the two is needed; the count coin then moves after it.
  count coin       one word after those (prob_round)
  COUNT halves[i]  the coin of token i (bernoulli) or of a unit starting at i (per_unit)
  SPANS halves[j]  the length of the j-th geometric span of the row
  MIXTURE uniform  the component of the row (mixtures)

Strategies covered: random, dynamic, whole_word, span (geometric mode), entity, pmi, frequency,
syntax, semantic, adaptive, and mixtures of them; the constant rate schedule.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from mlmjax import masking
from mlmjax.masking import corruption
from mlmjax.masking import rng

# Log-weights the fast path ranks above every other (select.PRIORITY) and its clip of the rest;
# per_unit draws give their drawn units PRIORITY, so they are ordered by the Gumbel noise alone.
PRIORITY = 100.0
MAX_LOG_WEIGHT = 60.0
WEIGHTED = ("frequency", "syntax", "semantic", "adaptive")
CONTENT_CLASSES = (1, 3, 4)


def reference_masker(config, tables, key, batch: dict, step: int, state=None) -> dict:
  """The MaskedBatch fields, as numpy arrays, that `make_masker(config, tables)` must return."""
  assert config.schedule.kind == "constant", "the oracle knows the constant schedule only"
  batch = {k: np.asarray(v) for k, v in batch.items()}
  ids = batch["input_ids"]
  b, s = ids.shape
  keys = masking.example_keys(config, key, jnp.int32(step), masking.core.as_token_batch(batch))
  draws = _draws(keys, s)
  outputs = [_mask_row(config, tables, _row(batch, r), _row(draws, r), state) for r in range(b)]
  return {name: np.stack([o[name] for o in outputs]) for name in outputs[0]}


def _row(arrays: dict, r: int) -> dict:
  return {k: v[r] for k, v in arrays.items()}


@functools.partial(jax.jit, static_argnums=1)  # one compile, not one per jax op
def _streams(keys, s: int) -> tuple:
  return (rng.bits(rng.fold(keys, rng.CORE), 3 * s + 1), rng.row_halves(keys, rng.COUNT, s),
          rng.row_halves(keys, rng.SPANS, s), rng.row_bits(keys, rng.MIXTURE, ()))


def _draws(keys, s: int) -> dict:
  """Every random word a row may use, as numpy (see the module docstring)."""
  words, count, spans, mixture = map(np.asarray, _streams(keys, s))
  return {"key": words[:, :s], "bucket": words[:, s:2 * s], "extra": words[:, 2 * s:3 * s],
          "coin_2s": words[:, 2 * s], "coin_3s": words[:, 3 * s], "count": count,
          "spans": spans, "mixture": mixture}


def u16(half) -> np.float32:
  """The uniform in (0, 1) of a 16-bit value, as the fast path makes it (exact in float32)."""
  return (np.float32(int(half)) + np.float32(0.5)) * np.float32(1.0 / 65536)


def u32(word) -> np.float32:
  """The uniform in (0, 1) of a 32-bit word: its top 24 bits."""
  return (np.float32(int(word) >> 8) + np.float32(0.5)) * np.float32(1.0 / (1 << 24))


# ----------------------------------------------------------------------------- one row


def _mask_row(config, tables, row: dict, draw: dict, state) -> dict:
  """One row: its plan's units and weights, the budget, the units in key order filled into it,
  then the corruption of the chosen tokens."""
  ids = row["input_ids"]
  s, p = len(ids), int(config.max_predictions)
  slots = min(p, s)
  special = np.asarray(tables.is_special)[ids]
  eligible = ~special
  if config.strategy == "mixture":
    plan = _mixture_plan(config, tables, row, draw, state)
  else:
    plan = _plan(config.strategy, config, tables, row, draw, state)
  # The fast path draws the extra words when a unit decides its replacement or the random ids
  # need an alias coin; in a mixture, whichever component the row has.
  weighted_ids = _replacements(tables, config.random_source)[1] is not None
  extra = weighted_ids or plan["unit_replace"] or config.strategy == "mixture"
  coin = draw["coin_3s"] if extra else draw["coin_2s"]

  units = _units(plan["unit_start"], eligible, _forced_starts(ids, special, row, config))
  log_weight = plan["log_weight"]
  if config.count_mode == "per_unit":
    budget, clipped, log_weight = _per_unit_draw(units, log_weight, config.rate, draw, slots, s)
  else:
    budget, clipped = _budget(config, ids, eligible, tables, draw, coin, slots)

  order = sorted((u for u in units if _key(u[0], draw, log_weight, s) is not None),
                 key=lambda u: _key(u[0], draw, log_weight, s), reverse=True)
  fill = "whole" if config.fill == "whole" else "truncate" if plan["truncate"] else "skip"
  chosen, cut = _fill(order, budget, slots, fill)
  clipped += cut

  unit_of = {i: u[0] for u in units for i in u}
  if plan["merge_adjacent"] and plan["unit_start"] is not None:
    for i in sorted(chosen):  # the first token of its run of chosen tokens
      unit_of[i] = unit_of[i - 1] if i - 1 in chosen else i
  inputs = _corrupt(ids, chosen, unit_of, plan["unit_replace"], draw, config, tables)
  positions = sorted(chosen)
  assert len(positions) <= slots
  pad = p - len(positions)
  return {"input_ids": inputs,
          "positions": np.array(positions + [0] * pad, np.int32),
          "labels": np.array([ids[i] for i in positions] + [0] * pad, np.int32),
          "weights": np.array([1.0] * len(positions) + [0.0] * pad, np.float32),
          "num_clipped": np.int32(clipped)}


def _per_unit_draw(units: list[list[int]], log_weight, rate: float, draw: dict, slots: int,
                   s: int) -> tuple[int, int, np.ndarray]:
  """ERNIE's count: every unit on its own with probability rate (its first token's coin).

  Returns (budget, tokens over P, log-weights): the drawn units' tokens, capped at P; the
  drawn units are then taken in random order (PRIORITY, Gumbel noise alone) while it lasts.
  """
  drawn = [u for u in units if u16(draw["count"][u[0]]) < rate
           and (log_weight is None or log_weight[u[0]] > -np.inf)]
  count = sum(len(u) for u in drawn)
  order = np.full(s, -np.inf, np.float32)
  for u in drawn:
    order[u[0]] = PRIORITY
  return min(count, slots), count - min(count, slots), order


def _corrupt(ids, chosen: set, unit_of: dict, unit_replace: bool, draw: dict, config,
             tables) -> np.ndarray:
  """[S] inputs: each chosen token [MASK], a random id or kept, by its own uniform or by that
  of its unit's (merged run's) first token."""
  candidates, prob, alias = _replacements(tables, config.random_source)
  inputs = ids.copy()
  for i in chosen:
    if unit_replace:
      decide = u16(int(draw["extra"][unit_of[i]]) & 0xFFFF)
    else:
      decide = u16(int(draw["key"][i]) & 0xFFFF)
    if decide < np.float32(config.mask_prob):
      inputs[i] = tables.mask_id
    elif decide < np.float32(config.mask_prob + config.random_prob):
      bucket = int(draw["bucket"][i]) * len(candidates) >> 32
      if prob is not None and not u16(int(draw["extra"][i]) >> 16) < prob[bucket]:
        bucket = alias[bucket]
      inputs[i] = candidates[bucket]
  return inputs


def _mixture_plan(config, tables, row: dict, draw: dict, state) -> dict:
  """The plan of the row's component: the first whose cumulative weight share exceeds the
  row's uniform.

  When a component is weighted, the fast path gives the unweighted ones log-weight 0 (one set of
  order keys for the batch): the same uniform draw, by Gumbel keys.
  """
  weights = np.asarray(config.mixture.weights, np.float32)
  assert not config.mixture.final_weights, "the oracle knows fixed mixture weights only"
  cdf = np.cumsum(weights) / np.sum(weights)
  choice = int(np.sum(u32(draw["mixture"]) >= cdf[:-1]))
  plans = [_plan(name, config, tables, row, draw, state) for name in config.mixture.strategies]
  plan = dict(plans[choice])
  if plan["log_weight"] is None and any(q["log_weight"] is not None for q in plans):
    plan["log_weight"] = np.zeros(len(row["input_ids"]), np.float32)
  return plan


def _forced_starts(ids, special, row: dict, config) -> np.ndarray:
  """Positions where a unit begins whatever the strategy says: the first token, a token after
  a special one, the first token of a document."""
  s = len(ids)
  seg = row.get("segment_ids") if config.segment_aware else None
  forced = np.zeros(s, bool)
  for i in range(s):
    forced[i] = i == 0 or special[i - 1] or (seg is not None and seg[i] != seg[i - 1])
  return forced


def _units(plan_start, eligible, forced) -> list[list[int]]:
  """The row's units, each a list of consecutive eligible positions: single tokens, or runs
  from a start (the plan's or a forced one) to the next start or ineligible token."""
  units = []
  for i in range(len(eligible)):
    if not eligible[i]:
      continue
    if plan_start is None or plan_start[i] or forced[i]:
      units.append([i])
    else:
      units[-1].append(i)
  return units


def _budget(config, ids, eligible, tables, draw: dict, coin, slots: int) -> tuple[int, int]:
  """(tokens to select, tokens lost to the cap at P): round(rate * n) by default."""
  n_eligible = int(eligible.sum())
  counted = (ids != tables.pad_id) if config.count_specials else eligible
  n = int(counted.sum())
  rate = config.rate
  if config.count_mode == "exact":
    k = round(rate * n)  # half to even, as Python rounds
  elif config.count_mode == "ceil":
    k = math.ceil(round(rate * n, 6))
  elif config.count_mode == "prob_round":
    k = math.floor(rate * n + float(u32(coin)))
  elif config.count_mode == "bernoulli":  # a coin per counted token
    k = sum(1 for i in range(len(ids)) if counted[i] and u16(draw["count"][i]) < rate)
  else:
    raise ValueError(config.count_mode)
  if config.min_one:
    k = max(k, 1)
  k = min(k, n_eligible)
  return min(k, slots), max(k - slots, 0)


def _key(start: int, draw: dict, log_weight, s: int):
  """A unit's order key (larger first), None for a unit never selected.

  Uniform: its 16 random bits, ties by position. Weighted: the Gumbel key log_weight + G, G =
  -log(-log u), compared on its float32 bits less the low log2(S) ones (the fast path keeps
  the position there), ties by position.
  """
  half = int(draw["key"][start]) >> 16
  if log_weight is None:
    return (half, start)
  lw = float(log_weight[start])
  if lw == -np.inf:
    return None
  lw = PRIORITY if lw >= PRIORITY else min(max(lw, -MAX_LOG_WEIGHT), MAX_LOG_WEIGHT)
  u = u16(half)
  gumbel = -np.log(-np.log(u))
  bits = int((np.float32(lw) + gumbel).view(np.uint32))
  ordered = (~bits & 0xFFFFFFFF) if bits >> 31 else bits | (1 << 31)  # float order as ints
  low = max(1, (s - 1).bit_length())
  return (ordered >> low, start)


def _fill(order: list[list[int]], budget: int, slots: int, fill: str) -> tuple[set, int]:
  """Units in key order while they fit the budget. The first that does not: skipped, and the
  walk goes on (skip, BERT); its first tokens up to the budget (truncate, SpanBERT); or taken
  whole while P slots last (whole, PMI-Masking), the rest of it counted as clipped."""
  chosen, left, cut = set(), budget, 0
  for unit in order:
    if len(unit) <= left:
      chosen.update(unit)
      left -= len(unit)
      continue
    if fill == "skip":
      continue
    if left > 0:
      room = unit[:left] if fill == "truncate" else unit[:slots - len(chosen)]
      chosen.update(room)
      cut = len(unit) - len(room) if fill == "whole" else 0
    break
  return chosen, cut


def _replacements(tables, source: str):
  """(candidate ids, alias probabilities, aliases): random replacements are uniform over the
  candidates, or (unigram) proportional to their frequency through the fast path's alias
  table, whose distribution is checked here."""
  v = tables.vocab_size
  special = np.asarray(tables.is_special)[:v]
  if source == "full_vocab":
    return np.arange(v), None, None
  if source == "non_special":
    return np.flatnonzero(~special), None, None
  frequency = np.asarray(tables.frequency, np.float64)[:v]
  candidates = np.flatnonzero(~special & (frequency > 0))
  weight = frequency[candidates] / frequency[candidates].sum()
  if np.allclose(weight, weight[0]):
    return candidates, None, None
  table = corruption.replacement_table(tables, source)
  prob, alias = np.asarray(table.prob), np.asarray(table.alias)
  assert np.array_equal(np.asarray(table.ids), candidates)
  implied = prob / len(prob)  # bucket i keeps itself with prob[i], else gives its alias
  np.add.at(implied, alias, (1.0 - prob) / len(prob))
  np.testing.assert_allclose(implied, weight, atol=1e-6)
  return candidates, prob, alias


# ----------------------------------------------------------------------------- plans


def _plan(strategy: str, config, tables, row: dict, draw: dict, state) -> dict:
  """The strategy's units (plan starts, None: single tokens) and weights (None: uniform)."""
  ids = row["input_ids"]
  word_start = np.asarray(tables.is_word_start)[ids]
  per_unit = config.replace_per == "unit"
  plan = {"unit_start": None, "log_weight": None, "truncate": config.fill == "truncate",
          "unit_replace": per_unit, "merge_adjacent": False}
  if strategy == "whole_word":
    plan["unit_start"] = word_start
  elif strategy == "span":
    assert config.span.mode == "geometric", "the oracle knows geometric spans only"
    plan.update(unit_start=_geometric_spans(config, tables, row, draw),
                truncate=config.fill in ("auto", "truncate"),
                unit_replace=config.replace_per in ("auto", "unit"),
                merge_adjacent=config.span.merge_adjacent)
  elif strategy == "entity":
    entity, phrase = row["entity_ids"], row["phrase_ids"]
    span_id = np.where(entity > 0, 2 * entity, np.where(phrase > 0, 2 * phrase + 1, 0))
    plan["unit_start"] = _annotated_starts(span_id, word_start)
    weights = (config.entity.weight, config.entity.phrase_weight)
    if weights != (1.0, 1.0):
      plan["log_weight"] = np.array(
          [_log(weights[0]) if e > 0 else _log(weights[1]) if q > 0 else 0.0
           for e, q in zip(entity, phrase)], np.float32)
  elif strategy == "pmi":
    ngram = row["ngram_ids"]
    plan["unit_start"] = _annotated_starts(ngram, word_start)
    plan["unit_replace"] = config.replace_per in ("auto", "unit")
    if config.pmi.weight != 1:
      plan["log_weight"] = np.where(ngram > 0, _log(config.pmi.weight), 0.0).astype(np.float32)
  elif strategy in WEIGHTED:
    plan["log_weight"] = _log_weight(strategy, config, tables, row, state)
    if config.units == "word":
      plan["unit_start"] = word_start
  else:
    assert strategy in ("random", "dynamic"), f"the oracle does not know {strategy!r}"
  return plan


def _log(weight: float) -> float:
  return math.log(weight) if weight > 0 else -math.inf


def _annotated_starts(span_id, word_start) -> np.ndarray:
  """An annotated span (a run of one id > 0) is one unit; outside spans, words are units (a
  token just after a span starts one)."""
  starts = np.zeros(len(span_id), bool)
  for i in range(len(span_id)):
    previous = span_id[i - 1] if i > 0 else -1
    starts[i] = span_id[i] != previous if span_id[i] > 0 else (
        word_start[i] or previous != span_id[i])
  return starts


def _geometric_spans(config, tables, row: dict, draw: dict) -> np.ndarray:
  """Span starts: the row's words (of eligible tokens) cut into consecutive spans of
  Geometric(p) words truncated at max_words, span j's length drawn by inverse CDF from its
  uniform; a span begins on its first word's first token."""
  ids = row["input_ids"]
  special = np.asarray(tables.is_special)[ids]
  forced = _forced_starts(ids, special, row, config)
  word_start = np.asarray(tables.is_word_start)[ids]
  words = [i for i in range(len(ids)) if not special[i] and (word_start[i] or forced[i])]
  q, m = 1.0 - config.span.p, config.span.max_words
  cdf = [(1.0 - q ** n) / (1.0 - q ** m) for n in range(1, m + 1)]
  first_words, w, j = set(), 0, 0
  while w < len(words):
    first_words.add(w)
    u = float(u16(draw["spans"][j]))
    w += next(n for n in range(1, m + 1) if cdf[n - 1] >= u or n == m)
    j += 1
  starts = np.zeros(len(ids), bool)
  for index, position in enumerate(words):
    starts[position] = index in first_words
  return starts


def _log_weight(strategy: str, config, tables, row: dict, state) -> np.ndarray:
  """[S] float32 log-weights of the weight-based strategies."""
  ids = row["input_ids"]
  if strategy == "frequency":
    counts = np.asarray(tables.frequency)[ids]
    return np.float32(-config.frequency.alpha) * np.log1p(counts)
  if strategy == "adaptive":
    loss = np.asarray(state["token_loss"])[ids]
    return np.float32(config.adaptive.power) * np.log(np.maximum(loss, np.float32(1e-6)))
  if row.get("pos_class") is not None:
    pos = row["pos_class"].astype(np.int32)
  else:
    function = np.asarray(tables.function_word)[ids]
    pos = np.where(function, config.syntax.function_class, config.syntax.content_class)
  if strategy == "syntax":
    weights = list(config.syntax.class_weights)
    return np.log(np.array([weights[c] if c < len(weights) else 1.0 for c in pos], np.float32))
  idf = np.asarray(tables.idf)[ids]
  content = np.isin(pos, CONTENT_CLASSES)
  penalty = np.where(content, 0.0, _log(config.semantic.function_weight)).astype(np.float32)
  return np.float32(config.semantic.power) * np.log(np.maximum(idf, np.float32(1e-6))) + penalty
