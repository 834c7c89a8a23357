"""The fast masker against the slow numpy reference (reference.py): whole outputs, exactly.

Rows with padding, [CLS]/[SEP], packed documents and annotations; several batches, keys and
steps for each strategy and option. Any difference is a bug in one of the two: the reference
is written from the contract, so read it first.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference
from helpers import annotation_spans
from mlmjax import masking

B, S, P = 16, 24, 6  # S > 24 costs the fast masker seconds more to compile
FIELDS = ("input_ids", "positions", "labels", "weights", "num_clipped")

# name -> (strategy, config overrides): the main strategies and the options that change how
# units are counted, filled and corrupted.
CASES = {
    "random": ("random", {"count_specials": True, "min_one": True}),  # static masks
    "dynamic_bernoulli_unigram": ("dynamic", {"count_mode": "bernoulli",
                                              "random_source": "unigram"}),
    "dynamic_per_unit": ("dynamic", {"count_mode": "per_unit", "rate": 0.3,
                                     "random_source": "full_vocab"}),
    "whole_word": ("whole_word", {}),
    "span": ("span", {"rate": 0.3}),
    "span_whole_per_unit": ("span", {"fill": "whole", "count_mode": "per_unit", "rate": 0.3}),
    "entity_first_prob_round": ("entity", {"entity.weight": float("inf"), "fill": "truncate",
                                           "entity.phrase_weight": 0.5,
                                           "count_mode": "prob_round"}),
    "pmi_whole_unigram": ("pmi", {"fill": "whole", "rate": 0.3, "random_source": "unigram"}),
    "frequency": ("frequency", {"rate": 0.3}),
    "semantic_words_per_unit": ("semantic", {"units": "word", "count_mode": "per_unit",
                                             "semantic.function_weight": 0.0, "rate": 0.3}),
    "mixture": ("mixture", {"mixture.strategies": ("dynamic", "span", "frequency", "pmi",
                                                   "syntax", "adaptive"),
                            "mixture.weights": (1.0, 2.0, 1.0, 2.0, 1.0, 1.0), "units": "word",
                            "rate": 0.3}),
}


def _config(strategy, overrides):
  cfg = masking.default_config()
  cfg.strategy, cfg.max_predictions = strategy, P
  cfg.update_from_flattened_dict(overrides)
  return cfg


def _batches(make_ids):
  """Two batches (the same fields, so one compile): padded rows of one document, and packed
  rows of three."""
  out = []
  for seed, packed in ((0, 0), (1, 2)):
    rng = np.random.default_rng(seed)
    ids, seg = make_ids(seed, B, S, packed=packed)
    if packed:  # and a document that starts right after a word, marked by its segment id alone
      for r, n in enumerate((seg > 0).sum(1)):
        seg[r, 3 * n // 4:n] += 1
    entities = annotation_spans(ids, rng, 7)
    out.append({"input_ids": ids, "segment_ids": seg, "entity_ids": entities,
                "phrase_ids": np.where(entities > 0, 0, annotation_spans(ids, rng, 5)),
                "ngram_ids": annotation_spans(ids, rng, 6),
                "pos_class": rng.integers(0, 5, ids.shape).astype(np.int8)})
  return out


@pytest.fixture(scope="module")
def batches(make_ids):
  return _batches(make_ids)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_fast_masker_equals_the_reference(case, tables, batches):
  cfg = _config(*CASES[case])
  state = {"token_loss": jnp.asarray(np.random.default_rng(5).uniform(0.5, 8.0,
                                                                      tables.vocab_size),
                                     jnp.float32)}
  masker = jax.jit(masking.make_masker(cfg, tables))
  for batch in batches:
    for key, step in ((0, 0), (1, 7), (2, 123)):
      fast = masker(jax.random.key(key), batch, step, state)
      want = reference.reference_masker(cfg, tables, jax.random.key(key), batch, step, state)
      for field in FIELDS:
        np.testing.assert_array_equal(np.asarray(getattr(fast, field)), want[field],
                                      err_msg=f"{case}: {field}, key {key}, step {step}")


def test_the_reference_keeps_the_contract(tables, batches):
  """The oracle's own checks, on its outputs: budget, specials, units, corruption shares."""
  cfg = _config("whole_word", {"rate": 0.3})
  batch = batches[0]
  ids = batch["input_ids"]
  special = np.asarray(tables.is_special)[ids]
  word_start = np.asarray(tables.is_word_start)[ids]
  out = reference.reference_masker(cfg, tables, jax.random.key(0), batch, 0)
  for r in range(B):
    chosen = out["positions"][r][out["weights"][r] > 0]
    assert not special[r, chosen].any()
    budget = min(round(0.3 * (~special[r]).sum()), P)
    assert len(chosen) <= budget
    for i in chosen:  # a word is taken whole: its continuation pieces are chosen with it
      j = i + 1
      while j < S and not word_start[r, j] and not special[r, j]:
        assert j in chosen
        j += 1
    np.testing.assert_array_equal(out["labels"][r][:len(chosen)], ids[r, chosen])
