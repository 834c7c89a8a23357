"""Tests of every strategy: the contract, unit integrity, weight directions, keys, jit hygiene."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import annotation_spans
from mlmjax import masking
from mlmjax.masking import units

PAD, CLS, SEP, MASK = 0, 2, 3, 4
B, S, P = 32, 64, 16
ALL = sorted(masking.SPECS)


def _config(strategy="dynamic", **overrides):
  cfg = masking.default_config()
  cfg.strategy = strategy
  cfg.max_predictions = P
  for key, value in overrides.items():
    target = cfg
    *path, leaf = key.split("__")
    for name in path:
      target = target[name]
    target[leaf] = value
  return cfg


@pytest.fixture(scope="module")
def embeddings(tables):
  """A stand-in for the model: hidden states embeddings[ids] (see train/ for the real model)."""
  return jax.random.normal(jax.random.key(7), (tables.vocab_size, 8))


@pytest.fixture(scope="module")
def run(tables, embeddings):
  """run(cfg, batch, step=0, key=0, state=None) with one jitted masker per distinct config."""
  cache = {}

  def go(cfg, batch, step=0, key=0, state=None):
    name = cfg.to_json()
    if name not in cache:
      cache[name] = jax.jit(masking.make_masker(cfg, tables))
    if state is None:
      state = masking.init_state(cfg, tables)
    hidden = embeddings[jnp.asarray(batch["input_ids"])]
    return cache[name](jax.random.key(key), batch, step, state, hidden)
  return go


@pytest.fixture(scope="module")
def batch(make_ids):
  rng = np.random.default_rng(0)
  ids, seg = make_ids(0, B, S, lengths=[S, S, 2, 0] + list(rng.integers(S // 2, S + 1, B - 4)))
  packed, pseg = make_ids(1, 8, S, lengths=[S] * 8, packed=3)
  ids[-8:], seg[-8:] = packed, pseg
  entities = annotation_spans(ids, rng)
  return {"input_ids": jnp.asarray(ids), "segment_ids": jnp.asarray(seg),
          "entity_ids": jnp.asarray(entities),
          "phrase_ids": jnp.asarray(np.where(entities > 0, 0, annotation_spans(ids, rng, 7))),
          "ngram_ids": jnp.asarray(annotation_spans(ids, rng, every=9)),
          "pos_class": jnp.asarray(rng.integers(0, 3, ids.shape).astype(np.int8))}


# ----------------------------------------------------------------------------- the contract


def _scheduled(name, **overrides):
  """Config whose rate is step / 10 (0 at step 0, 0.3 at step 3, 1 from step 10): one compile."""
  return _config(name, schedule__kind="linear", schedule__start=0.0, schedule__end=1.0,
                 schedule__steps=10, **overrides)


@pytest.mark.parametrize("name", ALL)
def test_contract_every_strategy(run, batch, tables, selected, expected_budget, name):
  ids = np.asarray(batch["input_ids"])
  special = np.asarray(tables.is_special)[ids]
  cfg = _scheduled(name)
  for step, rate in ((3, 0.3), (4, 0.4), (0, 0.0), (10, 1.0)):
    out = run(cfg, batch, step)
    sel, w = selected(out), np.asarray(out.weights)
    assert not (sel & special).any()
    pos, lab = np.asarray(out.positions), np.asarray(out.labels)
    np.testing.assert_array_equal(lab[w > 0], np.take_along_axis(ids, pos, 1)[w > 0])
    assert (pos[w == 0] == 0).all() and (lab[w == 0] == 0).all()
    np.testing.assert_array_equal(np.asarray(out.input_ids)[~sel], ids[~sel])
    budget, clipped = expected_budget(ids, tables, rate, P)
    np.testing.assert_array_equal(np.asarray(out.num_clipped), clipped)
    assert (w.sum(1) <= budget).all()
    # Whole units may fall short of the budget, never by more than a unit (here: < 12 tokens).
    assert (w.sum(1) >= budget - 11).all() and w.sum() >= 0.8 * budget.sum()
    if name in ("random", "dynamic", "frequency", "adaptive", "syntax", "contextual",
                "semantic", "span") or rate in (0.0, 1.0):
      np.testing.assert_array_equal(w.sum(1), budget)  # single tokens, SpanBERT's cut, all
    if rate == 1.0:
      assert clipped.max() > 0  # rows over P: clipped and counted


# ----------------------------------------------------------------------------- unit integrity


def _words(ids, is_word_start, is_special, segments=None):
  """Word id per token (-1 for specials), by the documented rules, in plain numpy."""
  out = np.full(ids.shape, -1)
  for r, row in enumerate(ids):
    w = -1
    for s, t in enumerate(row):
      if is_special[t]:
        continue
      new_doc = segments is not None and s > 0 and segments[r, s] != segments[r, s - 1]
      if is_word_start[t] or s == 0 or is_special[row[s - 1]] or new_doc:
        w += 1
      out[r, s] = w
  return out


CONVENTIONS = {
    "wordpiece": lambda i: f"w{i}" if i % 3 else f"##p{i}",
    "sentencepiece": lambda i: f"\u2581w{i}" if i % 3 else f"p{i}",
    "byte_level": lambda i: f"\u0120w{i}" if i % 3 else f"p{i}",
}


@pytest.mark.parametrize("convention", sorted(CONVENTIONS))
def test_whole_word_integrity_three_conventions(convention, selected):
  specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  vocab = specials + [CONVENTIONS[convention](i) for i in range(60)]
  tables = masking.VocabTables.from_vocab(vocab)
  rng = np.random.default_rng(1)
  ids = rng.integers(5, 65, (64, 48)).astype(np.int32)
  ids[:, 0], ids[:, 1] = CLS, 5  # a continuation piece (id 5 -> i = 0) right after [CLS]
  ids[:, 30], ids[:, -6:] = SEP, PAD
  masker = jax.jit(masking.make_masker(_config("whole_word", rate=0.4, max_predictions=24),
                                       tables))
  words = _words(ids, np.asarray(tables.is_word_start), np.asarray(tables.is_special))
  assert (words[:, 1] == 0).all()  # the piece after [CLS] starts the first word
  for step in range(3):
    sel = selected(masker(jax.random.key(0), {"input_ids": ids}, step))
    for r in range(len(ids)):
      chosen = set(words[r][sel[r]])
      np.testing.assert_array_equal(sel[r], np.isin(words[r], list(chosen)) & (words[r] >= 0))


def test_segment_boundary_splits_units(tables, selected):
  """A '##' piece opening a new document (no [SEP] between) is a unit of its own."""
  ids = np.full((256, 8), 5, np.int32)
  ids[:, 0], ids[:, 3], ids[:, 7] = CLS, PAD + 45, SEP  # w w | ##p (new doc) w w
  seg = np.array([[1, 1, 1, 2, 2, 2, 2, 2]] * 256)
  joint = {}
  for aware in (True, False):
    cfg = _config("whole_word", rate=0.2, segment_aware=aware)
    out = jax.jit(masking.make_masker(cfg, tables))(jax.random.key(0),
                                                    {"input_ids": ids, "segment_ids": seg}, 0)
    sel = selected(out)
    joint[aware] = (sel[:, 2] == sel[:, 3]).mean()
  assert joint[False] == 1.0  # one unit across the boundary
  assert joint[True] < 0.9  # two units: chosen independently


def test_annotated_spans_never_split(run, batch, selected):
  for name, field in (("entity", "entity_ids"), ("entity", "phrase_ids"), ("pmi", "ngram_ids")):
    spans = np.asarray(batch[field])
    for step in (2, 3, 4):
      sel = selected(run(_scheduled(name), batch, step))
      for r in range(B):
        for k in range(1, spans[r].max() + 1):
          inside = sel[r][spans[r] == k]
          assert inside.all() or not inside.any()


def test_entity_units_drawn_uniformly_as_ernie(run, batch, selected):
  """ERNIE 1.0 by default: an entity, a phrase and a word are each one unit, drawn alike, so
  masked tokens fall in entities at about the entities' share of units' tokens, not first."""
  entities, phrases = np.asarray(batch["entity_ids"]), np.asarray(batch["phrase_ids"])
  sel = np.concatenate([selected(run(_config("entity", rate=0.15), batch, step, key=step))
                        for step in range(6)])
  in_entity = np.tile(entities > 0, (6, 1))
  eligible = np.tile(np.asarray(batch["input_ids"]) >= 5, (6, 1))
  token_share = in_entity[eligible].mean()  # 0.19 here
  masked_share = in_entity[sel].mean()
  assert abs(masked_share - token_share) < 0.05, (masked_share, token_share)
  # Phrases are whole units too: never split.
  for r in range(sel.shape[0]):
    row = phrases[r % B]
    for k in range(1, row.max() + 1):
      inside = sel[r][row == k]
      assert inside.all() or not inside.any()
  first = selected(run(_config("entity", rate=0.15, entity__weight=float("inf")), batch, 0))
  assert (entities > 0)[first].mean() > 0.8  # "entities first": 0.90 (short rows top up)


def test_entities_first_then_words(run, batch, selected):
  spans = np.asarray(batch["entity_ids"])
  cfg = _scheduled("entity", max_predictions=S, entity__weight=float("inf"),
                   entity__phrase_weight=0.0)
  # Rate 0.1 (budget ~3-6): an entity that fits is always taken before any word.
  sel = selected(run(cfg, batch, 1))
  for r in range(B):
    sizes = np.bincount(spans[r])[1:]
    if sizes.size and sizes.min() <= sel[r].sum():
      assert (sel[r] & (spans[r] > 0)).any()
  # Rate 0.5: every entity token taken, and topped up with words (never phrases: weight 0).
  sel = selected(run(cfg, batch, 5))
  rows = spans.max(1) > 0
  assert (sel | (spans == 0))[rows].all()
  assert (sel & (spans == 0)).sum() > 100
  assert not (sel & (np.asarray(batch["phrase_ids"]) > 0)).any()


def test_span_units_start_on_words_and_replace_per_span(run, batch, tables, selected):
  ids = np.asarray(batch["input_ids"])
  words = _words(ids, np.asarray(tables.is_word_start), np.asarray(tables.is_special),
                 np.asarray(batch["segment_ids"]))
  cfg = _config("span", rate=0.3, mask_prob=0.5, random_prob=0.0)
  out = run(cfg, batch, 0)
  sel, new = selected(out), np.asarray(out.input_ids)
  first = sel & ~np.pad(sel[:, :-1], ((0, 0), (1, 0)))
  starts_word = words != np.pad(words[:, :-1], ((0, 0), (1, 0)), constant_values=-2)
  assert (starts_word | ~first).all()  # every selected run begins on a word start

  def mixed_runs(sel, new):
    """(runs of selected tokens longer than one, those mixing [MASK] and kept tokens)."""
    mixed = runs = 0
    for r in range(B):
      for s in np.flatnonzero(sel[r] & ~np.pad(sel[r, :-1], (1, 0))):
        e = s
        while e + 1 < S and sel[r, e + 1]:
          e += 1
        if e > s:
          runs += 1
          mixed += len(set(new[r, s:e + 1] == MASK)) > 1
    return runs, mixed

  # Per-span decisions, adjacent spans merged first (SpanBERT): every run is all [MASK] or
  # all kept. Without the merge, runs that join two spans may mix; per token, half would.
  runs, mixed = mixed_runs(sel, new)
  assert runs > 20 and mixed == 0
  out = run(_config("span", rate=0.3, mask_prob=0.5, random_prob=0.0,
                    span__merge_adjacent=False), batch, 0)
  runs, split = mixed_runs(selected(out), np.asarray(out.input_ids))
  assert 0 < split < runs / 2
  out = run(_config("span", rate=0.3, mask_prob=0.5, random_prob=0.0, replace_per="token"),
            batch, 0)
  runs, per_token = mixed_runs(selected(out), np.asarray(out.input_ids))
  assert per_token > runs / 3


def test_pmi_ngrams_get_one_replacement_decision(run, batch, selected):
  """PMI-Masking decides [MASK]/random/keep per n-gram (per unit), not per token."""
  ngrams = np.asarray(batch["ngram_ids"])

  def split_ngrams(cfg):
    out = run(cfg, batch, 0)
    sel, is_mask = selected(out), np.asarray(out.input_ids) == MASK
    taken = split = 0
    for r in range(B):
      for k in range(1, ngrams[r].max() + 1):
        inside = ngrams[r] == k
        if sel[r][inside].all():
          taken += 1
          split += len(set(is_mask[r][inside])) > 1
    return taken, split

  taken, split = split_ngrams(_config("pmi", rate=0.3, mask_prob=0.5, random_prob=0.0))
  assert taken > 20 and split == 0
  taken, split = split_ngrams(_config("pmi", rate=0.3, mask_prob=0.5, random_prob=0.0,
                                      replace_per="token"))
  assert split > taken / 4  # per token: a 2-3 token n-gram mixes half the time or more


def test_span_length_histogram_matches_truncated_geometric(tables, selected):
  """Selected spans (rate 0.2, one-token words, no cut): lengths in words ~ Geo(0.2) <= 10."""
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(50)]
  words_only = masking.VocabTables.from_vocab(vocab)
  ids = np.random.default_rng(2).integers(5, 55, (128, 256)).astype(np.int32)
  ids[:, 0], ids[:, -1] = CLS, SEP
  cfg = _config("span", rate=0.15, max_predictions=48, mask_prob=1.0, random_prob=0.0)
  masker = jax.jit(masking.make_masker(cfg, words_only))
  lengths = []
  for step in range(4):
    sel = selected(masker(jax.random.key(3), {"input_ids": ids}, step))
    # Units are spans; take those flanked by unselected tokens and not touching the row ends
    # (adjacent spans merge; the cut span is at most one per row and biases little).
    for row in sel:
      edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(int), [0]])))
      lengths += list(edges[1::2] - edges[::2])
  lengths = np.asarray(lengths)
  # Merging adjacent spans lengthens a few runs; the mean stays within 0.5 of 3.8.
  assert abs(np.mean(lengths[lengths <= 10]) - 3.8) < 0.5
  assert np.mean(lengths == 1) > 0.15 and np.mean(lengths >= 8) < 0.2


def test_t5_mode_exact_noise_and_spans(run, batch, tables, selected):
  cfg = _config("span", rate=0.25, max_predictions=S, span__mode="t5")
  ids = np.asarray(batch["input_ids"])
  n = (~np.asarray(tables.is_special)[ids]).sum(1)
  sel = selected(run(cfg, batch))
  np.testing.assert_array_equal(sel.sum(1), np.round(0.25 * n))


# ----------------------------------------------------------------------------- weights


def _selection_rate(sel, mask):
  return sel[mask].mean()


def _many(run, cfg, batch, selected, steps=6, **kw):
  return np.concatenate([selected(run(cfg, batch, step, **kw)) for step in range(steps)])


@pytest.fixture(scope="module")
def flat(make_ids):
  """Full rows, one-token units: for comparing selection rates by weight."""
  ids, _ = make_ids(5, 64, 64, lengths=[64] * 64, piece_prob=0.0)
  return {"input_ids": jnp.asarray(ids),
          "pos_class": jnp.asarray((np.arange(64)[None] % 5).repeat(64, 0).astype(np.int8))}


@pytest.mark.parametrize("alpha", [1.0, -1.0])
def test_frequency_direction(run, flat, alpha, selected):
  ids = np.tile(np.asarray(flat["input_ids"]), (6, 1))
  sel = _many(run, _config("frequency", frequency__alpha=alpha), flat, selected)
  rare, common = (ids >= 5) & (ids < 15), (ids >= 35) & (ids < 45)  # frequency = id + 1
  ratio = _selection_rate(sel, rare) / _selection_rate(sel, common)
  assert (ratio > 1.5) if alpha > 0 else (ratio < 1 / 1.5)


def test_semantic_prefers_salient_content_words(run, flat, selected):
  ids = np.tile(np.asarray(flat["input_ids"]), (6, 1))
  content = np.isin(np.tile(np.asarray(flat["pos_class"]), (6, 1)), (1, 3, 4))
  sel = _many(run, _config("semantic"), flat, selected)
  salient, plain = content & (ids >= 35), content & (ids >= 5) & (ids < 15)  # high vs low idf
  assert _selection_rate(sel, salient) > 1.5 * _selection_rate(sel, plain)
  assert _selection_rate(sel, content) > 3 * _selection_rate(sel, ~content)  # weight 0.1


def test_syntax_class_weights_and_fallback(run, flat, tables, selected):
  cls = np.tile(np.asarray(flat["pos_class"]), (6, 1))
  # Weights 1, 2, 0.5, 4, 3: unknown, content, function, predicate, core argument.
  sel = _many(run, _config("syntax"), flat, selected)
  r0, r1, r2, r3, r4 = (_selection_rate(sel, cls == c) for c in range(5))
  assert r3 > 1.15 * r4 and r4 > 1.2 * r1 and r1 > 1.4 * r0 and r0 > 1.4 * r2
  # Without pos_class: vocabulary function words (none in this vocab) -> content for all.
  sel = _many(run, _config("syntax"), {"input_ids": flat["input_ids"]}, selected)
  assert sel.sum() == 6 * 64 * round(0.15 * 62)


def test_syntax_function_word_fallback(selected):
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "of", "and", "fox", "dog", "cat"]
  t = masking.VocabTables.from_vocab(vocab)
  ids = np.random.default_rng(3).integers(5, 11, (256, 32)).astype(np.int32)
  ids[:, 0], ids[:, -1] = CLS, SEP
  sel = selected(jax.jit(masking.make_masker(_config("syntax"), t))(jax.random.key(0),
                                                                    {"input_ids": ids}, 0))
  function = ids < 8
  assert sel[~function].mean() > 3 * sel[function].mean()  # weights 2 vs 0.5


def test_adaptive_follows_running_loss(run, flat, tables, selected):
  cfg = _config("adaptive", adaptive__power=2.0)
  state = masking.init_state(cfg, tables)
  assert state["token_loss"].shape == (tables.vocab_size,)
  hard = jnp.zeros(tables.vocab_size).at[5:15].set(1.0)
  state = {"token_loss": state["token_loss"] * 0.0 + 0.5 + hard * 4.0}
  ids = np.tile(np.asarray(flat["input_ids"]), (6, 1))
  sel = _many(run, cfg, flat, selected, state=state)
  assert _selection_rate(sel, (ids >= 5) & (ids < 15)) > 3 * _selection_rate(sel, ids >= 15)


def test_update_state_is_a_running_mean_per_id(tables):
  cfg = _config("adaptive", adaptive__decay=0.9)
  state = masking.init_state(cfg, tables)
  init = float(np.log(tables.vocab_size))
  labels = jnp.array([[7, 7, 9, 0]])
  loss = jnp.array([[1.0, 3.0, 5.0, 100.0]])
  weights = jnp.array([[1.0, 1.0, 1.0, 0.0]])
  new = jax.jit(lambda s, l, x, w: masking.update_state(cfg, s, l, x, w))(state, labels, loss,
                                                                          weights)
  got = np.asarray(new["token_loss"])
  np.testing.assert_allclose(got[7], 0.9 * init + 0.1 * 2.0, rtol=1e-6)
  np.testing.assert_allclose(got[9], 0.9 * init + 0.1 * 5.0, rtol=1e-6)
  np.testing.assert_allclose(got[0], init)  # weight 0: untouched
  assert masking.update_state(_config(), None, labels, loss, weights) is None
  assert masking.init_state(_config(), tables) is None


def test_contextual_prefers_central_tokens(tables, flat, selected):
  # Hidden states of ids 5..14 point along the document mean's direction; the rest are random.
  emb = jax.random.normal(jax.random.key(0), (tables.vocab_size, 8)) * 0.3
  emb = emb.at[5:15].add(jnp.ones(8))
  emb = emb.at[15:].add(jnp.ones(8) * 0.2)
  ids = np.tile(np.asarray(flat["input_ids"]), (4, 1))
  central = (ids >= 5) & (ids < 15)
  rates = {}
  for sharp in (5.0, -5.0):
    masker = jax.jit(masking.make_masker(_config("contextual", contextual__sharpness=sharp),
                                         tables))
    hidden = emb[jnp.asarray(flat["input_ids"])]
    sel = np.concatenate([selected(masker(jax.random.key(0), flat, s, None, hidden))
                          for s in range(4)])
    rates[sharp] = _selection_rate(sel, central) / _selection_rate(sel, ~central)
  assert rates[5.0] > 1.5 and rates[-5.0] < 1 / 1.5


def test_missing_inputs_raise_clear_errors(tables, batch):
  plain = {"input_ids": batch["input_ids"]}
  for name, match in (("entity", "entity_ids"), ("pmi", "ngram_ids"), ("adaptive", "state"),
                      ("contextual", "hidden states")):
    with pytest.raises(ValueError, match=match):
      masking.make_masker(_config(name), tables)(jax.random.key(0), plain, 0)
  bare = masking.VocabTables.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"])
  for name in ("frequency", "semantic"):
    with pytest.raises(ValueError, match="from_vocab"):
      masking.make_masker(_config(name), bare)
  with pytest.raises(ValueError, match="frequency"):
    masking.make_masker(_config(random_source="unigram"), bare)


def test_unigram_replacements_follow_frequency(tables, make_ids, selected):
  ids, _ = make_ids(9, 128, 64, lengths=[64] * 128)
  cfg = _config(rate=0.3, mask_prob=0.0, random_prob=1.0, random_source="unigram")
  f = jax.jit(masking.make_masker(cfg, tables))
  draws = np.concatenate([np.asarray(f(jax.random.key(0), {"input_ids": ids}, s).input_ids)[
      selected(f(jax.random.key(0), {"input_ids": ids}, s))] for s in range(3)])
  freq = np.asarray(tables.frequency) * ~np.asarray(tables.is_special)
  counts = np.bincount(draws, minlength=len(freq))
  expected = freq / freq.sum() * len(draws)
  keep = expected > 0
  assert counts[~keep].sum() == 0
  chi2 = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
  assert chi2 < 100  # 59 degrees of freedom


# ----------------------------------------------------------------------------- mixture


def test_mixture_per_example_with_scheduled_weights(run, batch, selected):
  """Weights move from (1, 0) at step 0 to (0, 1) at step 8: pure, mixed, pure."""
  cfg = _config("mixture", mixture__strategies=("dynamic", "whole_word"),
                mixture__weights=(1.0, 0.0), mixture__final_weights=(0.0, 1.0),
                mixture__steps=8)
  for step, want in ((0, "dynamic"), (8, "whole_word")):
    np.testing.assert_array_equal(selected(run(cfg, batch, step)),
                                  selected(run(_config(want), batch, step)))
  mixed = selected(run(cfg, batch, 4))
  same_a = (mixed == selected(run(_config("dynamic"), batch, 4))).all(1)
  same_b = (mixed == selected(run(_config("whole_word"), batch, 4))).all(1)
  assert (same_a | same_b).all()  # each row is one strategy's masks
  assert (same_a & ~same_b).sum() >= 4 and (same_b & ~same_a).sum() >= 4


def test_a_mixture_of_one_masks_as_its_component(run, batch):
  """Span's per-row options (truncate, per-span decisions over merged adjacent spans) hold in
  a mixture too: a mixture of span alone gives span's masks and inputs."""
  cfg = _config("mixture", mixture__strategies=("span",), mixture__weights=(1.0,), rate=0.4)
  mixed, alone = run(cfg, batch, 3), run(_config("span", rate=0.4), batch, 3)
  for field in ("input_ids", "positions", "num_clipped"):
    np.testing.assert_array_equal(getattr(mixed, field), getattr(alone, field))


# ----------------------------------------------------------------------------- keys and jit


def test_static_masks_repeat_every_dupe_factor_epochs(tables, batch):
  cfg = _config(dynamic__mode="static", dynamic__dupe_factor=3, dynamic__steps_per_epoch=10)
  f = jax.jit(masking.make_masker(cfg, tables))
  ids = batch["input_ids"]
  perm = np.random.default_rng(0).permutation(B)

  def masks(step, rows=None):
    x = ids if rows is None else ids[rows]
    return np.asarray(f(jax.random.key(0), {"input_ids": x}, step).positions)

  e0 = masks(5)
  np.testing.assert_array_equal(e0, masks(7))  # same epoch, other step: same masks
  np.testing.assert_array_equal(e0, masks(35))  # epoch 3 = epoch 0 mod 3
  np.testing.assert_array_equal(e0[perm], masks(5, perm))  # follows the example, not the row
  assert (e0 != masks(15)).any(1).sum() > B // 2  # epoch 1 differs
  ex = {"input_ids": ids, "example_ids": jnp.arange(B) + 100}
  by_id = np.asarray(f(jax.random.key(0), ex, 5).positions)
  assert (by_id != e0).any()  # example_ids, when given, identify examples


def test_random_is_bert_static_dynamic_is_roberta(tables, batch):
  """`random` masks an example the same way every time it is seen (BERT's static masks, one
  copy per epoch up to dupe_factor); `dynamic` draws new masks every step (RoBERTa)."""
  ids = batch["input_ids"]

  def masks(cfg, step):
    f = masking.make_masker(cfg, tables)
    return np.asarray(f(jax.random.key(0), {"input_ids": ids}, step).positions)

  random, dynamic = _config("random"), _config("dynamic")
  assert masking.is_static(random) and not masking.is_static(dynamic)
  np.testing.assert_array_equal(masks(random, 3), masks(random, 50_000))  # one copy: fixed
  assert (masks(dynamic, 3) != masks(dynamic, 4)).any(1).sum() > B // 2  # new every step
  epochs = masking.with_epoch_length(random, 10)  # what the trainer sets from its data
  assert epochs.dynamic.steps_per_epoch == 10 and random.dynamic.steps_per_epoch == 0
  np.testing.assert_array_equal(masks(epochs, 3), masks(epochs, 9))  # the same epoch
  assert (masks(epochs, 3) != masks(epochs, 13)).any(1).sum() > B // 2  # the next copy
  np.testing.assert_array_equal(masks(epochs, 3), masks(epochs, 103))  # dupe_factor 10 later
  # A user's epoch length is kept, and dynamic masking never gets one.
  assert masking.with_epoch_length(epochs, 99).dynamic.steps_per_epoch == 10
  assert masking.with_epoch_length(dynamic, 10).dynamic.steps_per_epoch == 0
  # Either policy can be asked for by name, whatever the strategy.
  assert not masking.is_static(_config("random", dynamic__mode="every_step"))
  assert masking.is_static(_config("span", dynamic__mode="static"))


def test_one_compilation_across_batches_and_rates(tables, make_ids):
  cfg = _config("whole_word", schedule__kind="cosine", schedule__steps=100, max_predictions=24)
  f = jax.jit(masking.make_masker(cfg, tables))
  counts = []
  for i, step in enumerate((0, 25, 50, 99, 400)):
    ids, _ = make_ids(i, B, S)
    counts.append(float(np.asarray(f(jax.random.key(i), {"input_ids": ids}, step).weights).sum()))
  assert f._cache_size() == 1  # pylint: disable=protected-access
  assert counts[0] > counts[2] > counts[4]  # the rate decays without recompiling


@pytest.mark.parametrize("name", ALL)
def test_no_callbacks_or_quadratic_intermediates(tables, batch, embeddings, intermediate_shapes,
                                                 name):
  cfg = _config(name)
  masker = masking.make_masker(cfg, tables)
  jaxpr = jax.make_jaxpr(masker)(jax.random.key(0), batch, 0, masking.init_state(cfg, tables),
                                 embeddings[batch["input_ids"]])
  assert "callback" not in str(jaxpr)
  big = [x for x in intermediate_shapes(jaxpr)
         if len(x) >= 3 and x[-1] in (S, tables.vocab_size) and x[-2] in (S, tables.vocab_size)]
  assert not big, big


SHARDED_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    sys.path.insert(0, {tests!r})
    from conftest import _make_ids, wordpiece_vocab
    from mlmjax import masking
    assert jax.device_count() == 8
    vocab = wordpiece_vocab()
    tables = masking.VocabTables.from_vocab(vocab)
    ids, seg = _make_ids(11, 32, 64)
    batch = {{"input_ids": ids, "segment_ids": seg}}
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharded = jax.device_put(batch, NamedSharding(mesh, PartitionSpec("data")))
    out = {{}}
    for name in ("dynamic", "whole_word"):
      cfg = masking.default_config()
      cfg.strategy = name
      f = jax.jit(masking.make_masker(cfg, tables))
      eight = f(jax.random.key(5), sharded, 3)
      assert len(eight.input_ids.sharding.device_set) == 8
      # The masker stays batch-parallel: no array is gathered across devices.
      assert "all-gather" not in f.lower(jax.random.key(5), sharded, 3).compile().as_text()
      out[name] = {{k: np.asarray(v).tolist() for k, v in vars(eight).items()}}
    print(json.dumps(out))
""")


def test_same_masks_on_one_and_eight_devices(tables, make_ids):
  """Per-example masks do not depend on sharding: 8 simulated devices vs this process's 1."""
  assert jax.device_count() == 1
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  script = SHARDED_SCRIPT.format(tests=os.path.dirname(__file__))
  root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
  proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=root, capture_output=True,
                        text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  eight = json.loads(proc.stdout.strip().splitlines()[-1])
  ids, seg = make_ids(11, 32, 64)
  for name, fields in eight.items():
    cfg = masking.default_config()
    cfg.strategy = name
    one = jax.jit(masking.make_masker(cfg, tables))(
        jax.random.key(5), {"input_ids": ids, "segment_ids": seg}, 3)
    for field, value in fields.items():
      np.testing.assert_array_equal(np.asarray(getattr(one, field)), value, err_msg=field)


def test_units_word_starts_matches_table(tables, batch):
  ids = batch["input_ids"]
  np.testing.assert_array_equal(units.word_starts(ids, tables),
                                np.asarray(tables.is_word_start)[np.asarray(ids)])


def test_register_a_new_strategy(run, batch, tables, selected):
  def first_words(keys, batch, tables, ctx):
    """Whole words, the first ones of a row far more likely (a made-up strategy)."""
    del keys, ctx
    ids = batch.input_ids
    return masking.Plan(unit_start=units.word_starts(ids, tables),
                        log_weight=-0.5 * jnp.arange(ids.shape[1], dtype=jnp.float32)[None])
  masking.register("first_words", first_words)
  try:
    sel = selected(run(_config("mixture", mixture__strategies=("first_words",),
                               mixture__weights=(1.0,)), batch, 1))
    assert sel[:, :S // 4].sum() > 5 * sel[:, S // 2:].sum()
  finally:
    del masking.SPECS["first_words"]


# ----------------------------------------------------------------------------- length bias


def _units_of_every_length(rows=256, length=128, seed=0):
  """Rows of single-token words and annotated spans of 2..6 tokens, each length equally often:
  (ids, spans [B, S], [(row, start, length)] of every unit)."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, 45, (rows, length)).astype(np.int32)  # word starts only (conftest)
  ids[:, 0], ids[:, -1] = CLS, SEP
  spans, units_list = np.zeros_like(ids), []
  for r in range(rows):
    p, k = 1, 0
    while p < length - 1:
      n = min(int(rng.integers(1, 7)), length - 1 - p)
      if n >= 2:
        k += 1
        spans[r, p:p + n] = k
      units_list.append((r, p, n))
      p += n
  return ids, spans, units_list


def _rate_by_length(run, selected, cfg, field, keys=4):
  ids, spans, units_list = _units_of_every_length()
  batch = {"input_ids": jnp.asarray(ids), field: jnp.asarray(spans),
           "phrase_ids": jnp.zeros(ids.shape, jnp.int32)}
  hits, totals = np.zeros(7), np.zeros(7)
  for key in range(keys):
    out = run(cfg, batch, key=key)
    sel = selected(out)
    assert (np.asarray(out.weights).sum(1) <= cfg.max_predictions).all()
    for r, p, n in units_list:
      hits[n] += sel[r, p]
      totals[n] += 1
  return hits[1:] / totals[1:]


@pytest.mark.parametrize("recipe, field", [("ernie", "entity_ids"), ("pmi", "ngram_ids")])
def test_recipes_draw_units_of_every_length_alike(run, selected, recipe, field):
  """ERNIE draws each unit on its own (count_mode per_unit), PMI-Masking takes the unit that
  reaches the budget whole (fill whole): a 6-token unit is as likely to be masked as a 1-token
  one, within 0.025 here (measured: 0.146-0.155 and 0.161-0.169). BERT's skip rule, which the
  whole-word recipe keeps, favours short units: 0.28 for one token, 0.12 for six."""
  cfg = masking.preset(recipe)
  cfg.max_predictions = 40  # room for ERNIE's varying counts: none clipped here
  rates = _rate_by_length(run, selected, cfg, field)
  assert rates.max() - rates.min() < 0.025, rates
  if recipe == "ernie":
    np.testing.assert_allclose(rates, 0.15, atol=0.012)
  cfg.update(fill="skip", count_mode="exact")
  biased = _rate_by_length(run, selected, cfg, field)
  assert biased[0] - biased[-1] > 0.1, biased


def test_a_whole_unit_cut_by_max_predictions_is_counted_as_clipped(run, selected):
  """fill="whole" may overshoot the budget; with no slot to spare the unit is cut at
  max_predictions and the cut tokens are reported in num_clipped (budget_clipped)."""
  ids, spans, _ = _units_of_every_length(rows=64)
  cfg = masking.preset("pmi")
  cfg.max_predictions = 19  # = round(0.15 * 126): the budget itself, no room to overshoot
  out = run(cfg, {"input_ids": jnp.asarray(ids), "ngram_ids": jnp.asarray(spans)})
  taken, clipped = np.asarray(out.weights).sum(1), np.asarray(out.num_clipped)
  assert (taken == 19).all() and clipped.max() > 0
  cfg.max_predictions = 24  # room: the same draws overshoot instead, nothing clipped
  roomy = run(cfg, {"input_ids": jnp.asarray(ids), "ngram_ids": jnp.asarray(spans)})
  assert (np.asarray(roomy.num_clipped) == 0).all()
  assert (np.asarray(roomy.weights).sum(1) == taken + clipped).all()


def _real_tokenizer(convention, tmp_path):
  """A tokenizer of each family's convention, trained here on `_SENTENCES`: BERT's WordPiece,
  RoBERTa's / ModernBERT's byte-level BPE ("\u0120", no space before the first word), an XLM-R
  style SentencePiece model ("\u2581")."""
  from mlmjax.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  docs = _SENTENCES * 20
  if convention == "wordpiece":
    return tokenizer_lib.train_tokenizer(docs, 70, lowercase=True)
  if convention == "byte_level":
    return tokenizer_lib.train_byte_level_bpe(docs, 300)
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top  (test extra)
  (tmp_path / "docs.txt").write_text("\n".join(docs), encoding="utf-8")
  spm.SentencePieceTrainer.train(
      input=str(tmp_path / "docs.txt"), model_prefix=str(tmp_path / "sp"), vocab_size=50,
      pad_id=0, unk_id=1, bos_id=2, eos_id=3, user_defined_symbols=["<mask>"],
      minloglevel=2)
  return tokenizer_lib.load_tokenizer(str(tmp_path / "sp.model"))


_SENTENCES = ["The quickest foxes were jumping over lazily sleeping dogs.",
              "Unbelievable tokenization mishaps happen constantly.",
              "Parsers return structured representations of sentences."]


@pytest.mark.parametrize("convention", ["wordpiece", "byte_level", "sentencepiece"])
def test_whole_word_units_on_real_tokenizers(convention, tmp_path, selected):
  """On real tokenizers of the three conventions, whole-word masking takes every word the
  tokenizer reports (its `word_ids`) entirely or not at all, the first word after <s> too."""
  from mlmjax.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  tok = _real_tokenizer(convention, tmp_path)
  roles = tokenizer_lib.special_roles(tok)
  tables = masking.VocabTables.from_tokenizer(tok)
  rows, words = [], []
  for text in _SENTENCES:
    enc = tok.encode(text, add_special_tokens=False)
    rows.append([roles["cls"], *enc.ids, roles["sep"]])
    words.append([-1, *[w if w is not None else -1 for w in enc.word_ids], -1])
  length = max(map(len, rows)) + 2
  ids = np.full((len(rows), length), roles["pad"], np.int32)
  word_of = np.full((len(rows), length), -1)
  for r, (row, w) in enumerate(zip(rows, words)):
    ids[r, :len(row)], word_of[r, :len(w)] = row, w
  assert max(np.bincount(w[w >= 0]).max() for w in word_of) > 1  # words of several tokens
  masker = jax.jit(masking.make_masker(_config("whole_word", rate=0.4, max_predictions=24),
                                       tables))
  for step in range(8):
    sel = selected(masker(jax.random.key(0), {"input_ids": ids}, step))
    for r in range(len(ids)):
      chosen = set(word_of[r][sel[r]])
      assert -1 not in chosen
      np.testing.assert_array_equal(sel[r], np.isin(word_of[r], list(chosen)))
