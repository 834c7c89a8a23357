"""Corruption of the chosen tokens: [MASK], a random id, or kept; the random-id distribution."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlmjax.masking import rng
from mlmjax.masking.tables import VocabTables

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ReplacementTable:
  """Walker alias table over the ids random replacements come from (built once, on the host).

  Attributes:
    ids: [N] int32 candidate ids.
    prob: [N] f32 probability of keeping bucket i (else its alias).
    alias: [N] int32 alternative bucket of bucket i.
    uniform: every candidate equally likely (static): the alias step is skipped.
    first: the first id when the candidates are uniform over a contiguous range (static; -1
      otherwise, e.g. specials in the middle): ids are then first + bucket, no table lookup.
  """
  ids: Array
  prob: Array
  alias: Array
  uniform: bool = False
  first: int = -1


jax.tree_util.register_dataclass(ReplacementTable, data_fields=["ids", "prob", "alias"],
                                 meta_fields=["uniform", "first"])


def replacement_table(tables: VocabTables, source: str) -> ReplacementTable:
  """The distribution of random replacement ids (numpy, from concrete tables).

  "non_special": uniform over ids that are not special (default); "full_vocab": uniform over
  [0, vocab_size) as BERT and Hugging Face do; "unigram": proportional to `tables.frequency`
  over non-special ids (SpanBERT samples its corpus).
  """
  special = np.asarray(tables.is_special)[:tables.vocab_size]
  if source == "full_vocab":
    weight = np.ones(tables.vocab_size)
  elif source == "non_special":
    weight = (~special).astype(np.float64)
  elif source == "unigram":
    weight = np.where(special, 0.0, np.asarray(tables.frequency, np.float64)[:tables.vocab_size])
  else:
    raise ValueError(f"unknown random_source {source!r}; use non_special, full_vocab or unigram")
  ids = np.flatnonzero(weight > 0)
  if not len(ids):
    raise ValueError(f"random_source={source!r} has no id to draw from: "
                     + ("pass frequency= to VocabTables" if source == "unigram"
                        else "every id is special"))
  prob, alias = _alias(weight[ids] / weight[ids].sum())
  uniform = bool(np.all(prob == 1.0))
  contiguous = uniform and ids[-1] - ids[0] + 1 == len(ids)
  return ReplacementTable(ids=jnp.asarray(ids, jnp.int32), prob=jnp.asarray(prob, jnp.float32),
                          alias=jnp.asarray(alias, jnp.int32), uniform=uniform,
                          first=int(ids[0]) if contiguous else -1)


def _alias(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Walker/Vose alias table for probabilities p [N]: O(1) sampling with two uniforms."""
  n = len(p)
  scaled = p * n
  prob, alias = np.ones(n), np.arange(n)
  if np.allclose(scaled, 1.0):  # uniform: every bucket keeps itself
    return prob, alias
  small = [i for i in range(n) if scaled[i] < 1.0]
  large = [i for i in range(n) if scaled[i] >= 1.0]
  while small and large:
    s, l = small.pop(), large.pop()
    prob[s], alias[s] = scaled[s], l
    scaled[l] -= 1.0 - scaled[s]
    (small if scaled[l] < 1.0 else large).append(l)
  return prob, alias


def random_token_ids(bits: Array, coin: Array, table: ReplacementTable) -> Array:
  """int32 ids from the table: a bucket from uint32 bits (bias below N / 2^32), then the alias
  coin (16-bit values). No [B, S, V] intermediate."""
  n = table.ids.shape[0]
  if n < 1 << 16:  # floor(bits * n / 2^32) in 32-bit halves (Lemire): no vector division
    bucket = ((bits >> 16) * n + (((bits & 0xFFFF) * n) >> 16)) >> 16
  else:
    bucket = bits % jnp.uint32(n)
  bucket = bucket.astype(jnp.int32)
  if table.first >= 0:
    return table.first + bucket
  if table.uniform:
    return table.ids[bucket]
  keep = rng.half_to_uniform(coin) < table.prob[bucket]
  return table.ids[jnp.where(keep, bucket, table.alias[bucket])]


def corrupt(ids: Array, chosen: Array, decide: Array, random_bits: Array,
            random_coin: Array | None, mask_id: int, table: ReplacementTable,
            config: ml_collections.ConfigDict) -> Array:
  """[B, S] inputs with the chosen tokens replaced by [MASK], a random id, or kept.

  Args:
    chosen: [B, S] bool tokens to corrupt.
    decide: [B, S] uniforms: < mask_prob -> [MASK], < mask_prob + random_prob -> random id.
    random_bits: [B, S] uint32, random_coin: [B, S] uint32 (its high 16 bits; None for a
      uniform table): for the random ids.
  """
  coin = None if random_coin is None else random_coin >> 16
  random_ids = random_token_ids(random_bits, coin, table)
  new = jnp.where(decide < config.mask_prob, mask_id,
                  jnp.where(decide < config.mask_prob + config.random_prob, random_ids, ids))
  return jnp.where(chosen, new, ids).astype(ids.dtype)


def decisions(per_token: Array, per_start_bits: Array | None, head: Array | None,
              unit_replace: Array | bool) -> Array:
  """[B, S] uniforms deciding each token's replacement: its own, or its unit's.

  per_token: [B, S] uniforms; per_start_bits: [B, S] uint32 words (their low 16 bits), read at
  each token's unit start `head` [B, S] (None: single-token units) in per-unit mode.
  """
  if unit_replace is False:
    return per_token
  per_start = rng.half_to_uniform(per_start_bits & 0xFFFF)
  per_unit = per_start if head is None else jnp.take_along_axis(per_start, head, axis=1)
  return jnp.where(jnp.asarray(unit_replace)[..., None], per_unit, per_token)
