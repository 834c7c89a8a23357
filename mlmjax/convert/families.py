"""One table per model family: how our parameter paths and config read in Hugging Face's names.

Our parameter paths are HF's module names where the family's module mirrors HF's (`bert/...`
for BERT and RoBERTa, `model/...` for ModernBERT); a family lists only what differs: the prefix
renames (RoBERTa keeps BERT's module tree under `roberta.` and `lm_head.`), where the stacked
layers sit, which tensors have a vocabulary axis, what HF lacks (ModernBERT's first layer has
no attention norm), and its `config.json` both ways.
"""

import dataclasses
from collections.abc import Callable

from mlmjax.model import BertForMaskedLM, ModernBertForMaskedLM
from mlmjax.model.config import ACTIVATIONS, ModelConfig


@dataclasses.dataclass(frozen=True)
class Family:
  """How one family's parameters and config map onto Hugging Face's."""
  architecture: str  # the class an export declares (config.json "architectures")
  model_types: tuple[str, ...]  # HF model_type values an import accepts; the first is written
  stacked: str  # our path of the stacked layers: one leaf per parameter, layers leading
  listed: str  # HF's path of layer i, with {} for i (our separators)
  renames: tuple[tuple[str, str], ...]  # (our dotted prefix, HF's) after the leaf renaming
  vocab_rows: tuple[str, ...]  # HF tensors with a vocabulary axis first (padded inside mlmjax)
  body: str  # HF's prefix of the encoder body (a checkpoint of the body alone lacks it)
  head: str  # HF's prefix of the MLM head (absent in a body-only checkpoint)
  to_hf: Callable[[ModelConfig, dict], dict]  # (config, special ids) -> config.json
  from_hf: Callable[[dict], dict]  # config.json -> ModelConfig fields
  absent: tuple[str, ...] = ()  # HF names of tensors we keep but HF does not have


def _common_hf(cfg: ModelConfig) -> dict:
  return {"vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
          "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
          "intermediate_size": cfg.intermediate_size,
          "max_position_embeddings": cfg.max_position_embeddings,
          "initializer_range": cfg.initializer_range, "pad_token_id": cfg.pad_token_id,
          "tie_word_embeddings": True, "torch_dtype": "float32"}


def _common_ours(hf: dict) -> dict:
  return dict(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
              num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
              intermediate_size=hf["intermediate_size"],
              max_position_embeddings=hf["max_position_embeddings"],
              initializer_range=hf.get("initializer_range", 0.02))


def _activation(hf: dict, key: str) -> str:
  act = hf.get(key, "gelu")
  if act not in ACTIVATIONS:
    raise ValueError(f"{key}={act!r} is not supported; mlmjax runs {sorted(ACTIVATIONS)}")
  return act


def _bert_to_hf(cfg: ModelConfig, specials: dict, model_type: str, architecture: str) -> dict:
  out = {"architectures": [architecture], "model_type": model_type, **_common_hf(cfg),
         "hidden_act": cfg.hidden_act, "hidden_dropout_prob": cfg.hidden_dropout,
         "attention_probs_dropout_prob": cfg.attention_dropout,
         "type_vocab_size": cfg.type_vocab_size, "layer_norm_eps": cfg.layer_norm_eps}
  if model_type == "roberta":
    out.update(bos_token_id=specials["cls"], eos_token_id=specials["sep"])
  return out


def _bert_from_hf(hf: dict) -> dict:
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise ValueError("only absolute position embeddings are supported")
  return dict(_common_ours(hf), hidden_act=_activation(hf, "hidden_act"),
              type_vocab_size=hf.get("type_vocab_size", 2),
              hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
              attention_dropout=hf.get("attention_probs_dropout_prob", 0.0),
              layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
              pad_token_id=hf.get("pad_token_id") or 0)


def _modernbert_to_hf(cfg: ModelConfig, specials: dict) -> dict:
  n = cfg.global_attn_every_n_layers
  return {
      "architectures": ["ModernBertForMaskedLM"], "model_type": "modernbert", **_common_hf(cfg),
      "hidden_activation": cfg.hidden_act, "classifier_activation": cfg.hidden_act,
      "norm_eps": cfg.layer_norm_eps, "norm_bias": False, "attention_bias": False,
      "mlp_bias": False, "decoder_bias": True, "classifier_bias": False,
      "embedding_dropout": cfg.hidden_dropout, "mlp_dropout": cfg.hidden_dropout,
      "attention_dropout": cfg.attention_dropout, "local_attention": cfg.local_attention,
      "layer_types": ["full_attention" if i % n == 0 else "sliding_attention"
                      for i in range(cfg.num_layers)],
      "rope_parameters": {
          "full_attention": {"rope_type": "default", "rope_theta": cfg.global_rope_theta},
          "sliding_attention": {"rope_type": "default", "rope_theta": cfg.local_rope_theta}},
      # transformers 4.x reads these instead of layer_types and rope_parameters.
      "global_attn_every_n_layers": n, "global_rope_theta": cfg.global_rope_theta,
      "local_rope_theta": cfg.local_rope_theta,
      "cls_token_id": specials["cls"], "sep_token_id": specials["sep"],
      "bos_token_id": specials["cls"], "eos_token_id": specials["sep"]}


def _modernbert_from_hf(hf: dict) -> dict:
  fixed = {"norm_bias": False, "attention_bias": False, "mlp_bias": False,
           "decoder_bias": True, "classifier_bias": False}
  differs = {k: hf[k] for k, v in fixed.items() if hf.get(k, v) != v}
  if differs:
    raise ValueError(f"ModernBERT variants with {differs} are not supported (mlmjax runs "
                     f"ModernBERT's published layout: {fixed})")
  act = _activation(hf, "hidden_activation")
  if _activation(hf, "classifier_activation") != act:
    raise ValueError("hidden_activation and classifier_activation differ; mlmjax uses one")
  n = hf.get("global_attn_every_n_layers", 3)
  layers = hf.get("layer_types") or []
  if layers and layers != ["full_attention" if i % n == 0 else "sliding_attention"
                           for i in range(len(layers))]:
    raise ValueError(f"layer_types {layers} do not follow one global layer every {n}")
  rope = hf.get("rope_parameters") or {}
  theta = lambda kind, legacy, default: (rope.get(kind) or {}).get(
      "rope_theta", hf.get(legacy, default))
  return dict(_common_ours(hf), family="modernbert", hidden_act=act, type_vocab_size=1,
              hidden_dropout=max(hf.get("embedding_dropout", 0.0), hf.get("mlp_dropout", 0.0)),
              attention_dropout=hf.get("attention_dropout", 0.0),
              layer_norm_eps=hf.get("norm_eps", 1e-5), pad_token_id=hf.get("pad_token_id", 0),
              local_attention=hf.get("local_attention", 128), global_attn_every_n_layers=n,
              global_rope_theta=theta("full_attention", "global_rope_theta", 160_000.0),
              local_rope_theta=theta("sliding_attention", "local_rope_theta", 10_000.0))


_BERT_LAYERS = (BertForMaskedLM.STACKED, "bert/encoder/layer/{}/")

FAMILIES = {
    "bert": Family(
        architecture="BertForMaskedLM", model_types=("bert",), stacked=_BERT_LAYERS[0],
        listed=_BERT_LAYERS[1], renames=(),
        vocab_rows=("bert.embeddings.word_embeddings.weight", "cls.predictions.bias"),
        body="bert.", head="cls.",
        to_hf=lambda cfg, sp: _bert_to_hf(cfg, sp, "bert", "BertForMaskedLM"),
        from_hf=_bert_from_hf),
    # XLM-R and CamemBERT are RoBERTa's architecture under another model_type.
    "roberta": Family(
        architecture="RobertaForMaskedLM", model_types=("roberta", "xlm-roberta", "camembert"),
        stacked=_BERT_LAYERS[0], listed=_BERT_LAYERS[1],
        renames=(("bert.", "roberta."), ("cls.predictions.transform.dense.", "lm_head.dense."),
                 ("cls.predictions.transform.LayerNorm.", "lm_head.layer_norm."),
                 ("cls.predictions.bias", "lm_head.bias")),
        vocab_rows=("roberta.embeddings.word_embeddings.weight", "lm_head.bias"),
        body="roberta.", head="lm_head.",
        to_hf=lambda cfg, sp: _bert_to_hf(cfg, sp, "roberta", "RobertaForMaskedLM"),
        from_hf=lambda hf: dict(_bert_from_hf(hf), family="roberta",
                                layer_norm_eps=hf.get("layer_norm_eps", 1e-5))),
    "modernbert": Family(
        architecture="ModernBertForMaskedLM", model_types=("modernbert",),
        stacked=ModernBertForMaskedLM.STACKED, listed="model/layers/{}/", renames=(),
        vocab_rows=("model.embeddings.tok_embeddings.weight", "decoder.bias"),
        body="model.", head="head.", to_hf=_modernbert_to_hf, from_hf=_modernbert_from_hf,
        absent=("model.layers.0.attn_norm.weight",)),
}


def family_of_model_type(model_type: str | None) -> str:
  """Our family for an HF `model_type`; a clear error for one mlmjax does not run."""
  for name, family in FAMILIES.items():
    if model_type in family.model_types:
      return name
  known = sorted(t for f in FAMILIES.values() for t in f.model_types)
  raise ValueError(f"a {model_type!r} model cannot be imported; mlmjax runs the model types "
                   f"{known}")
