"""The strategy registry: each strategy is registered where it is defined, with what it needs.

A registration carries the plan function and its needs (annotation fields of the batch,
vocabulary statistics, running state, the model), so the trainer, the benchmarks and the
comparison read them here instead of keeping their own lists of names:

    @register("entity", batch_fields=("entity_ids",))
    def entity(keys, batch, tables, ctx) -> Plan: ...

A strategy made of others (the mixture) says so in its registration too (`parts`, `check`), so
`make_masker` and the needs below treat every name alike. A strategy's own options (their
defaults and what they mean) are registered with it (`options`): the masking config gives each
such strategy a block under its name (`config.span.p`, ...).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import ml_collections

from mlmjax.masking import core
from mlmjax.masking.core import Context, MaskedBatch, Plan, TokenBatch
from mlmjax.masking.tables import VocabTables

PlanFn = Callable[[jax.Array, TokenBatch, VocabTables, Context], Plan]
Strategy = Callable[[jax.Array, TokenBatch, VocabTables, Context], MaskedBatch]

_BATCH_FIELDS = frozenset(f.name for f in dataclasses.fields(TokenBatch)) - {"input_ids"}
_TABLE_FIELDS = frozenset(f.name for f in dataclasses.fields(VocabTables))


@dataclasses.dataclass(frozen=True)
class Spec:
  """A registered strategy and what it needs.

  Attributes:
    name: the name configs and mixtures use.
    plan: the plan function `(keys [B], batch, tables, ctx) -> Plan`.
    batch_fields: TokenBatch annotations it reads (the data pipeline must produce them).
    tables: VocabTables statistics it needs to be non-trivial (all zeros is refused).
    stateful: keeps a running state in the train state (masking.init_state / update_state).
    reads_model: its masks depend on the model being trained (its state or its weights), so
      two models do not see the same masks under it.
    reads_hidden: it reads the model's hidden states of the unmasked batch (`ctx.hidden`):
      the train step runs the model forward once more, without gradient, to give them.
    static: its source fixes the masks per example (BERT's dupe-factor copies), so
      `dynamic.mode="auto"` does; every other strategy draws new masks each step.
    doc: one line saying what it does.
    strategy: the plan function followed by the shared core: `(keys, batch, tables, ctx) ->
      MaskedBatch`.
    parts: for a strategy made of others (the mixture), `config -> names` of the strategies
      it combines, read from its options; their needs are its needs. None: it stands alone.
    check: `config -> None`, raising ValueError naming the fix when its options cannot run
      (`validate` calls it when a config uses the strategy); None: nothing to check.
    options: `() -> ConfigDict`, the defaults of its options, each with a comment; the masking
      config holds them as `config.<name>`. None: it has none of its own.
  """
  name: str
  plan: PlanFn
  batch_fields: tuple[str, ...] = ()
  tables: tuple[str, ...] = ()
  stateful: bool = False
  reads_model: bool = False
  reads_hidden: bool = False
  static: bool = False
  doc: str = ""
  strategy: Strategy | None = None
  parts: Callable[[ml_collections.ConfigDict], tuple[str, ...]] | None = None
  check: Callable[[ml_collections.ConfigDict], None] | None = None
  options: Callable[[], ml_collections.ConfigDict] | None = None


# The one table: name -> Spec (configs, mixtures, the benchmarks and the comparison read it).
SPECS: dict[str, Spec] = {}


def _as_strategy(plan_fn: PlanFn) -> Strategy:
  """The plan function followed by the shared core (`core.apply_plan`)."""
  def strategy(keys, batch, tables, ctx):
    return core.apply_plan(keys, batch, tables, ctx, plan_fn(keys, batch, tables, ctx))
  strategy.__name__ = plan_fn.__name__
  strategy.__doc__ = plan_fn.__doc__
  return strategy


def register(name: str, plan_fn: PlanFn | None = None, *, batch_fields: tuple[str, ...] = (),
             tables: tuple[str, ...] = (), stateful: bool = False, reads_model: bool = False,
             reads_hidden: bool = False, static: bool = False, doc: str = "",
             parts: Callable[[ml_collections.ConfigDict], tuple[str, ...]] | None = None,
             check: Callable[[ml_collections.ConfigDict], None] | None = None,
             options: Callable[[], ml_collections.ConfigDict] | None = None):
  """Adds a strategy; configs and mixtures can then name it.

  `register(name, plan_fn, ...)` registers and returns `plan_fn`; without `plan_fn` it is a
  decorator. The keywords are the Spec's needs; unknown field names are refused.
  """
  unknown = ([f for f in batch_fields if f not in _BATCH_FIELDS]
             + [f for f in tables if f not in _TABLE_FIELDS])
  if unknown:
    raise ValueError(f"strategy {name!r} declares unknown fields {unknown}: batch_fields "
                     f"are among {sorted(_BATCH_FIELDS)}, tables among {sorted(_TABLE_FIELDS)}")

  def add(fn: PlanFn) -> PlanFn:
    first_line = (fn.__doc__ or "").strip().split("\n")[0]
    SPECS[name] = Spec(name, fn, tuple(batch_fields), tuple(tables), stateful,
                       reads_model or reads_hidden, reads_hidden, static, doc or first_line,
                       _as_strategy(fn), parts, check, options)
    return fn

  return add if plan_fn is None else add(plan_fn)


def spec(name: str) -> Spec:
  """The registration of `name`; a clear error for an unknown name."""
  if name not in SPECS:
    raise ValueError(f"unknown masking strategy {name!r}; choose from {sorted(SPECS)}")
  return SPECS[name]


def components(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The strategy names a masking config uses: the parts of a strategy made of others (a
  mixture's components), else its strategy. An unknown name is returned as it is (make_masker
  refuses it with the list of known ones)."""
  parts = SPECS[config.strategy].parts if config.strategy in SPECS else None
  return (config.strategy,) if parts is None else tuple(parts(config))


def batch_fields(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The TokenBatch annotations a masking config reads: the union over its components."""
  fields = [f for name in components(config) for f in spec(name).batch_fields]
  return tuple(dict.fromkeys(fields))


def is_stateful(config: ml_collections.ConfigDict) -> bool:
  """Whether a component keeps running state in the train state."""
  return any(spec(name).stateful for name in components(config))


def reads_model(config: ml_collections.ConfigDict) -> bool:
  """Whether a component's masks depend on the model (its running loss or its weights)."""
  return any(spec(name).reads_model for name in components(config))


def reads_hidden(config: ml_collections.ConfigDict) -> bool:
  """Whether a component reads the model's hidden states (the step must compute them)."""
  return any(spec(name).reads_hidden for name in components(config))
