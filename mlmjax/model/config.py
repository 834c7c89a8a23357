"""`ModelConfig`: the static hyperparameters of every encoder family, HF's names where they exist.

A family (`config.model.family`) is an architecture Hugging Face also has:
  bert        post-LN BERT (`BertForMaskedLM`): learned positions, token types
  roberta     BERT's layers with RoBERTa's position numbering (after the padding id) and
              one token type (`RobertaForMaskedLM`, `XLMRobertaForMaskedLM`)
  modernbert  pre-LN ModernBERT (`ModernBertForMaskedLM`): no biases, GeGLU, rotary positions,
              global and sliding-window layers, a final norm
The fields below the family's comment apply to that family only.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from mlmjax.model.dropout import IMPLEMENTATIONS as DROPOUT_IMPLEMENTATIONS

FAMILIES = ("bert", "roberta", "modernbert")
VOCAB_MULTIPLE = 128  # pad the vocabulary for the matmul units; padded logits are masked out
# Hugging Face activation names -> whether GELU uses the tanh approximation.
ACTIVATIONS = {"gelu": False, "gelu_new": True, "gelu_pytorch_tanh": True}
# Rematerialisation policies: what each layer's forward pass keeps for the backward pass.
# "full" keeps only the layer inputs; the "dots_*" policies also keep matmul outputs, trading
# memory for less recomputation.
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable":
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Static model hyperparameters (HF's names where they exist)."""
  vocab_size: int
  family: str = "bert"  # one of FAMILIES
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.0
  initializer_range: float = 0.02
  layer_norm_eps: float = 1e-12  # BERT's; RoBERTa's and ModernBERT's: 1e-5
  pad_token_id: int = 0
  dtype: str = "float32"
  attention: str = "auto"  # "xla" (boolean mask, any device), "cudnn" (GPU flash), "auto"
  hidden_act: str = "gelu"  # HF names: "gelu" (exact erf), "gelu_pytorch_tanh" (tanh approx.)
  dropout_impl: str = "hash"  # where dropout's bits come from: see mlmjax/model/dropout.py
  remat_policy: str = "none"  # a key of REMAT_POLICIES: what the backward pass may keep
  scan_layers: bool = False  # layers as a device loop: faster compile, slower step
  span_boundary_head: bool = False  # SpanBERT's SBO head (`SpanBoundaryHead`); not exported
  # modernbert:
  local_attention: int = 128  # window of the local layers: a token sees ±local_attention/2
  global_attn_every_n_layers: int = 3  # layer i is global when i % n == 0, else local
  global_rope_theta: float = 160_000.0  # rotary base of the global layers
  local_rope_theta: float = 10_000.0  # rotary base of the local layers

  def __post_init__(self):
    choices = {"family": FAMILIES, "remat_policy": tuple(REMAT_POLICIES),
               "hidden_act": tuple(ACTIVATIONS), "dropout_impl": DROPOUT_IMPLEMENTATIONS}
    for name, allowed in choices.items():
      if getattr(self, name) not in allowed:
        raise ValueError(f"config.model.{name} must be one of {sorted(allowed)}, "
                         f"got {getattr(self, name)!r}")
    if self.hidden_size % self.num_heads:
      raise ValueError(f"config.model.hidden_size={self.hidden_size} is not a multiple of "
                       f"num_heads={self.num_heads}")

  @property
  def padded_vocab_size(self) -> int:
    return -(-self.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE

  @property
  def compute_dtype(self) -> Any:
    return jnp.dtype(self.dtype)

  @property
  def position_offset(self) -> int:
    """Index of the first position's embedding: RoBERTa numbers positions after its padding
    id (fairseq's convention, kept by HF), so a row's first token takes row pad_token_id + 1."""
    return self.pad_token_id + 1 if self.family == "roberta" else 0

  @property
  def max_sequence_length(self) -> int:
    """The longest row the position embeddings (or ModernBERT's trained context) cover."""
    return self.max_position_embeddings - self.position_offset

  @classmethod
  def from_config(cls, model_config, vocab_size: int, pad_token_id: int = 0,
                  span_boundary_head: bool = False) -> "ModelConfig":
    """Builds from the `config.model` ConfigDict plus the tokenizer's vocabulary size (and
    whether the objective has SpanBERT's boundary term: `config.masking.boundary_objective`)."""
    fields = {f.name for f in dataclasses.fields(cls)} - {"span_boundary_head"}
    values = {k: v for k, v in model_config.items() if k in fields}
    unknown = set(model_config.keys()) - fields
    if unknown:
      raise ValueError(f"Unknown config.model keys {sorted(unknown)}; known: {sorted(fields)}")
    return cls(**values, vocab_size=vocab_size, pad_token_id=pad_token_id,
               span_boundary_head=span_boundary_head)
