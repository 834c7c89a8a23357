"""ModernBERT (Warner et al., 2024): a pre-LN encoder with a masked-LM head, parameter-compatible
with HF `ModernBertForMaskedLM`.

What differs from BERT: LayerNorms without bias before each block (none before the first
layer's attention: the embeddings' norm precedes it) and after the last; no biases in the
linear layers; a GeGLU feed-forward (`Wi` gives the input and its gate); rotary positions
instead of a position table, with one base for the global layers and another for the local
ones; every `global_attn_every_n_layers`-th layer attends globally, the others within a sliding
window of `local_attention` tokens (±half on each side). HF runs "unpadded" attention; here the
cuDNN kernel takes the rows' lengths instead, which skips the padding as well.

The layers are stacked like BERT's; a layer's kind follows its index
(`layers.run_distinct_layers`): unrolled (the default) each layer knows its kind statically, so
the program has no conditional (on a GPU one would read its predicate back to the host);
with `scan_layers` the device loop picks the kernel with `jax.lax.cond`.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from mlmjax.model import layers
from mlmjax.model.config import ModelConfig
from mlmjax.model.dropout import dropout


def rotary_tables(cfg: ModelConfig, seq_len: int, theta: float) -> tuple[jax.Array, jax.Array]:
  """cos, sin [S, H] of the rotary embedding with base `theta` (HF's default rope)."""
  head = cfg.hidden_size // cfg.num_heads
  inv_freq = 1.0 / theta ** (jnp.arange(0, head, 2, dtype=jnp.float32) / head)
  angles = jnp.arange(seq_len, dtype=jnp.float32)[:, None] * inv_freq[None]
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def rotate(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """[B, S, N, H] rotated by position (in float32, as HF does), back in x's dtype."""
  x32 = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated_half = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  return (x32 * cos[:, None] + rotated_half * sin[:, None]).astype(x.dtype)


class Embeddings(nnx.Module):
  """Token embeddings, LayerNorm (no bias), dropout: no positions (they are rotary)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.tok_embeddings = layers.embed(cfg, cfg.padded_vocab_size, ("vocab", "embed"), rngs)
    self.norm = layers.layer_norm(cfg, rngs, use_bias=False)

  def __call__(self, input_ids, key):
    x = jnp.take(self.tok_embeddings.embedding[...], input_ids, axis=0)
    x = self.norm(x).astype(self.cfg.compute_dtype)
    return dropout(x, self.cfg.hidden_dropout, key, self.cfg.dropout_impl)


class Attention(nnx.Module):
  """Fused query/key/value projection, rotary positions, global or windowed attention."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    d = cfg.hidden_size
    self.Wqkv = layers.dense(cfg, d, 3 * d, ("embed", "heads"), rngs, use_bias=False)
    self.Wo = layers.dense(cfg, d, d, ("heads", "embed"), rngs, use_bias=False)

  def __call__(self, x, lengths, rotary, is_global, key):
    cfg = self.cfg
    b, s, d = x.shape
    qkv = self.Wqkv(x).reshape(b, s, 3, cfg.num_heads, d // cfg.num_heads)
    cos, sin = rotary
    q, k, v = rotate(qkv[:, :, 0], cos, sin), rotate(qkv[:, :, 1], cos, sin), qkv[:, :, 2]
    probs_key = layers.probs_key(cfg, key)
    attend = lambda window: layers.attend(cfg, q, k, v, lengths, probs_key, window)
    window = cfg.local_attention // 2
    if isinstance(is_global, bool):  # unrolled: the layer's kind is known
      out = attend(None if is_global else window)
    else:
      out = jax.lax.cond(is_global, lambda: attend(None), lambda: attend(window))
    # HF applies attention_dropout to the probabilities and again after the output projection.
    return dropout(self.Wo(out.reshape(b, s, d)), cfg.attention_dropout, key, cfg.dropout_impl)


class Mlp(nnx.Module):
  """GeGLU: Wi gives [input | gate]; act(input) * gate, dropout, Wo."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.Wi = layers.dense(cfg, cfg.hidden_size, 2 * cfg.intermediate_size, ("embed", "mlp"),
                           rngs, use_bias=False)
    self.Wo = layers.dense(cfg, cfg.intermediate_size, cfg.hidden_size, ("mlp", "embed"), rngs,
                           use_bias=False)

  def __call__(self, x, key):
    h, gate = jnp.split(self.Wi(x), 2, axis=-1)
    h = dropout(layers.gelu(self.cfg, h) * gate, self.cfg.hidden_dropout, key,
                self.cfg.dropout_impl)
    return self.Wo(h)


class Layer(nnx.Module):
  """One pre-LN block: x + attn(attn_norm(x)), then x + mlp(mlp_norm(x))."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.attn_norm = layers.layer_norm(cfg, rngs, use_bias=False)  # unused by layer 0
    self.attn = Attention(cfg, rngs)
    self.mlp_norm = layers.layer_norm(cfg, rngs, use_bias=False)
    self.mlp = Mlp(cfg, rngs)

  def __call__(self, x, lengths, rotary, index, key):
    cfg, dtype = self.cfg, self.cfg.compute_dtype
    keys = layers.split_key(key)
    is_global = index % cfg.global_attn_every_n_layers == 0  # a bool, or traced when rolled
    if isinstance(index, int):
      rotary = rotary[0] if is_global else rotary[1]
      # Layer 0 has no attention norm (HF: nn.Identity): its input is the embeddings' norm.
      normed = x if index == 0 else self.attn_norm(x).astype(dtype)
    else:
      rotary = jax.tree.map(lambda g, l: jnp.where(is_global, g, l), *rotary)
      normed = jnp.where(index == 0, x, self.attn_norm(x).astype(dtype))
    x = x + self.attn(normed, lengths, rotary, is_global, keys[0])
    return x + self.mlp(self.mlp_norm(x).astype(dtype), keys[1])


class ModernBertModel(nnx.Module):
  """Embeddings, the stacked layers, the final norm."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embeddings = Embeddings(cfg, rngs)
    self.layers = layers.stacked_layers(Layer, cfg, rngs)
    self.final_norm = layers.layer_norm(cfg, rngs, use_bias=False)

  def __call__(self, input_ids, lengths, key):
    cfg = self.cfg
    keys = layers.split_key(key)
    s = input_ids.shape[1]
    rotary = (rotary_tables(cfg, s, cfg.global_rope_theta),
              rotary_tables(cfg, s, cfg.local_rope_theta))
    x = self.embeddings(input_ids, keys[0])
    x = layers.run_distinct_layers(cfg, self.layers, x, keys[1],
                                   lambda layer, x, k, i: layer(x, lengths, rotary, i, k))
    return self.final_norm(x).astype(cfg.compute_dtype)


class PredictionHead(nnx.Module):
  """dense (no bias), activation, norm: the head before the tied decoder."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.dense = layers.dense(cfg, cfg.hidden_size, cfg.hidden_size, (None, "embed"), rngs,
                              use_bias=False)
    self.norm = layers.layer_norm(cfg, rngs, use_bias=False)

  def __call__(self, x):
    return self.norm(layers.gelu(self.cfg, self.dense(x)))


class Decoder(nnx.Module):
  """The decoder's bias (its weight is the tied token embedding)."""

  def __init__(self, cfg: ModelConfig):
    self.bias = nnx.Param(jnp.zeros((cfg.padded_vocab_size,)), out_sharding=("vocab",))


class ModernBertForMaskedLM(layers.MaskedLM):
  """HF `ModernBertForMaskedLM`: `model` body, `head`, tied `decoder`; with
  `span_boundary_head`, SpanBERT's `sbo` head too (training only)."""

  STACKED = "model/layers/"

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.model = ModernBertModel(cfg, rngs)
    self.head = PredictionHead(cfg, rngs)
    self.decoder = Decoder(cfg)
    self.sbo = layers.SpanBoundaryHead(cfg, rngs) if cfg.span_boundary_head else None

  def body(self, input_ids, token_type_ids, lengths, key) -> jax.Array:
    del token_type_ids  # ModernBERT has no token types
    return self.model(input_ids, lengths, key)

  def transform(self, hidden: jax.Array) -> jax.Array:
    return self.head(hidden)

  def output_bias(self) -> jax.Array:
    return self.decoder.bias[...]

  def word_embeddings(self) -> nnx.Embed:
    return self.model.embeddings.tok_embeddings
