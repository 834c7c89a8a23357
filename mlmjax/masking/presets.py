"""Named masking recipes: each published strategy with the settings of its source.

    cfg = masking.preset("spanbert")          # a full masking ConfigDict
    mlmjax-train --config=configs/masking.py:spanbert --workdir=...

The strategies' defaults already follow their sources where that costs nothing; a recipe also
sets what a default shares across strategies (how the budget is counted, where random ids come
from), so a run can match one paper. docs/MASKING.md gives each recipe's source.
"""

from __future__ import annotations

import ml_collections

from mlmjax.masking.config import default_config

# name -> (source, overrides of default_config()).
PRESETS: dict[str, tuple[str, dict]] = {
    # create_pretraining_data.py: round(15% of the row, [CLS]/[SEP] counted), at least one,
    # random ids from the whole vocabulary, masks made once per copy of the data (dupe factor).
    "bert": ("BERT (Devlin et al., 2019)",
             {"strategy": "random", "count_specials": True, "min_one": True,
              "random_source": "full_vocab", "dynamic.mode": "static"}),
    # fairseq's MaskTokensDataset: floor(15% of n + U), random ids off the special tokens, new
    # masks every time a row is seen.
    "roberta": ("RoBERTa (Liu et al., 2019)",
                {"strategy": "dynamic", "count_mode": "prob_round", "count_specials": True,
                 "dynamic.mode": "every_step"}),
    # SpanBERT's pretraining code: ceil(15% of n) tokens in spans of Geo(0.2) words (at most 10),
    # the last span cut to the budget, adjacent spans merged, one [MASK]/random/keep decision
    # per span, random ids by unigram frequency; the loss adds the span boundary objective.
    "spanbert": ("SpanBERT (Joshi et al., 2020)",
                 {"strategy": "span", "count_mode": "ceil", "random_source": "unigram",
                  "replace_per": "unit", "fill": "truncate", "span.mode": "geometric",
                  "span.p": 0.2, "span.max_words": 10, "span.merge_adjacent": True,
                  "boundary_objective": True}),
    # ERNIE 1.0 (PaddlePaddle ERNIE batching.py): entities, phrases and words as units, each
    # drawn on its own with probability 0.15 (so a row's count varies), per-token replacement.
    "ernie": ("ERNIE 1.0 (Sun et al., 2019)",
              {"strategy": "entity", "entity.weight": 1.0, "entity.phrase_weight": 1.0,
               "count_mode": "per_unit"}),
    # PMI-Masking: high-PMI n-grams and words as units, drawn alike "until 15% of the tokens are
    # selected" (the unit that reaches the budget is taken whole), one decision per unit.
    "pmi": ("PMI-Masking (Levine et al., 2021)",
            {"strategy": "pmi", "pmi.weight": 1.0, "replace_per": "unit", "fill": "whole"}),
    # ModernBERT (Warner et al., 2024): RoBERTa's dynamic masking at a 30% rate.
    "modernbert": ("ModernBERT (Warner et al., 2024)",
                   {"strategy": "dynamic", "rate": 0.3, "dynamic.mode": "every_step"}),
}


def preset(name: str) -> ml_collections.ConfigDict:
  """The masking config of recipe `name` (see PRESETS); a clear error for an unknown name."""
  if name not in PRESETS:
    raise ValueError(f"unknown masking recipe {name!r}; choose from {sorted(PRESETS)}")
  config = default_config()
  for path, value in PRESETS[name][1].items():
    *parents, leaf = path.split(".")
    target = config
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  return config
