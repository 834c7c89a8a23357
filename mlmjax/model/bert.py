"""BERT and RoBERTa: post-LN encoders with a masked-LM head, parameter-compatible with HF
`BertForMaskedLM` and `RobertaForMaskedLM` / `XLMRobertaForMaskedLM`.

Attribute names follow HF's BERT (`bert.encoder.layer.0.attention.self.query`, ...), so
`nnx.state(model)` flattens to HF's paths and conversion is a renaming plus kernel transposes
(`mlmjax/convert/hf.py`; RoBERTa's names are BERT's under `roberta.` and `lm_head.`). The two
families differ only in their position numbering (RoBERTa's starts after the padding id) and in
the defaults a config sets (one token type, LayerNorm epsilon 1e-5).

Exact (erf) GELU by default, learned absolute positions, token types. The encoder keeps one
`Layer` whose parameters are stacked on a leading 'layers' axis (`bert/encoder/layers/...`: few
jit arguments, so a step's dispatch costs little host time), run by `layers.run_layers`; the HF
converter indexes the stack into HF's per-layer names on export and stacks them on import.
Inside a layer the query, key and value kernels are stacked into one [D, 3, D] operand, so the
three projections are one matmul (the parameters keep HF's three names).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from mlmjax.model import layers
from mlmjax.model.config import ModelConfig
from mlmjax.model.dropout import dropout


class Embeddings(nnx.Module):
  """Word + position + token-type embeddings, then LayerNorm and dropout."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.word_embeddings = layers.embed(cfg, cfg.padded_vocab_size, ("vocab", "embed"), rngs)
    self.position_embeddings = layers.embed(cfg, cfg.max_position_embeddings, (None, "embed"),
                                            rngs)
    self.token_type_embeddings = layers.embed(cfg, cfg.type_vocab_size, (None, "embed"), rngs)
    self.LayerNorm = layers.layer_norm(cfg, rngs)

  def __call__(self, input_ids, token_type_ids, key):
    # In float32 up to the LayerNorm, as HF's mixed precision does: the word embedding's
    # gradient is then a float32 scatter-add (a bfloat16 one rounds the sums of frequent
    # tokens), positions are a slice and token types a select, whose gradients are plain sums
    # (a scatter into 2 rows would make every token of the batch contend for them).
    types = self.token_type_embeddings.embedding[...]
    x = (jnp.take(self.word_embeddings.embedding[...], input_ids, axis=0)
         + self._positions(input_ids)
         + sum(jnp.where((token_type_ids == t)[..., None], types[t], 0.0)
               for t in range(types.shape[0])))
    x = self.LayerNorm(x).astype(self.cfg.compute_dtype)
    return dropout(x, self.cfg.hidden_dropout, key, self.cfg.dropout_impl)

  def _positions(self, input_ids):
    cfg, table = self.cfg, self.position_embeddings.embedding
    offset, seq_len = cfg.position_offset, input_ids.shape[1]
    positions = table[offset:offset + seq_len][None]  # [1, S, D]
    if cfg.family != "roberta":
      return positions
    # RoBERTa gives padding the padding id's row (HF's create_position_ids_from_input_ids);
    # rows are right-padded, so real tokens keep the slice.
    pad = (input_ids == cfg.pad_token_id)[..., None]
    return jnp.where(pad, table[cfg.pad_token_id], positions)


class SelfAttention(nnx.Module):
  """Query/key/value projections and the attention kernel."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    d = cfg.hidden_size
    self.query = layers.dense(cfg, d, d, ("embed", "heads"), rngs)
    self.key = layers.dense(cfg, d, d, ("embed", "heads"), rngs)
    self.value = layers.dense(cfg, d, d, ("embed", "heads"), rngs)

  def __call__(self, x, lengths, key=None):
    """`key` enables dropout on the attention probabilities (`attention_dropout`)."""
    b, s, d = x.shape
    heads, dtype = self.cfg.num_heads, self.cfg.compute_dtype
    # One matmul for the three projections. Stacked on a new axis (not concatenated along the
    # output axis), so a 'heads'-sharded kernel stays sharded the same way: no resharding.
    kernel = jnp.stack([self.query.kernel[...], self.key.kernel[...], self.value.kernel[...]],
                       axis=1).astype(dtype)  # [D, 3, D]
    bias = jnp.stack([self.query.bias[...], self.key.bias[...], self.value.bias[...]]).astype(dtype)
    qkv = jnp.einsum("bsd,dte->bste", x.astype(dtype), kernel) + bias  # [B, S, 3, D]
    q, k, v = (qkv[:, :, i].reshape(b, s, heads, d // heads) for i in range(3))  # [B, S, N, H]
    return layers.attend(self.cfg, q, k, v, lengths, key).reshape(b, s, d)


class ProjectResidualNorm(nnx.Module):
  """Projection, dropout, residual and LayerNorm (post-LN): how both the attention block and
  the feed-forward block end (HF: BertSelfOutput and BertOutput)."""

  def __init__(self, cfg: ModelConfig, d_in: int, axes: tuple, rngs: nnx.Rngs):
    self.cfg = cfg
    self.dense = layers.dense(cfg, d_in, cfg.hidden_size, axes, rngs)
    self.LayerNorm = layers.layer_norm(cfg, rngs)

  def __call__(self, h, residual, key):
    h = dropout(self.dense(h), self.cfg.hidden_dropout, key, self.cfg.dropout_impl)
    return self.LayerNorm(h + residual).astype(self.cfg.compute_dtype)


class Attention(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.self = SelfAttention(cfg, rngs)
    self.output = ProjectResidualNorm(cfg, cfg.hidden_size, ("heads", "embed"), rngs)

  def __call__(self, x, lengths, key):
    return self.output(self.self(x, lengths, layers.probs_key(self.self.cfg, key)), x, key)


class Intermediate(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.dense = layers.dense(cfg, cfg.hidden_size, cfg.intermediate_size, ("embed", "mlp"), rngs)

  def __call__(self, x):
    return layers.gelu(self.cfg, self.dense(x))


class Layer(nnx.Module):
  """One post-LN transformer block."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.attention = Attention(cfg, rngs)
    self.intermediate = Intermediate(cfg, rngs)
    self.output = ProjectResidualNorm(cfg, cfg.intermediate_size, ("mlp", "embed"), rngs)

  def __call__(self, x, lengths, key):
    keys = layers.split_key(key)
    x = self.attention(x, lengths, keys[0])
    return self.output(self.intermediate(x), x, keys[1])


class Encoder(nnx.Module):
  """`num_layers` blocks, their parameters stacked (`layers.run_layers`)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.layers = layers.stacked_layers(Layer, cfg, rngs)

  def __call__(self, x, lengths, key):
    return layers.run_layers(self.cfg, self.layers, x, key,
                             lambda layer, x, k, _: layer(x, lengths, k))


class BertModel(nnx.Module):
  """The encoder body (HF `BertModel` / `RobertaModel` without the pooler)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.embeddings = Embeddings(cfg, rngs)
    self.encoder = Encoder(cfg, rngs)

  def __call__(self, input_ids, token_type_ids, lengths, key):
    keys = layers.split_key(key)
    x = self.embeddings(input_ids, token_type_ids, keys[0])
    return self.encoder(x, lengths, keys[1])


class PredictionTransform(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.dense = layers.dense(cfg, cfg.hidden_size, cfg.hidden_size, (None, "embed"), rngs)
    self.LayerNorm = layers.layer_norm(cfg, rngs)

  def __call__(self, x):
    return self.LayerNorm(layers.gelu(self.cfg, self.dense(x)))


class Predictions(nnx.Module):
  """Transform, then the decoder tied to the word embeddings, plus a separate output bias."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.transform = PredictionTransform(cfg, rngs)
    self.bias = nnx.Param(jnp.zeros((cfg.padded_vocab_size,)), out_sharding=("vocab",))


class MlmHead(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.predictions = Predictions(cfg, rngs)


class BertForMaskedLM(layers.MaskedLM):
  """HF `BertForMaskedLM` (or `RobertaForMaskedLM`): `bert` body plus `cls` head; with
  `span_boundary_head`, SpanBERT's `sbo` head too (training only)."""

  STACKED = "bert/encoder/layers/"

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.bert = BertModel(cfg, rngs)
    self.cls = MlmHead(cfg, rngs)
    self.sbo = layers.SpanBoundaryHead(cfg, rngs) if cfg.span_boundary_head else None

  def body(self, input_ids, token_type_ids, lengths, key) -> jax.Array:
    return self.bert(input_ids, token_type_ids, lengths, key)

  def transform(self, hidden: jax.Array) -> jax.Array:
    return self.cls.predictions.transform(hidden)

  def output_bias(self) -> jax.Array:
    return self.cls.predictions.bias[...]

  def word_embeddings(self) -> nnx.Embed:
    return self.bert.embeddings.word_embeddings
