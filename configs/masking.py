r"""The default training run with a named masking recipe (masking/presets.py).

    mlmjax-train --config=configs/masking.py:spanbert --workdir=/tmp/spanbert

Recipes: bert (static masks, dupe factor 10), roberta (dynamic masking, and RoBERTa's model and
byte-level BPE tokenizer), modernbert (30% dynamic masking on a ModernBERT), spanbert, ernie
(entities and phrases), pmi (PMI n-grams). The data is prepared with the annotations the recipe
reads.
"""

import ml_collections

from mlmjax import config as mlmjax_config
from mlmjax import masking


def get_config(recipe: str = "bert") -> ml_collections.ConfigDict:
  config = mlmjax_config.default_config()
  slots = config.masking.max_predictions
  config.masking = masking.preset(recipe)
  # The default config's slots for its row length, or what the recipe's count can reach
  # (ERNIE's per-unit draw varies, PMI-Masking's last unit may overshoot).
  config.masking.max_predictions = max(slots, masking.schedules.required_predictions(
      config.masking, config.data.seq_len))
  config.data.annotations = masking.batch_fields(config.masking)
  if recipe in ("roberta", "modernbert"):  # a model family's whole recipe, not only its masks
    config = mlmjax_config.with_family(config, recipe)
  return config
