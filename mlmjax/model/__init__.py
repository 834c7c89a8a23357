"""Flax NNX encoders with a masked-LM head, one module per family, parameter-compatible with
their Hugging Face counterparts; `make_model` builds the one `config.model.family` names."""

from flax import nnx

from mlmjax.model.bert import BertForMaskedLM
from mlmjax.model.config import FAMILIES, ModelConfig
from mlmjax.model.layers import MaskedLM
from mlmjax.model.modernbert import ModernBertForMaskedLM

# family -> its masked-LM module (RoBERTa is BERT's module with RoBERTa's positions).
MODELS = {"bert": BertForMaskedLM, "roberta": BertForMaskedLM,
          "modernbert": ModernBertForMaskedLM}
assert set(MODELS) == set(FAMILIES)


def make_model(cfg: ModelConfig, rngs: nnx.Rngs) -> MaskedLM:
  return MODELS[cfg.family](cfg, rngs=rngs)
