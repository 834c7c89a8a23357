r"""ModernBERT from scratch: the default run in ModernBERT's recipe
(`mlmjax.config.FAMILY_RECIPES`): pre-LN, GeGLU, rotary positions, a global layer every 3 and
sliding windows between, a byte-level BPE tokenizer, no dropout, 30% dynamic masking.

    mlmjax-train --config=configs/modernbert.py --workdir=/tmp/modernbert
    mlmjax-export --workdir=/tmp/modernbert --out=/tmp/modernbert/hf  # ModernBertForMaskedLM

To continue pretraining a ModernBERT checkpoint, pass its local folder:
    mlmjax-train --config=configs/modernbert.py --config.init_from_hf=/models/ModernBERT-base ...
"""

import ml_collections

from mlmjax import config as mlmjax_config


def get_config() -> ml_collections.ConfigDict:
  return mlmjax_config.with_family(mlmjax_config.default_config(), "modernbert")
