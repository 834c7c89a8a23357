r"""RoBERTa from scratch: the default run in RoBERTa's recipe (`mlmjax.config.FAMILY_RECIPES`):
a byte-level BPE tokenizer trained on the corpus, one token type, dynamic masking.

    mlmjax-train --config=configs/roberta.py --workdir=/tmp/roberta
    mlmjax-export --workdir=/tmp/roberta --out=/tmp/roberta/hf   # a RobertaForMaskedLM

To continue pretraining a RoBERTa or XLM-R checkpoint instead, pass its local folder:
    mlmjax-train --config=configs/roberta.py --config.init_from_hf=/models/roberta-base ...
"""

import ml_collections

from mlmjax import config as mlmjax_config


def get_config() -> ml_collections.ConfigDict:
  return mlmjax_config.with_family(mlmjax_config.default_config(), "roberta")
