"""Tests of the registry: every strategy declares what it needs, and the declarations are true."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import annotation_spans
from mlmjax import masking

B, S, P = 16, 48, 12
MASK = 4
ANNOTATIONS = ("entity_ids", "phrase_ids", "ngram_ids", "pos_class")
SINGLE = sorted(n for n, spec in masking.SPECS.items() if spec.parts is None)


def _config(strategy, **mixture):
  cfg = masking.default_config()
  cfg.strategy = strategy
  cfg.max_predictions = P
  for key, value in mixture.items():
    cfg.mixture[key] = value
  return cfg


@pytest.fixture(scope="module")
def batch(make_ids):
  rng = np.random.default_rng(3)
  ids, seg = make_ids(3, B, S, lengths=[S] * B)
  entities = annotation_spans(ids, rng, 7)
  return {"input_ids": jnp.asarray(ids), "segment_ids": jnp.asarray(seg),
          "entity_ids": jnp.asarray(entities),
          "phrase_ids": jnp.asarray(np.where(entities > 0, 0, annotation_spans(ids, rng, 5))),
          "ngram_ids": jnp.asarray(annotation_spans(ids, rng, 6)),
          "pos_class": jnp.asarray(rng.integers(0, 3, ids.shape).astype(np.int8))}


def _model(tables, seed):
  """(state, hidden) of a made-up model: a running loss and hidden states of the batch."""
  k1, k2 = jax.random.split(jax.random.key(seed))
  loss = jax.random.uniform(k1, (tables.vocab_size,), minval=0.5, maxval=8.0)
  return {"token_loss": loss}, jax.random.normal(k2, (B, S, 8))


def _masks(cfg, tables, batch, model):
  """The masked inputs and positions of one call, as numpy (compared for equality)."""
  state, hidden = model
  out = masking.make_masker(cfg, tables)(jax.random.key(0), batch, 5, state, hidden)
  return np.asarray(out.input_ids), np.asarray(out.positions)


def _same(a, b):
  return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_every_strategy_is_registered_with_metadata():
  for name, spec in masking.SPECS.items():
    assert isinstance(spec, masking.Spec) and spec.name == name
    assert callable(spec.plan) and callable(spec.strategy) and spec.doc
    assert isinstance(spec.batch_fields, tuple) and isinstance(spec.tables, tuple)
  assert [n for n, s in masking.SPECS.items() if s.static] == ["random"]  # BERT's static masks


def test_the_builtin_needs():
  needs = {n: (s.batch_fields, s.tables, s.stateful, s.reads_model, s.reads_hidden)
           for n, s in masking.SPECS.items() if s.batch_fields or s.tables or s.stateful
           or s.reads_model}
  assert needs == {"entity": (("entity_ids", "phrase_ids"), (), False, False, False),
                   "pmi": (("ngram_ids",), (), False, False, False),
                   "syntax": (("pos_class",), (), False, False, False),
                   "frequency": ((), ("frequency",), False, False, False),
                   "semantic": (("pos_class",), ("idf",), False, False, False),
                   "adaptive": ((), (), True, True, False),
                   "contextual": ((), (), False, True, True)}


@pytest.mark.parametrize("name", [n for n in SINGLE if masking.SPECS[n].batch_fields])
def test_declared_batch_fields_are_read(name, tables, batch):
  """Without its fields a strategy refuses to run or masks differently."""
  cfg, model = _config(name), _model(tables, 0)
  full = _masks(cfg, tables, batch, model)
  without = {k: v for k, v in batch.items() if k not in masking.SPECS[name].batch_fields}
  try:
    assert not _same(full, _masks(cfg, tables, without, model))
  except ValueError as e:
    assert masking.SPECS[name].batch_fields[0] in str(e)


@pytest.mark.parametrize("name", SINGLE)
def test_undeclared_batch_fields_are_not_read(name, tables, batch):
  cfg, model = _config(name), _model(tables, 0)
  declared = {k: v for k, v in batch.items()
              if k not in ANNOTATIONS or k in masking.SPECS[name].batch_fields}
  assert _same(_masks(cfg, tables, batch, model), _masks(cfg, tables, declared, model))


@pytest.mark.parametrize("name", SINGLE)
def test_declared_tables_are_read_and_required(name, tables, batch):
  cfg, model = _config(name), _model(tables, 0)
  reference = _masks(cfg, tables, batch, model)
  for field in ("frequency", "idf"):
    values = np.asarray(getattr(tables, field))
    reversed_ = dataclasses.replace(tables, **{field: jnp.asarray(values[::-1].copy())})
    changed = _masks(cfg, reversed_, batch, model)
    assert _same(reference, changed) == (field not in masking.SPECS[name].tables), field
    if field in masking.SPECS[name].tables:
      zero = dataclasses.replace(tables, **{field: jnp.zeros_like(values)})
      with pytest.raises(ValueError, match=f"{name} masking needs vocabulary {field}"):
        masking.make_masker(cfg, zero)


@pytest.mark.parametrize("name", SINGLE)
def test_reads_model_is_exactly_what_changes_with_the_model(name, tables, batch):
  cfg = _config(name)
  one, two = _masks(cfg, tables, batch, _model(tables, 1)), _masks(cfg, tables, batch,
                                                                    _model(tables, 2))
  assert _same(one, two) == (not masking.reads_model(cfg))


@pytest.mark.parametrize("name", SINGLE)
def test_stateful_strategies_get_a_state(name, tables, batch):
  cfg = _config(name)
  state = masking.init_state(cfg, tables)
  assert (state is not None) == masking.SPECS[name].stateful == masking.is_stateful(cfg)
  if masking.is_stateful(cfg):
    with pytest.raises(ValueError, match="state"):
      masking.make_masker(cfg, tables)(jax.random.key(0), batch, 0, None, _model(tables, 0)[1])


def test_a_mixture_needs_the_union_of_its_components(tables, batch):
  cfg = _config("mixture", strategies=("entity", "syntax", "semantic", "adaptive", "entity"),
                weights=(1.0,) * 5)
  assert masking.components(cfg) == ("entity", "syntax", "semantic", "adaptive", "entity")
  assert masking.batch_fields(cfg) == ("entity_ids", "phrase_ids", "pos_class")
  assert masking.is_stateful(cfg) and masking.reads_model(cfg)
  assert masking.init_state(cfg, tables) is not None
  with pytest.raises(ValueError, match="semantic masking needs vocabulary idf"):
    masking.make_masker(cfg, dataclasses.replace(tables, idf=jnp.zeros_like(tables.idf)))
  plain = _config("mixture", strategies=("random", "span"), weights=(1.0, 1.0))
  assert masking.batch_fields(plain) == ()
  assert not masking.is_stateful(plain) and not masking.reads_model(plain)
  assert masking.init_state(plain, tables) is None
  assert masking.components(_config("span")) == ("span",)


@pytest.fixture
def toy():
  """A made-up strategy registered with needs, removed again after the test."""
  def toy_entities(keys, batch, tables, ctx):
    """Entity tokens first, weighted by the running loss."""
    del keys, tables
    loss = jnp.log(ctx.state["token_loss"][batch.input_ids])
    return masking.Plan(log_weight=jnp.where(batch.entity_ids > 0, 10.0, 0.0) + loss)
  masking.register("toy_entities", toy_entities, batch_fields=("entity_ids",),
                   tables=("idf",), stateful=True, reads_model=True)
  yield "toy_entities"
  del masking.SPECS["toy_entities"]


def test_a_new_strategy_is_picked_up_from_its_registration(toy, tables, batch):
  cfg = _config(toy)
  assert masking.batch_fields(cfg) == ("entity_ids",)
  assert masking.is_stateful(cfg) and masking.reads_model(cfg)
  assert masking.init_state(cfg, tables) is not None
  with pytest.raises(ValueError, match="toy_entities masking needs vocabulary idf"):
    masking.make_masker(cfg, dataclasses.replace(tables, idf=jnp.zeros_like(tables.idf)))
  mixed = _config("mixture", strategies=("pmi", toy), weights=(1.0, 1.0))
  assert masking.batch_fields(mixed) == ("ngram_ids", "entity_ids")
  assert masking.init_state(mixed, tables) is not None
  state = masking.init_state(cfg, tables)
  out = masking.make_masker(cfg, tables)(jax.random.key(0), batch, 0, state)
  assert np.asarray(out.weights).sum() > 0


def test_a_strategy_made_of_others_is_an_ordinary_registration(tables, batch):
  """A made-up composite: it names its parts from the config and checks its options, and
  make_masker, components and the needs read that from its registration alone."""
  def checked(config):
    if config.rate > 0.5:
      raise ValueError("toy_pair masks at most half")
  masking.register("toy_pair", masking.SPECS["mixture"].plan,
                   parts=lambda config: tuple(config.mixture.strategies), check=checked)
  try:
    cfg = _config("toy_pair", strategies=("entity", "span"), weights=(1.0, 1.0))
    assert masking.components(cfg) == ("entity", "span")
    assert masking.batch_fields(cfg) == ("entity_ids", "phrase_ids")
    model = _model(tables, 0)
    mixture = _config("mixture", strategies=("entity", "span"), weights=(1.0, 1.0))
    assert _same(_masks(cfg, tables, batch, model), _masks(mixture, tables, batch, model))
    cfg.rate = 0.6
    with pytest.raises(ValueError, match="at most half"):
      masking.make_masker(cfg, tables)
    nested = _config("toy_pair", strategies=("span", "mixture"), weights=(1.0, 1.0))
    with pytest.raises(ValueError, match="cannot contain a mixture"):
      masking.make_masker(nested, tables)
  finally:
    masking.SPECS.pop("toy_pair", None)


def test_a_mixture_of_a_mixture_alone_is_refused(tables):
  """Not only beside another component: a mixture of ("mixture",) would recurse forever."""
  with pytest.raises(ValueError, match="cannot contain a mixture"):
    masking.make_masker(_config("mixture", strategies=("mixture",), weights=(1.0,)), tables)
  with pytest.raises(ValueError, match="one weight per"):
    masking.make_masker(_config("mixture", strategies=("span",), weights=(1.0, 1.0)), tables)


def test_register_as_a_decorator_and_refusing_unknown_fields():
  try:
    @masking.register("toy_words", batch_fields=("pos_class",))
    def toy_words(keys, batch, tables, ctx):
      """Single tokens, uniform."""
      del keys, batch, tables, ctx
      return masking.Plan()
    assert masking.SPECS["toy_words"].plan is toy_words
    assert masking.SPECS["toy_words"].doc == "Single tokens, uniform."
  finally:
    masking.SPECS.pop("toy_words", None)
  with pytest.raises(ValueError, match="unknown fields"):
    masking.register("toy_typo", lambda *a: masking.Plan(), batch_fields=("entity",))
  assert "toy_typo" not in masking.SPECS


def test_a_strategys_options_are_registered_with_it():
  """Each option block of the masking config is the registration's (`options`), under the
  strategy's name; its check runs when a config uses the strategy, alone or in a mixture."""
  cfg = masking.default_config()
  with_options = {name for name, spec in masking.SPECS.items() if spec.options is not None}
  assert with_options == {"span", "entity", "pmi", "frequency", "adaptive", "syntax",
                          "contextual", "semantic", "mixture"}
  for name in with_options:
    assert cfg[name].to_dict() == masking.SPECS[name].options().to_dict()
  bad = _config("span")
  bad.span.p = 0.0
  with pytest.raises(ValueError, match="span.p must lie in"):
    masking.validate(bad)
  bad.strategy = "whole_word"  # span's options are not used: nothing to refuse
  masking.validate(bad)
  bad.strategy, bad.mixture.strategies, bad.mixture.weights = "mixture", ("span",), (1.0,)
  with pytest.raises(ValueError, match="span.p must lie in"):
    masking.validate(bad)
