"""mlmjax.masking: pure, jittable MLM masking strategies, a registry, and `make_masker(config)`.

    tables = masking.VocabTables.from_vocab(tokens)
    masker = masking.make_masker(masking.default_config(), tables)
    out = jax.jit(masker)(key, {"input_ids": ids}, step)   # a MaskedBatch

See docs/MASKING.md for every strategy, option and the state hooks.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlmjax.masking import core
from mlmjax.masking import corruption
from mlmjax.masking import presets
from mlmjax.masking import registry
from mlmjax.masking import rng
from mlmjax.masking import schedules
from mlmjax.masking import strategies  # registers the built-in strategies
from mlmjax.masking.config import boundary_objective
from mlmjax.masking.config import default_config
from mlmjax.masking.config import is_static
from mlmjax.masking.config import validate
from mlmjax.masking.config import with_epoch_length
from mlmjax.masking.core import Context
from mlmjax.masking.core import MaskedBatch
from mlmjax.masking.core import Plan
from mlmjax.masking.core import TokenBatch
from mlmjax.masking.presets import preset
from mlmjax.masking.registry import SPECS
from mlmjax.masking.registry import PlanFn
from mlmjax.masking.registry import Spec
from mlmjax.masking.registry import Strategy
from mlmjax.masking.registry import batch_fields
from mlmjax.masking.registry import components
from mlmjax.masking.registry import is_stateful
from mlmjax.masking.registry import reads_hidden
from mlmjax.masking.registry import reads_model
from mlmjax.masking.registry import register
from mlmjax.masking.tables import VocabTables


def example_keys(config: ml_collections.ConfigDict, key: jax.Array, step: jax.Array,
                 batch: TokenBatch) -> jax.Array:
  """[B] per-row keys.

  Dynamic (RoBERTa): fold(fold(key, step), row), new masks every step. Static (BERT):
  fold(fold(key, epoch % dupe_factor), example), where the example is `batch.example_ids` or,
  when absent, a hash of the row's tokens: the same example gets the same masks in every epoch
  of one copy, wherever it sits in the batch, and a new copy's masks the next epoch, for
  `dupe_factor` epochs. (`rng.fold` is fold_in without threefry's CPU cost.)
  """
  b, s = batch.input_ids.shape
  if not is_static(config):
    return rng.row_keys(rng.fold(key, step), b)
  copy = jnp.zeros((), jnp.int32)
  if config.dynamic.steps_per_epoch > 0:
    epoch = jnp.floor(step.astype(jnp.float32) / config.dynamic.steps_per_epoch)
    copy = epoch.astype(jnp.int32) % config.dynamic.dupe_factor
  base = rng.fold(key, copy)
  example = batch.example_ids
  if example is None:
    # Multiplicative hash of the tokens (wrapping uint32 arithmetic); odd multipliers.
    mult = jnp.asarray(np.random.default_rng(0).integers(1, 2**31, s) * 2 + 1, jnp.uint32)
    example = (batch.input_ids.astype(jnp.uint32) * mult).sum(axis=1, dtype=jnp.uint32)
  return rng.fold(base, example)


def make_masker(config: ml_collections.ConfigDict,
                tables: VocabTables) -> Callable[..., MaskedBatch]:
  """A pure masker for `config` closing over `tables`.

  Returns:
    masker(key, batch, step, state=None, hidden=None) -> MaskedBatch, jittable:
      key: a PRNG key (typed or raw); the masker folds `step` in itself.
      batch: a TokenBatch or a dict with "input_ids" [B, S] int32 (+ optional annotations).
      step: [] int, traced; drives dynamic masks and the rate schedule.
      state: the running state from init_state/update_state (adaptive masking), else None.
      hidden: [B, S, D] the model's hidden states of the unmasked batch (its last layer, no
        dropout), needed by strategies registered with reads_hidden (contextual) only.
  """
  validate(config)
  names = components(config)
  # A strategy made of others takes stand-alone ones only (a mixture of mixtures would
  # recurse): its parts must not have parts themselves.
  combined = config.strategy in SPECS and SPECS[config.strategy].parts is not None
  unknown = [n for n in names if n not in SPECS or (combined and SPECS[n].parts is not None)]
  if unknown or not names:
    raise ValueError(f"unknown masking strategy {unknown or names}; choose from "
                     f"{sorted(SPECS)} (a mixture cannot contain a mixture)")
  _check_tables(names, config, tables)
  strategy = SPECS[config.strategy].strategy
  replacement = corruption.replacement_table(tables, config.random_source)

  def masker(key: jax.Array, batch: TokenBatch | Mapping[str, Any], step: Any,
             state: Any = None, hidden: jax.Array | None = None) -> MaskedBatch:
    batch = core.as_token_batch(batch)
    step = jnp.asarray(step, jnp.int32)
    ctx = Context(config=config, step=step, rate=schedules.mask_rate(config, step),
                  state=state, hidden=hidden, replacement=replacement)
    return strategy(example_keys(config, key, step, batch), batch, tables, ctx)

  return masker


def _check_tables(names: tuple[str, ...], config: ml_collections.ConfigDict,
                 tables: VocabTables) -> None:
  """Refuses a strategy whose vocabulary statistics were never given (nothing silently uniform).

  What each strategy needs is its registration's `tables`.
  """
  needs = [(field, f"{name} masking") for name in names for field in registry.spec(name).tables]
  if config.random_source == "unigram":
    needs.append(("frequency", "random_source='unigram'"))
  for field, what in needs:
    if not np.any(np.asarray(getattr(tables, field))):
      raise ValueError(f"{what} needs vocabulary {field}: build the tables with "
                       f"VocabTables.from_vocab(..., {field}=...) (see data/annotate.py)")


def init_state(config: ml_collections.ConfigDict, tables: VocabTables) -> Any:
  """The masking state the train state carries: None for stateless strategies.

  Adaptive masking: {"token_loss": [V] f32}, the running MLM loss of each vocabulary id,
  starting at `adaptive.init_loss` (default log V, a uniform model's loss).
  """
  if not is_stateful(config):
    return None
  init = config.adaptive.init_loss or float(np.log(tables.vocab_size))
  return {"token_loss": jnp.full((tables.vocab_size,), init, jnp.float32)}


def update_state(config: ml_collections.ConfigDict, state: Any, labels: jax.Array,
                 per_token_loss: jax.Array, weights: jax.Array) -> Any:
  """The next masking state, from one step's predictions (pure; call inside the train step).

  Args:
    state: from init_state (None: returned unchanged).
    labels: [B, P] int32 ids predicted (MaskedBatch.labels).
    per_token_loss: [B, P] f32 loss at each slot (pass it through stop_gradient).
    weights: [B, P] f32 (MaskedBatch.weights); slots with weight 0 are ignored.
  Returns:
    the state with token_loss[v] <- decay * token_loss[v] + (1 - decay) * (mean loss of v in
    this batch), for the ids v seen in this batch; other ids keep their value.
  """
  if state is None:
    return None
  old = state["token_loss"]
  labels, w = labels.reshape(-1), weights.reshape(-1).astype(jnp.float32)
  loss = per_token_loss.reshape(-1).astype(jnp.float32)
  sums = jnp.zeros_like(old).at[labels].add(loss * w, mode="drop")
  counts = jnp.zeros_like(old).at[labels].add(w, mode="drop")
  decay = config.adaptive.decay
  mixed = decay * old + (1.0 - decay) * sums / jnp.maximum(counts, 1e-6)
  return {"token_loss": jnp.where(counts > 0, mixed, old)}


__all__ = [
    "Context", "MaskedBatch", "Plan", "PlanFn", "SPECS", "Spec",
    "Strategy", "TokenBatch", "VocabTables", "batch_fields", "boundary_objective", "components",
    "default_config",
    "init_state", "is_static", "preset", "presets", "is_stateful", "make_masker", "reads_hidden", "reads_model", "register",
    "schedules", "update_state", "with_epoch_length",
]
