"""Masking strategies: each is a small function from the batch to a `Plan` (units and weights).

A plan function has the strategy signature `(keys [B], batch, tables, ctx) -> Plan`; the
registry in `__init__` wraps each with `core.apply_plan` to give `(...) -> MaskedBatch`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mlmjax.masking import core
from mlmjax.masking.core import Context, Plan, TokenBatch
from mlmjax.masking.tables import VocabTables

Array = jax.Array


def _weighted(log_weight: Array, batch: TokenBatch, tables: VocabTables, ctx: Context) -> Plan:
  """Plan for the weight-based strategies: tokens or whole words (`config.units`)."""
  if ctx.config.units == "word":
    return Plan(unit_start=core.word_starts(batch.input_ids, tables), log_weight=log_weight)
  return Plan(log_weight=log_weight)


def random(keys: Array, batch: TokenBatch, tables: VocabTables, ctx: Context) -> Plan:
  """BERT: single tokens, uniform. New masks every step (or static, per `dynamic.mode`)."""
  del keys, batch, tables, ctx
  return Plan()


# "dynamic" is random masking named for when its masks change (every step, RoBERTa); the key
# policy itself (every step or static dupe-factor masks) is `config.dynamic` and applies to all.
dynamic = random
