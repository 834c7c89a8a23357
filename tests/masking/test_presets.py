"""Named masking recipes: each builds a masker, sets its source's settings, loads as a config."""

import jax
import numpy as np
import pytest

from helpers import annotation_spans, load_config
from mlmjax import masking


@pytest.mark.parametrize("name", sorted(masking.presets.PRESETS))
def test_each_recipe_masks_a_batch(name, tables, make_ids):
  cfg = masking.preset(name)
  masking.validate(cfg)
  ids, seg = make_ids(0, 8, 64, lengths=[64] * 8)
  rng = np.random.default_rng(0)
  batch = {"input_ids": ids, "segment_ids": seg}
  for field in masking.batch_fields(cfg):
    batch[field] = annotation_spans(ids, rng)
  out = masking.make_masker(cfg, tables)(jax.random.key(0), batch, 0)
  assert 0 < float(np.asarray(out.weights).sum()) <= 8 * cfg.max_predictions
  config = load_config("masking", name)  # --config=configs/masking.py:NAME
  # The default config's 20 slots, or what the recipe's count can reach at 128 tokens (ERNIE
  # draws per unit: mean 19 + 3 sd; PMI-Masking may overshoot by a unit: 19 + 4; ModernBERT
  # masks 30%: 38).
  slots = {"ernie": 31, "pmi": 23, "modernbert": 38}.get(name, 20)
  assert config.masking.to_dict() == {**cfg.to_dict(), "max_predictions": slots}
  assert tuple(config.data.annotations) == masking.batch_fields(cfg)


def test_recipes_follow_their_sources():
  bert, roberta, spanbert = (masking.preset(n) for n in ("bert", "roberta", "spanbert"))
  assert masking.is_static(bert) and not masking.is_static(roberta)
  assert (bert.count_specials, bert.min_one, bert.random_source) == (True, True, "full_vocab")
  assert roberta.count_mode == "prob_round"
  assert (spanbert.count_mode, spanbert.random_source, spanbert.fill, spanbert.replace_per,
          spanbert.span.p, spanbert.span.max_words, spanbert.span.merge_adjacent) == (
              "ceil", "unigram", "truncate", "unit", 0.2, 10, True)
  assert spanbert.boundary_objective and not bert.boundary_objective
  ernie, pmi = masking.preset("ernie"), masking.preset("pmi")
  assert (ernie.count_mode, ernie.fill) == ("per_unit", "auto")  # each unit on its own
  assert (pmi.count_mode, pmi.fill, pmi.replace_per) == ("exact", "whole", "unit")
  assert masking.preset("ernie").entity.weight == 1.0
  with pytest.raises(ValueError, match="choose from"):
    masking.preset("electra")
