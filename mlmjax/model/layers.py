"""What every encoder family is built from: parameter factories, the attention kernel, the
stacked-layer scan, and the masked-LM base class with the tied vocabulary scores.

Parameters are float32 with logical axis names (`batch, length, embed, mlp, heads, kv, vocab,
layers`) that `train/partition.py` maps onto the mesh; `cfg.dtype` is the compute dtype.
Dropout takes an explicit key (no hidden RNG state), so a step is a pure function.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from mlmjax.model.config import ACTIVATIONS, REMAT_POLICIES, ModelConfig
from mlmjax.model.dropout import dropout

# Logical name of the stacked-layer axis. No default rule maps it, so it stays unsharded: scan
# slices one layer per step, and splitting that axis would gather a whole layer each step.
LAYERS_AXIS = "layers"
ATTENTION_PROBS_STREAM = 1  # folded into a layer's attention dropout key for the probabilities


def dense(cfg: ModelConfig, d_in: int, d_out: int, axes: tuple, rngs: nnx.Rngs,
          use_bias: bool = True) -> nnx.Linear:
  init = jax.nn.initializers.normal(cfg.initializer_range)
  return nnx.Linear(
      d_in, d_out, dtype=cfg.compute_dtype, rngs=rngs, use_bias=use_bias,
      kernel_init=nnx.with_partitioning(init, axes),
      bias_init=nnx.with_partitioning(jax.nn.initializers.zeros, axes[-1:]))


def layer_norm(cfg: ModelConfig, rngs: nnx.Rngs, use_bias: bool = True) -> nnx.LayerNorm:
  # Statistics in float32 whatever the compute dtype: post-LN is sensitive to them.
  return nnx.LayerNorm(
      cfg.hidden_size, epsilon=cfg.layer_norm_eps, dtype=jnp.float32, rngs=rngs,
      use_bias=use_bias,
      scale_init=nnx.with_partitioning(jax.nn.initializers.ones, ("embed",)),
      bias_init=nnx.with_partitioning(jax.nn.initializers.zeros, ("embed",)))


def embed(cfg: ModelConfig, n: int, axes: tuple, rngs: nnx.Rngs) -> nnx.Embed:
  init = jax.nn.initializers.normal(cfg.initializer_range)
  return nnx.Embed(n, cfg.hidden_size, rngs=rngs,  # looked up in float32 (the embeddings)
                   embedding_init=nnx.with_partitioning(init, axes))


def gelu(cfg: ModelConfig, x: jax.Array) -> jax.Array:
  return jax.nn.gelu(x, approximate=ACTIVATIONS[cfg.hidden_act])


def attention_kernel(choice: str, dtype) -> str:
  """"auto" picks cuDNN flash attention on a GPU in 16-bit compute, XLA everywhere else."""
  if choice not in ("auto", "xla", "cudnn"):
    raise ValueError(f"config.model.attention must be 'auto', 'xla' or 'cudnn', got {choice!r}")
  if choice == "auto":
    gpu = jax.default_backend() == "gpu"
    return "cudnn" if gpu and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) else "xla"
  return choice


def attend(cfg: ModelConfig, q, k, v, lengths, key=None, window: int | None = None):
  """Softmax attention over [B, S, N, H] `q, k, v` of right-padded rows of `lengths` [B].

  `window`: a token sees only those within `window` positions on either side (ModernBERT's
  local layers). `key` enables dropout on the probabilities (`cfg.attention_dropout`).
  cuDNN's fused kernel takes the padding as sequence lengths (the unpadded attention); its
  sliding window is one-sided (causal) only, so a two-sided window goes in as a [1, 1, S, S]
  mask, which the fused kernel applies as a bias. XLA builds one boolean mask of both.
  """
  rate = cfg.attention_dropout if key is not None else 0.0
  s = q.shape[1]
  near = None
  if window is not None:
    near = (jnp.abs(jnp.arange(s)[:, None] - jnp.arange(s)[None, :]) <= window)[None, None]
  if attention_kernel(cfg.attention, q.dtype) == "cudnn":
    if rate:
      raise ValueError(
          f"config.model.attention_dropout={rate} cannot run in cuDNN's fused attention: "
          "jax.nn.dot_product_attention takes no dropout. Set --config.model.attention=xla "
          "to train with it (slower on a GPU), or --config.model.attention_dropout=0.")
    return jax.nn.dot_product_attention(
        q, k, v, mask=near, query_seq_lengths=lengths, key_value_seq_lengths=lengths,
        implementation="cudnn")
  mask = (jnp.arange(s)[None, :] < lengths[:, None])[:, None, None, :]  # [B, 1, 1, S]
  if near is not None:
    mask = mask & near  # [B, 1, S, S]
  if rate:
    return _attention_with_dropout(q, k, v, mask, rate, key, cfg.dropout_impl)
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")


def _attention_with_dropout(q, k, v, mask, rate: float, key, impl: str) -> jax.Array:
  """Softmax attention [B, S, N, H] with dropout on the probabilities, as HF applies
  `attention_probs_dropout_prob` (the fused kernels have no such step: written out here)."""
  scale = 1.0 / jnp.sqrt(jnp.asarray(q.shape[-1], jnp.float32))
  logits = jnp.einsum("bqnh,bknh->bnqk", q, k).astype(jnp.float32) * scale
  probs = jax.nn.softmax(jnp.where(mask, logits, jnp.finfo(jnp.float32).min), axis=-1)
  probs = dropout(probs, rate, key, impl).astype(v.dtype)
  return jnp.einsum("bnqk,bknh->bqnh", probs, v)


def probs_key(cfg: ModelConfig, key):
  """The attention probabilities' dropout key, folded off the block's own, so the block's
  output dropout draws the same bits with attention dropout on or off."""
  if key is None or not cfg.attention_dropout:
    return None
  return jax.random.fold_in(key, ATTENTION_PROBS_STREAM)


def split_key(key, n: int = 2) -> tuple:
  return (None,) * n if key is None else tuple(jax.random.split(key, n))


def stacked_layers(make_layer, cfg: ModelConfig, rngs: nnx.Rngs):
  """One layer module whose every parameter has a leading [num_layers] axis named 'layers'."""

  @nnx.split_rngs(splits=cfg.num_layers)
  @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: LAYERS_AXIS})
  def create(rngs):
    return make_layer(cfg, rngs)

  return create(rngs)


def _rematerialised(cfg: ModelConfig, apply, prevent_cse: bool, static_argnums=()):
  """`apply` under `cfg.remat_policy` (what its backward pass may keep), or as it is."""
  if cfg.remat_policy == "none":
    return apply
  return nnx.remat(apply, policy=REMAT_POLICIES[cfg.remat_policy], prevent_cse=prevent_cse,
                   static_argnums=static_argnums)


def run_layers(cfg: ModelConfig, layers, x, key, apply):
  """`apply(layer, x, layer_key, index)` through the stacked `layers` under `nnx.scan`:
  unrolled by default (straight-line code: the fastest step), a device loop with
  `cfg.scan_layers` (one layer compiled). The index feeds the dropout key and the layer kind."""
  rolled = cfg.scan_layers
  # A rolled scan already keeps XLA from merging the recomputation into the forward pass, so
  # the extra barriers of prevent_cse are only needed unrolled (jax.checkpoint docs).
  apply = _rematerialised(cfg, apply, prevent_cse=not rolled)

  @nnx.scan(in_axes=(0, nnx.Carry, 0), out_axes=nnx.Carry, unroll=1 if rolled else True,
            transform_metadata={nnx.PARTITION_NAME: LAYERS_AXIS})
  def step(layer, x, i):
    # Folded from the layer index: rolled and unrolled layers draw the same dropout masks.
    layer_key = None if key is None else jax.random.fold_in(key, i)
    return apply(layer, x, layer_key, i)

  return step(layers, x, jnp.arange(cfg.num_layers))


def run_distinct_layers(cfg: ModelConfig, layers, x, key, apply):
  """As `run_layers`, for layers that differ by their index (ModernBERT's global and local
  attention): unrolled, each layer is sliced out of the stack and runs with its index as a
  Python int, so its kind is static and XLA sees no conditional; rolled (`cfg.scan_layers`),
  the index is traced and the layer branches with `jax.lax.cond`."""
  if cfg.scan_layers:
    return run_layers(cfg, layers, x, key, apply)
  apply = _rematerialised(cfg, apply, prevent_cse=True, static_argnums=(3,))  # the int index
  graphdef, state = nnx.split(layers)
  for i in range(cfg.num_layers):
    layer = nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state))
    layer_key = None if key is None else jax.random.fold_in(key, i)
    x = apply(layer, x, layer_key, i)
  return x


def real_lengths(input_ids: jax.Array, pad_token_id: int) -> jax.Array:
  """[B] number of tokens before the first padding (rows are right-padded)."""
  return jnp.sum(input_ids != pad_token_id, axis=-1).astype(jnp.int32)


# Positions inside a span the span boundary objective embeds; a token further into its span
# (a span of more than this many tokens) is predicted by the MLM head only.
SPAN_BOUNDARY_POSITIONS = 32


class SpanBoundaryHead(nnx.Module):
  """SpanBERT's span boundary objective (Joshi et al., 2020, eq. 1-2): a masked token is also
  predicted from the encoder states of the two tokens around its span and a relative-position
  embedding, through two linear + GeLU + LayerNorm layers, then scored against the tied word
  embeddings (with a bias of its own). Hugging Face's models have no place for it: the export
  leaves it out."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    d = cfg.hidden_size
    self.position_embeddings = embed(cfg, SPAN_BOUNDARY_POSITIONS, (None, "embed"), rngs)
    self.dense1 = dense(cfg, 3 * d, d, (None, "embed"), rngs)
    self.LayerNorm1 = layer_norm(cfg, rngs)
    self.dense2 = dense(cfg, d, d, (None, "embed"), rngs)
    self.LayerNorm2 = layer_norm(cfg, rngs)
    self.bias = nnx.Param(jnp.zeros((cfg.padded_vocab_size,)), out_sharding=("vocab",))

  def __call__(self, left: jax.Array, right: jax.Array, offset: jax.Array) -> jax.Array:
    """[B, P, D] states of the tokens before and after each target's span, [B, P] its place in
    the span (0-based) -> [B, P, D] representations to score against the vocabulary."""
    position = self.position_embeddings.embedding[...][offset].astype(left.dtype)
    h = jnp.concatenate([left, right, position], axis=-1)
    h = self.LayerNorm1(gelu(self.cfg, self.dense1(h))).astype(self.cfg.compute_dtype)
    return self.LayerNorm2(gelu(self.cfg, self.dense2(h)))


class MaskedLM(nnx.Module):
  """What a family's masked LM shares: the call (logits only at the `positions` to predict, so
  the vocabulary matmul runs on P tokens per row, not S), the tied vocabulary scores, and
  SpanBERT's boundary head. A family defines `body` (input ids -> [B, S, D] states),
  `transform` (the head before the vocabulary), `output_bias` and `word_embeddings`."""

  cfg: ModelConfig
  STACKED: str  # the path of the stacked layers' parameters, e.g. "bert/encoder/layers/"

  def __call__(self, input_ids: jax.Array, positions: jax.Array, *,
               token_type_ids: jax.Array | None = None,
               lengths: jax.Array | None = None,
               dropout_key: jax.Array | None = None) -> jax.Array:
    """MLM logits at `positions`.

    Args:
      input_ids: [B, S] int32, right-padded with `pad_token_id`.
      positions: [B, P] int32 positions to predict.
      token_type_ids: [B, S] int32, zeros when None (BERT and RoBERTa only).
      lengths: [B] int32 real tokens per row (padding only at the end); computed from
        `input_ids != pad_token_id` when None.
      dropout_key: PRNG key enabling dropout (training); None is deterministic.

    Returns:
      [B, P, padded_vocab_size] float32 logits; columns past `vocab_size` are -1e9.
    """
    hidden = self.encode(input_ids, token_type_ids=token_type_ids, lengths=lengths,
                         dropout_key=dropout_key)
    return self.logits(jnp.take_along_axis(hidden, positions[..., None], axis=1))

  def encode(self, input_ids: jax.Array, *, token_type_ids: jax.Array | None = None,
             lengths: jax.Array | None = None,
             dropout_key: jax.Array | None = None) -> jax.Array:
    """[B, S, D] the encoder's last hidden states (arguments as `__call__`)."""
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    if lengths is None:
      lengths = real_lengths(input_ids, self.cfg.pad_token_id)
    return self.body(input_ids, token_type_ids, lengths, dropout_key)

  def logits(self, hidden: jax.Array) -> jax.Array:
    """Head on gathered hidden states [B, P, D] -> [B, P, V_padded] float32."""
    return self._vocab_scores(self.transform(hidden), self.output_bias())

  def span_boundary_logits(self, hidden: jax.Array, left: jax.Array, right: jax.Array,
                           offset: jax.Array) -> jax.Array:
    """SBO logits [B, P, V_padded] float32 from the encoder's [B, S, D] states, each target's
    boundary positions `left`, `right` [B, P] and its `offset` in its span [B, P]."""
    at = lambda positions: jnp.take_along_axis(hidden, positions[..., None], axis=1)
    return self._vocab_scores(self.sbo(at(left), at(right), offset), self.sbo.bias[...])

  def _vocab_scores(self, h: jax.Array, bias: jax.Array) -> jax.Array:
    cfg = self.cfg
    table = self.word_embeddings().embedding[...].astype(cfg.compute_dtype)
    # Compute-dtype logits, upcast for the loss: the backward matmuls stay in the compute dtype
    # (as autocast does).
    logits = jnp.einsum("bpd,vd->bpv", h.astype(cfg.compute_dtype),
                        table).astype(jnp.float32) + bias
    real = jnp.arange(cfg.padded_vocab_size) < cfg.vocab_size
    return jnp.where(real, logits, -1e9)


def hidden_states(graphdef: nnx.GraphDef, params, input_ids: jax.Array) -> jax.Array:
  """[B, S, D] the encoder's last hidden states of the rows as they are: no dropout, and no
  gradient to the parameters or through the states.

  What the rest of the package reads of a model besides its predictions (contextual masking in
  the train step, the probes, show_masks), so all of them see the same states.
  """
  model = nnx.merge(graphdef, jax.lax.stop_gradient(params))
  return jax.lax.stop_gradient(model.encode(input_ids))
