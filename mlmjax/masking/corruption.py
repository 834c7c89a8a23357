"""Corruption of the chosen tokens: [MASK], a random id, or kept; the random-id distribution."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlmjax.masking import rng
from mlmjax.masking import rows
from mlmjax.masking.tables import VocabTables

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ReplacementTable:
  """Walker alias table over the ids random replacements come from (built once, on the host).

  Attributes:
    ids: [N] int32 candidate ids.
    prob: [N] f32 probability of keeping bucket i (else its alias).
    alias: [N] int32 alternative bucket of bucket i.
  """
  ids: Array
  prob: Array
  alias: Array


jax.tree_util.register_dataclass(ReplacementTable, data_fields=["ids", "prob", "alias"],
                                 meta_fields=[])


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
  return ReplacementTable(ids=jnp.asarray(ids, jnp.int32), prob=jnp.asarray(prob, jnp.float32),
                          alias=jnp.asarray(alias, jnp.int32))


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
  """int32 ids from the table: bucket bits % N (uint32; bias below N / 2^32), then the alias
  coin (16-bit values). No [B, S, V] intermediate."""
  n = table.ids.shape[0]
  bucket = (bits % jnp.uint32(n)).astype(jnp.int32)
  keep = rng.half_to_uniform(coin) < table.prob[bucket]
  return table.ids[jnp.where(keep, bucket, table.alias[bucket])]


def corrupt(ids: Array, positions: Array, used: Array, decide: Array, random_bits: Array,
            random_coin: Array, mask_id: int, table: ReplacementTable,
            config: ml_collections.ConfigDict) -> Array:
  """[B, S] inputs with the chosen positions replaced by [MASK], a random id, or kept.

  Args:
    positions: [B, P] chosen positions; `used` [B, P] marks real slots.
    decide: [B, P] uniforms: < mask_prob -> [MASK], < mask_prob + random_prob -> random id.
    random_bits: [B, P] uint32, random_coin: [B, P] 16-bit: for the random ids.
  """
  original = jnp.take_along_axis(ids, positions, axis=1)
  random_ids = random_token_ids(random_bits, random_coin, table)
  new = jnp.where(decide < config.mask_prob, mask_id,
                  jnp.where(decide < config.mask_prob + config.random_prob, random_ids, original))
  # Unused slots scatter out of bounds and are dropped, so they never touch position 0.
  target = jnp.where(used, positions, ids.shape[1])
  return rows.row_scatter(ids, target, new.astype(ids.dtype))


def decisions(per_token: Array, per_start: Array | None, positions: Array, head: Array | None,
               unit_replace: Array | bool) -> Array:
  """[B, P] uniforms deciding each slot's replacement: per token, or shared within a unit.

  per_token: [B, P] uniforms; per_start: [B, S] uniforms, one per position, read at each
  chosen token's unit start `head` [B, S] (None: single-token units) in per-unit mode.
  """
  if unit_replace is False:
    return per_token
  # One uniform per unit start, read through each chosen token's unit head.
  if head is not None:
    positions = jnp.take_along_axis(head, positions, axis=1)
  per_unit = jnp.take_along_axis(per_start, positions, axis=1)
  return jnp.where(jnp.asarray(unit_replace)[..., None], per_unit, per_token)
