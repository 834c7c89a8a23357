"""Masking strategies: each is a small function from the batch to a `Plan` (units and weights).

A plan function has the strategy signature `(keys [B], batch, tables, ctx) -> Plan`; each is
registered where it is defined, with what it needs (`registry.py`), and the registry wraps it
with `core.apply_plan` to give `(...) -> MaskedBatch`.
Weight-based strategies (frequency, adaptive, syntax, contextual, semantic) mask tokens or whole
words (`config.units`); a unit's weight is that of its first token. A strategy with options of
its own registers their defaults (`options`) and their check (`check`) beside it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections

from mlmjax.masking import core
from mlmjax.masking import rng
from mlmjax.masking import schedules
from mlmjax.masking import select
from mlmjax.masking import units
from mlmjax.masking.core import Context, Plan, TokenBatch
from mlmjax.masking.registry import SPECS, register
from mlmjax.masking.tables import VocabTables

Array = jax.Array


def _option(value: str, auto: bool, when_true: str) -> bool:
  """A per-strategy default for an "auto" option (fill, replace_per)."""
  return auto if value == "auto" else value == when_true


def _log(weight: float) -> float:
  """log of a unit weight: 0 -> -inf (never), inf -> inf (first)."""
  return math.log(weight) if weight > 0 else -math.inf


def _require(field: Array | None, name: str, strategy: str) -> Array:
  if field is None:
    raise ValueError(f"{strategy} masking needs batch['{name}'] (see data/annotate.py); "
                     "produce it in the data pipeline or pick another strategy")
  return field


def _weighted(log_weight: Array, batch: TokenBatch, tables: VocabTables, ctx: Context) -> Plan:
  """Plan for the weight-based strategies: tokens, or whole words (`config.units`)."""
  if ctx.config.units == "word":
    return Plan(unit_start=units.word_starts(batch.input_ids, tables), log_weight=log_weight)
  return Plan(log_weight=log_weight)


# ----------------------------------------------------------------------------- unit strategies


@register("random", static=True)
def random(keys: Array, batch: TokenBatch, tables: VocabTables, ctx: Context) -> Plan:
  """BERT: single tokens, uniform; masks fixed per example (static, `dynamic.dupe_factor`)."""
  del keys, batch, tables, ctx
  return Plan()


# RoBERTa's masking is BERT's plan; what differs is when the masks change, which is the key
# policy (`config.dynamic.mode`, "auto": static for `random`, every step for every other name).
dynamic = register("dynamic", random,
                   doc="RoBERTa: single tokens, uniform; new masks every time a row is seen.")


@register("whole_word")
def whole_word(keys: Array, batch: TokenBatch, tables: VocabTables, ctx: Context) -> Plan:
  """Whole words (WordPiece '##', SentencePiece '▁' or byte-level 'Ġ' conventions)."""
  del keys, ctx
  return Plan(unit_start=units.word_starts(batch.input_ids, tables))


def _span_options() -> ml_collections.ConfigDict:
  o = ml_collections.ConfigDict()
  o.mode = "geometric"  # geometric (SpanBERT, spans of whole words) | t5 (exact T5 corruption)
  o.p = 0.2  # geometric: success probability of the span length in words
  o.max_words = 10  # geometric: lengths truncated (renormalised) at this many words
  o.merge_adjacent = True  # per-span replacement: spans that touch are one span (SpanBERT)
  o.mean_length = 3.0  # t5: mean noise-span length in tokens
  return o


def _check_span(config) -> None:
  o = config.span
  if o.mode not in ("geometric", "t5"):
    raise ValueError("masking config: span.mode must be geometric or t5")
  if not (0.0 < o.p <= 1.0 and 1 <= o.max_words <= 256):
    raise ValueError("masking config: span.p must lie in (0, 1] and span.max_words in [1, 256]")
  if o.mean_length < 1.0:
    raise ValueError("masking config: span.mean_length must be at least 1")


@register("span", options=_span_options, check=_check_span)
def span(keys: Array, batch: TokenBatch, tables: VocabTables, ctx: Context) -> Plan:
  """SpanBERT: spans of whole words, lengths ~ Geo(p) truncated at max_words; or T5 spans.

  Geometric mode (default): the budget is met exactly by cutting the last span (fill "auto"),
  and [MASK]/random/keep is decided per span (replace_per "auto"), spans that touch merged
  into one first (`span.merge_adjacent`), as SpanBERT does.
  T5 mode: exactly round(rate * n) noise tokens in round(noise / mean_length) spans.
  """
  config = ctx.config
  ids = batch.input_ids
  eligible = core.eligible_tokens(ids, tables)
  per_span = _option(config.replace_per, True, "unit")
  if config.span.mode == "t5":
    bits = rng.row_halves(keys, rng.SPANS, 2 * ids.shape[1]).reshape(-1, 2, ids.shape[1])
    num_noise = core.round_count(ctx.rate * eligible.sum(axis=1)).astype(jnp.int32)
    noise, noise_start = units.t5_noise(bits, eligible, num_noise, config.span.mean_length)
    return Plan(unit_start=noise_start | ~noise,
                log_weight=jnp.where(noise, select.PRIORITY, -jnp.inf),
                truncate=_option(config.fill, True, "truncate"), unit_replace=per_span)
  segments = batch.segment_ids if config.segment_aware else None
  words = eligible & (units.word_starts(ids, tables)
                      | core.forced_starts(ids, tables, segments))
  u = rng.half_to_uniform(rng.row_halves(keys, rng.SPANS, ids.shape[1]))
  return Plan(unit_start=units.geometric_spans(u, words, config.span.p, config.span.max_words),
              truncate=_option(config.fill, True, "truncate"), unit_replace=per_span,
              merge_adjacent=config.span.merge_adjacent)


def _entity_options() -> ml_collections.ConfigDict:
  o = ml_collections.ConfigDict()
  o.weight = 1.0  # entity unit vs word: 1 = uniform over units (ERNIE 1.0); inf = entities
  #   first, topped up with words
  o.phrase_weight = 1.0  # phrase unit vs word (ERNIE's phrase level); 0 = never masked
  return o


def _check_entity(config) -> None:
  if config.entity.weight < 0 or config.entity.phrase_weight < 0:
    raise ValueError("masking config: entity.weight and entity.phrase_weight must be >= 0")


@register("entity", batch_fields=("entity_ids", "phrase_ids"), options=_entity_options,
          check=_check_entity)
def entity(keys: Array, batch: TokenBatch, tables: VocabTables, ctx: Context) -> Plan:
  """ERNIE 1.0: entities and phrases as whole units beside words, drawn uniformly.

  Each entity (`entity_ids`) and each multi-word phrase (`phrase_ids`) is one unit, every other
  word is one; units are drawn with weights `entity.weight` and `entity.phrase_weight` against
  a word's 1 (1 and 1: uniform, as ERNIE; weight=inf: entities first, topped up with words).
  """
  del keys
  entities = _require(batch.entity_ids, "entity_ids", "entity")
  phrases = _require(batch.phrase_ids, "phrase_ids", "entity")
  in_entity = entities > 0
  # One id per span: entities even, phrases odd (the data keeps phrases off entities; were one
  # to overlap, the entity would win on its tokens).
  span_ids = jnp.where(in_entity, 2 * entities, jnp.where(phrases > 0, 2 * phrases + 1, 0))
  unit_start, in_span = units.annotated_spans(span_ids,
                                              units.word_starts(batch.input_ids, tables))
  config = ctx.config.entity
  log_weight = None
  if (config.weight, config.phrase_weight) != (1.0, 1.0):
    log_weight = jnp.where(in_entity, _log(config.weight),
                           jnp.where(in_span, _log(config.phrase_weight), 0.0))
  return Plan(unit_start=unit_start, log_weight=log_weight)


def _pmi_options() -> ml_collections.ConfigDict:
  o = ml_collections.ConfigDict()
  o.weight = 1.0  # n-gram unit vs word; 1 = uniform over units (PMI-Masking)
  return o


def _check_pmi(config) -> None:
  if config.pmi.weight <= 0:
    raise ValueError("masking config: pmi.weight must be > 0")


@register("pmi", batch_fields=("ngram_ids",), options=_pmi_options, check=_check_pmi)
def pmi(keys: Array, batch: TokenBatch, tables: VocabTables, ctx: Context) -> Plan:
  """PMI-Masking: high-PMI n-grams (`ngram_ids`) and whole words as units, drawn uniformly."""
  del keys
  spans = _require(batch.ngram_ids, "ngram_ids", "pmi")
  unit_start, in_span = units.annotated_spans(spans, units.word_starts(batch.input_ids, tables))
  weight = ctx.config.pmi.weight
  return Plan(unit_start=unit_start,
              log_weight=None if weight == 1 else jnp.where(in_span, _log(weight), 0.0),
              unit_replace=_option(ctx.config.replace_per, True, "unit"))


# ----------------------------------------------------------------------------- weight strategies


def _frequency_options() -> ml_collections.ConfigDict:
  o = ml_collections.ConfigDict()
  o.alpha = 0.5  # weight = (count + 1) ** -alpha: alpha > 0 favours rare tokens, < 0 common ones
  return o


@register("frequency", tables=("frequency",), options=_frequency_options)
def frequency(keys: Array, batch: TokenBatch, tables: VocabTables, ctx: Context) -> Plan:
  """Weights (count + 1)^-alpha: alpha > 0 favours rare tokens, alpha < 0 common ones."""
  del keys
  counts = tables.frequency[batch.input_ids]
  return _weighted(-ctx.config.frequency.alpha * jnp.log1p(counts), batch, tables, ctx)


def _adaptive_options() -> ml_collections.ConfigDict:
  o = ml_collections.ConfigDict()
  o.decay = 0.99  # running loss per id: new = decay * old + (1 - decay) * batch mean
  o.power = 1.0  # weight = running_loss ** power (0 = uniform)
  o.init_loss = 0.0  # starting running loss; 0 means log(vocab_size), a uniform model's loss
  return o


@register("adaptive", stateful=True, reads_model=True, options=_adaptive_options)
def adaptive(keys: Array, batch: TokenBatch, tables: VocabTables, ctx: Context) -> Plan:
  """Weights running_loss^power: tokens the model still gets wrong are masked more."""
  del keys
  if ctx.state is None:
    raise ValueError("adaptive masking needs its running state: masker(key, batch, step, "
                     "state) with state = masking.init_state(config, tables), updated by "
                     "masking.update_state in the train step")
  loss = ctx.state["token_loss"][batch.input_ids]
  log_weight = ctx.config.adaptive.power * jnp.log(jnp.maximum(loss, 1e-6))
  return _weighted(log_weight, batch, tables, ctx)


# pos_class values (data/annotate.py): 0 unknown, 1 content word, 2 function word, and with a
# dependency parse 3 predicate, 4 core argument (both content words).
CONTENT_CLASSES = (1, 3, 4)


def _pos_class(batch: TokenBatch, tables: VocabTables, config) -> Array:
  """[B, S] int32 pos_class, or content vs function word from the vocabulary without it."""
  if batch.pos_class is not None:
    return batch.pos_class.astype(jnp.int32)
  return jnp.where(tables.function_word[batch.input_ids], config.syntax.function_class,
                   config.syntax.content_class)


def _syntax_options() -> ml_collections.ConfigDict:
  """Also read by semantic masking (which words are content words without pos_class)."""
  o = ml_collections.ConfigDict()
  o.class_weights = (1.0, 2.0, 0.5, 4.0, 3.0)  # weight per pos_class value: 0 unknown, 1
  #   content word, 2 function word; from a dependency parse 3 predicate, 4 core argument
  o.content_class = 1  # class of a content word when pos_class is absent (vocabulary fallback)
  o.function_class = 2  # class of a function word when pos_class is absent
  return o


def _check_syntax(config) -> None:
  if min(config.syntax.class_weights, default=1.0) < 0:
    raise ValueError("masking config: syntax.class_weights must be >= 0")


@register("syntax", batch_fields=("pos_class",), options=_syntax_options, check=_check_syntax)
def syntax(keys: Array, batch: TokenBatch, tables: VocabTables, ctx: Context) -> Plan:
  """Weights per syntactic class (`pos_class`): with a dependency parse, predicates and core
  arguments (subjects, objects) first, then other content words, function words last."""
  del keys
  pos = _pos_class(batch, tables, ctx.config)
  class_weights = jnp.asarray(ctx.config.syntax.class_weights, jnp.float32)
  n = class_weights.shape[0]
  weight = jnp.where(pos < n, class_weights[jnp.clip(pos, 0, n - 1)], 1.0)  # unlisted: 1
  return _weighted(jnp.log(weight), batch, tables, ctx)


def _contextual_options() -> ml_collections.ConfigDict:
  o = ml_collections.ConfigDict()
  o.sharpness = 5.0  # log weight = sharpness * cos(h_token, mean h of its document), h the
  #   model's hidden states of the unmasked row; < 0 favours outliers
  return o


@register("contextual", reads_hidden=True, options=_contextual_options)
def contextual(keys: Array, batch: TokenBatch, tables: VocabTables, ctx: Context) -> Plan:
  """Weights exp(sharpness * cos(h_token, mean h of its document)): central tokens first.

  h are the model's own contextual representations of the unmasked row (`ctx.hidden`, its
  last layer, no gradient), so what counts as central changes as the model learns. The mean
  is over the eligible tokens of the token's document (`segment_ids`; the row without them), so
  documents packed into one row do not mix.
  """
  del keys
  if ctx.hidden is None:
    raise ValueError("contextual masking needs the model's hidden states of the unmasked "
                     "batch: masker(key, batch, step, state, hidden=[B, S, D]); the train step "
                     "computes them when masking.reads_hidden(config)")
  ids = batch.input_ids
  h = jax.lax.stop_gradient(ctx.hidden).astype(jnp.float32)  # [B, S, D]
  b, s, d = h.shape
  eligible = core.eligible_tokens(ids, tables)[..., None]
  # Each document's sum (its direction is the mean's), by a segment sum over (row, document).
  segments = jnp.zeros_like(ids) if batch.segment_ids is None else batch.segment_ids
  document = (jnp.arange(b)[:, None] * s + jnp.clip(segments, 0, s - 1)).reshape(-1)
  sums = jax.ops.segment_sum((h * eligible).reshape(-1, d), document, num_segments=b * s)
  doc_sum = sums[document].reshape(b, s, d)
  cos = jnp.sum(h * doc_sum, axis=-1) / (
      jnp.linalg.norm(h, axis=-1) * jnp.linalg.norm(doc_sum, axis=-1) + 1e-6)
  return _weighted(ctx.config.contextual.sharpness * cos, batch, tables, ctx)


def _semantic_options() -> ml_collections.ConfigDict:
  o = ml_collections.ConfigDict()
  o.power = 1.0  # weight = idf ** power on content words: salient (rare-in-documents) first
  o.function_weight = 0.1  # and idf ** power * function_weight on function words, punctuation
  return o


def _check_semantic(config) -> None:
  if config.semantic.function_weight < 0:
    raise ValueError("masking config: semantic.function_weight must be >= 0")


@register("semantic", batch_fields=("pos_class",), tables=("idf",),
          options=_semantic_options, check=_check_semantic)
def semantic(keys: Array, batch: TokenBatch, tables: VocabTables, ctx: Context) -> Plan:
  """Salient content words first: weight idf^power on content words (nouns, proper nouns,
  verbs, adjectives, adverbs, numbers: `pos_class`), times `function_weight` on the rest."""
  del keys
  config = ctx.config.semantic
  content = jnp.isin(_pos_class(batch, tables, ctx.config), jnp.asarray(CONTENT_CLASSES))
  idf = tables.idf[batch.input_ids]
  log_weight = (config.power * jnp.log(jnp.maximum(idf, 1e-6))
                + jnp.where(content, 0.0, _log(config.function_weight)))
  return _weighted(log_weight, batch, tables, ctx)


# ----------------------------------------------------------------------------- mixture


def _mixture_parts(config) -> tuple[str, ...]:
  """The mixture's components, one drawn per example."""
  return tuple(config.mixture.strategies)


def _mixture_options() -> ml_collections.ConfigDict:
  o = ml_collections.ConfigDict()
  o.strategies = ("dynamic", "span", "whole_word")  # one is drawn per example
  o.weights = (1.0, 1.0, 1.0)  # their relative weights at step 0
  o.final_weights = ()  # optional weights at `steps`, linearly interpolated; () = fixed
  o.steps = 100_000  # steps from weights to final_weights
  return o


def _check_mixture(config) -> None:
  if len(config.mixture.weights) != len(config.mixture.strategies):
    raise ValueError("mixture.weights needs one weight per mixture.strategies entry")


@register("mixture", parts=_mixture_parts, check=_check_mixture, options=_mixture_options)
def mixture(keys: Array, batch: TokenBatch, tables: VocabTables, ctx: Context) -> Plan:
  """Per example, one of `mixture.strategies`, drawn with the (scheduled) mixture weights.

  Every component's plan is computed for the whole batch; each row then takes its own.
  """
  config = ctx.config
  plans = [SPECS[name].plan(keys, batch, tables, ctx) for name in config.mixture.strategies]
  weights = schedules.mixture_weights(config.mixture.weights, config.mixture.final_weights,
                                      config.mixture.steps, ctx.step)
  cdf = jnp.cumsum(weights) / jnp.sum(weights)
  u = rng.row_uniform(keys, rng.MIXTURE, ())
  choice = jnp.sum(u[:, None] >= cdf[None, :-1], axis=1)  # [B] component of each row
  b, s = batch.input_ids.shape

  def pick(values, default):
    """Each row's value from its component (elementwise selects keep the batch sharded)."""
    if all(v is None for v in values):
      return None
    values = [jnp.broadcast_to(default if v is None else v, default.shape) for v in values]
    row_choice = choice.reshape((b,) + (1,) * (default.ndim - 1))
    out = values[0]
    for i, v in enumerate(values[1:], start=1):
      out = jnp.where(row_choice == i, v, out)
    return out

  truncate = config.fill == "truncate"
  unit_replace = config.replace_per == "unit"
  # Components are never mixtures, so their merge_adjacent is a bool: None where False lets
  # a mixture without span skip the merging.
  merge = pick([p.merge_adjacent or None for p in plans], jnp.zeros((b,), bool))
  return Plan(
      unit_start=pick([p.unit_start for p in plans], jnp.ones((b, s), bool)),
      log_weight=pick([p.log_weight for p in plans], jnp.zeros((b, s), jnp.float32)),
      truncate=pick([p.truncate for p in plans], jnp.full((b,), truncate)),
      unit_replace=pick([p.unit_replace for p in plans], jnp.full((b,), unit_replace)),
      merge_adjacent=False if merge is None else merge)
