"""BERT encoder with a masked-LM head in Flax NNX, parameter-compatible with HF `BertForMaskedLM`.

Attribute names follow Hugging Face exactly (`bert.encoder.layer.0.attention.self.query`, ...), so
`nnx.state(model)` flattens to the paths of the HF Flax layout and conversion to PyTorch is a
renaming plus kernel transposes (see `mlmjax/convert/hf.py`).

Post-LN BERT as HF defines it: exact (erf) GELU, LayerNorm epsilon 1e-12, learned absolute
positions, token types. Parameters are float32; `dtype` sets the compute dtype (bfloat16 on
accelerators). Dropout takes an explicit PRNG key (no hidden RNG state in the module), so the
train step stays a pure function of (params, batch, key).

The encoder keeps one `Layer` whose parameters are stacked on a leading 'layers' axis
(`bert/encoder/layers/...`, ~16 arrays instead of 16 per layer: the jitted step's arguments are
few, so its dispatch costs little host time) and runs it under `nnx.scan`, fully unrolled by
default (the fastest step: no loop on the device), or as a loop with `scan_layers` (one layer
compiled instead of `num_layers`: faster compiles, a slower step). The HF converter indexes the
stack into HF's per-layer names on export and stacks them on import.

Inside a layer the query, key and value kernels are stacked into one [D, 3, D] operand, so the
three projections are one matmul (the parameters keep HF's three names).

The MLM head gathers the `positions` to predict first, so the vocabulary matmul runs on
`P = max_predictions` tokens per row instead of all `S`; it runs in the compute dtype and the
logits are upcast to float32 for the loss (as autocast does), so its backward pass is two
compute-dtype matmuls too.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mlmjax.model.dropout import IMPLEMENTATIONS as DROPOUT_IMPLEMENTATIONS
from mlmjax.model.dropout import dropout

LAYER_NORM_EPS = 1e-12
VOCAB_MULTIPLE = 128  # pad the vocabulary for the matmul units; padded logits are masked out
# Logical name of the stacked-layer axis. No default rule maps it, so it stays unsharded: scan
# slices one layer per step, and splitting that axis would gather a whole layer each step.
LAYERS_AXIS = "layers"
ATTENTION_PROBS_STREAM = 1  # folded into a layer's attention dropout key for the probabilities

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
# Hugging Face `hidden_act` names -> whether GELU uses the tanh approximation.
ACTIVATIONS = {"gelu": False, "gelu_new": True, "gelu_pytorch_tanh": True}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Static model hyperparameters (HF `BertConfig` names where they exist)."""
  vocab_size: int
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.0
  initializer_range: float = 0.02
  pad_token_id: int = 0
  dtype: str = "float32"
  attention: str = "auto"  # "xla" (boolean mask, any device), "cudnn" (GPU flash), "auto"
  hidden_act: str = "gelu"  # HF names: "gelu" (exact erf), "gelu_pytorch_tanh" (tanh approx.)
  dropout_impl: str = "hash"  # where dropout's bits come from: see mlmjax/model/dropout.py
  remat_policy: str = "none"  # a key of REMAT_POLICIES: what the backward pass may keep
  scan_layers: bool = False  # layers as a device loop: faster compile, slower step
  span_boundary_head: bool = False  # SpanBERT's SBO head (`SpanBoundaryHead`); not exported

  def __post_init__(self):
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"config.model.remat_policy must be one of {sorted(REMAT_POLICIES)}, "
                       f"got {self.remat_policy!r}")
    if self.hidden_act not in ACTIVATIONS:
      raise ValueError(f"config.model.hidden_act must be one of {sorted(ACTIVATIONS)}, "
                       f"got {self.hidden_act!r}")
    if self.dropout_impl not in DROPOUT_IMPLEMENTATIONS:
      raise ValueError(f"config.model.dropout_impl must be one of {DROPOUT_IMPLEMENTATIONS}, "
                       f"got {self.dropout_impl!r}")

  @property
  def padded_vocab_size(self) -> int:
    return -(-self.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE

  @property
  def compute_dtype(self) -> Any:
    return jnp.dtype(self.dtype)

  @classmethod
  def from_config(cls, model_config, vocab_size: int, pad_token_id: int = 0,
                  span_boundary_head: bool = False) -> "BertConfig":
    """Builds from the `config.model` ConfigDict plus the tokenizer's vocabulary size (and
    whether the objective has SpanBERT's boundary term: `config.masking.boundary_objective`)."""
    fields = {f.name for f in dataclasses.fields(cls)} - {"span_boundary_head"}
    values = {k: v for k, v in model_config.items() if k in fields}
    unknown = set(model_config.keys()) - fields
    if unknown:
      raise ValueError(f"Unknown config.model keys {sorted(unknown)}; known: {sorted(fields)}")
    return cls(**values, vocab_size=vocab_size, pad_token_id=pad_token_id,
               span_boundary_head=span_boundary_head)


def _dense(cfg: BertConfig, d_in: int, d_out: int, axes: tuple, rngs: nnx.Rngs) -> nnx.Linear:
  init = jax.nn.initializers.normal(cfg.initializer_range)
  return nnx.Linear(
      d_in, d_out, dtype=cfg.compute_dtype, rngs=rngs,
      kernel_init=nnx.with_partitioning(init, axes),
      bias_init=nnx.with_partitioning(jax.nn.initializers.zeros, axes[-1:]))


def _layer_norm(cfg: BertConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
  # Statistics in float32 whatever the compute dtype: post-LN is sensitive to them.
  return nnx.LayerNorm(
      cfg.hidden_size, epsilon=LAYER_NORM_EPS, dtype=jnp.float32, rngs=rngs,
      scale_init=nnx.with_partitioning(jax.nn.initializers.ones, ("embed",)),
      bias_init=nnx.with_partitioning(jax.nn.initializers.zeros, ("embed",)))


def _embed(cfg: BertConfig, n: int, axes: tuple, rngs: nnx.Rngs) -> nnx.Embed:
  init = jax.nn.initializers.normal(cfg.initializer_range)
  return nnx.Embed(n, cfg.hidden_size, rngs=rngs,  # looked up in float32 (Embeddings)
                   embedding_init=nnx.with_partitioning(init, axes))


def gelu(cfg: BertConfig, x: jax.Array) -> jax.Array:
  return jax.nn.gelu(x, approximate=ACTIVATIONS[cfg.hidden_act])


class Embeddings(nnx.Module):
  """Word + position + token-type embeddings, then LayerNorm and dropout."""

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.word_embeddings = _embed(cfg, cfg.padded_vocab_size, ("vocab", "embed"), rngs)
    self.position_embeddings = _embed(cfg, cfg.max_position_embeddings, (None, "embed"), rngs)
    self.token_type_embeddings = _embed(cfg, cfg.type_vocab_size, (None, "embed"), rngs)
    self.LayerNorm = _layer_norm(cfg, rngs)

  def __call__(self, input_ids, token_type_ids, key):
    # In float32 up to the LayerNorm, as HF's mixed precision does: the word embedding's
    # gradient is then a float32 scatter-add (a bfloat16 one rounds the sums of frequent
    # tokens), positions are a slice and token types a select, whose gradients are plain sums
    # (a scatter into 2 rows would make every token of the batch contend for them).
    seq_len = input_ids.shape[1]
    types = self.token_type_embeddings.embedding[...]
    x = (jnp.take(self.word_embeddings.embedding[...], input_ids, axis=0)
         + self.position_embeddings.embedding[:seq_len][None]
         + sum(jnp.where((token_type_ids == t)[..., None], types[t], 0.0)
               for t in range(types.shape[0])))
    x = self.LayerNorm(x).astype(self.cfg.compute_dtype)
    return dropout(x, self.cfg.hidden_dropout, key, self.cfg.dropout_impl)


class SelfAttention(nnx.Module):
  """Query/key/value projections and the attention kernel."""

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    d = cfg.hidden_size
    self.query = _dense(cfg, d, d, ("embed", "heads"), rngs)
    self.key = _dense(cfg, d, d, ("embed", "heads"), rngs)
    self.value = _dense(cfg, d, d, ("embed", "heads"), rngs)

  def __call__(self, x, lengths, key=None):
    """`key` enables dropout on the attention probabilities (`attention_dropout`)."""
    b, s, d = x.shape
    heads, dtype = self.cfg.num_heads, self.cfg.compute_dtype
    rate = self.cfg.attention_dropout if key is not None else 0.0
    # One matmul for the three projections. Stacked on a new axis (not concatenated along the
    # output axis), so a 'heads'-sharded kernel stays sharded the same way: no resharding.
    kernel = jnp.stack([self.query.kernel[...], self.key.kernel[...], self.value.kernel[...]],
                       axis=1).astype(dtype)  # [D, 3, D]
    bias = jnp.stack([self.query.bias[...], self.key.bias[...], self.value.bias[...]]).astype(dtype)
    qkv = jnp.einsum("bsd,dte->bste", x.astype(dtype), kernel) + bias  # [B, S, 3, D]
    q, k, v = (qkv[:, :, i].reshape(b, s, heads, d // heads) for i in range(3))  # [B, S, N, H]
    if attention_kernel(self.cfg.attention, q.dtype) == "cudnn":
      if rate:
        raise ValueError(
            f"config.model.attention_dropout={rate} cannot run in cuDNN's fused attention: "
            "jax.nn.dot_product_attention takes no dropout. Set --config.model.attention=xla "
            "to train with it (slower on a GPU), or --config.model.attention_dropout=0.")
      # cuDNN flash attention takes padding as sequence lengths (a broadcast mask is refused).
      out = jax.nn.dot_product_attention(
          q, k, v, query_seq_lengths=lengths, key_value_seq_lengths=lengths,
          implementation="cudnn")
    else:
      mask = (jnp.arange(s)[None, :] < lengths[:, None])[:, None, None, :]  # [B, 1, 1, S]
      if rate:
        out = _attention_with_dropout(q, k, v, mask, rate, key, self.cfg.dropout_impl)
      else:
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")
    return out.reshape(b, s, d)


def _attention_with_dropout(q, k, v, mask, rate: float, key, impl: str) -> jax.Array:
  """Softmax attention [B, S, N, H] with dropout on the probabilities, as HF's BERT applies
  `attention_probs_dropout_prob` (the fused kernels have no such step: written out here)."""
  scale = 1.0 / jnp.sqrt(jnp.asarray(q.shape[-1], jnp.float32))
  logits = jnp.einsum("bqnh,bknh->bnqk", q, k).astype(jnp.float32) * scale
  probs = jax.nn.softmax(jnp.where(mask, logits, jnp.finfo(jnp.float32).min), axis=-1)
  probs = dropout(probs, rate, key, impl).astype(v.dtype)
  return jnp.einsum("bnqk,bknh->bqnh", probs, v)


def attention_kernel(choice: str, dtype) -> str:
  """"auto" picks cuDNN flash attention on a GPU in 16-bit compute, XLA everywhere else."""
  if choice not in ("auto", "xla", "cudnn"):
    raise ValueError(f"config.model.attention must be 'auto', 'xla' or 'cudnn', got {choice!r}")
  if choice == "auto":
    gpu = jax.default_backend() == "gpu"
    return "cudnn" if gpu and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) else "xla"
  return choice


class ProjectResidualNorm(nnx.Module):
  """Projection, dropout, residual and LayerNorm (post-LN): how both the attention block and
  the feed-forward block end (HF: BertSelfOutput and BertOutput)."""

  def __init__(self, cfg: BertConfig, d_in: int, axes: tuple, rngs: nnx.Rngs):
    self.cfg = cfg
    self.dense = _dense(cfg, d_in, cfg.hidden_size, axes, rngs)
    self.LayerNorm = _layer_norm(cfg, rngs)

  def __call__(self, h, residual, key):
    h = dropout(self.dense(h), self.cfg.hidden_dropout, key, self.cfg.dropout_impl)
    return self.LayerNorm(h + residual).astype(self.cfg.compute_dtype)


class Attention(nnx.Module):

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    self.self = SelfAttention(cfg, rngs)
    self.output = ProjectResidualNorm(cfg, cfg.hidden_size, ("heads", "embed"), rngs)

  def __call__(self, x, lengths, key):
    # The probabilities' dropout key is folded off the output's, so the output's dropout draws
    # the same bits with attention dropout on or off.
    probs_key = None if key is None or not self.self.cfg.attention_dropout else (
        jax.random.fold_in(key, ATTENTION_PROBS_STREAM))
    return self.output(self.self(x, lengths, probs_key), x, key)


class Intermediate(nnx.Module):

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.dense = _dense(cfg, cfg.hidden_size, cfg.intermediate_size, ("embed", "mlp"), rngs)

  def __call__(self, x):
    return gelu(self.cfg, self.dense(x))


class Layer(nnx.Module):
  """One post-LN transformer block."""

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    self.attention = Attention(cfg, rngs)
    self.intermediate = Intermediate(cfg, rngs)
    self.output = ProjectResidualNorm(cfg, cfg.intermediate_size, ("mlp", "embed"), rngs)

  def __call__(self, x, lengths, key):
    keys = (None, None) if key is None else tuple(jax.random.split(key))
    x = self.attention(x, lengths, keys[0])
    return self.output(self.intermediate(x), x, keys[1])


class Encoder(nnx.Module):
  """`num_layers` blocks, their parameters stacked, run under `nnx.scan` (unrolled by default)."""

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.layers = _stacked_layers(cfg, rngs)

  def __call__(self, x, lengths, key):
    # Unrolled, XLA sees straight-line code: no loop, and the recomputation barriers of
    # prevent_cse are needed as in any straight-line remat; a rolled loop needs neither.
    rolled = self.cfg.scan_layers
    apply = _remat(lambda layer, x, k: layer(x, lengths, k), self.cfg.remat_policy,
                   prevent_cse=not rolled)
    return _scan_layers(apply, self.layers, x, key, self.cfg.num_layers,
                        unroll=1 if rolled else True)


def _layer_key(key, i):
  # Folded from the layer index: rolled and unrolled layers draw the same dropout masks.
  return None if key is None else jax.random.fold_in(key, i)


def _remat(fn, policy: str, prevent_cse: bool):
  if policy == "none":
    return fn
  # A rolled scan already keeps XLA from merging the recomputation into the forward pass, so
  # the extra barriers of prevent_cse are only needed unrolled (jax.checkpoint docs).
  return nnx.remat(fn, policy=REMAT_POLICIES[policy], prevent_cse=prevent_cse)


def _stacked_layers(cfg: BertConfig, rngs: nnx.Rngs) -> Layer:
  """One `Layer` whose every parameter has a leading [num_layers] axis named 'layers'."""

  @nnx.split_rngs(splits=cfg.num_layers)
  @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: LAYERS_AXIS})
  def create(rngs):
    return Layer(cfg, rngs)

  return create(rngs)


def _scan_layers(apply, layers: Layer, x, key, num_layers: int, unroll):
  """Runs the stacked `layers` over `x`; the layer index feeds the dropout key."""

  @nnx.scan(in_axes=(0, nnx.Carry, 0), out_axes=nnx.Carry, unroll=unroll,
            transform_metadata={nnx.PARTITION_NAME: LAYERS_AXIS})
  def step(layer, x, i):
    return apply(layer, x, _layer_key(key, i))

  return step(layers, x, jnp.arange(num_layers))


class BertModel(nnx.Module):
  """The encoder body (HF `BertModel` without the pooler)."""

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    self.embeddings = Embeddings(cfg, rngs)
    self.encoder = Encoder(cfg, rngs)

  def __call__(self, input_ids, token_type_ids, lengths, key):
    keys = (None, None) if key is None else tuple(jax.random.split(key))
    x = self.embeddings(input_ids, token_type_ids, keys[0])
    return self.encoder(x, lengths, keys[1])


class PredictionTransform(nnx.Module):

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.dense = _dense(cfg, cfg.hidden_size, cfg.hidden_size, (None, "embed"), rngs)
    self.LayerNorm = _layer_norm(cfg, rngs)

  def __call__(self, x):
    return self.LayerNorm(gelu(self.cfg, self.dense(x)))


class Predictions(nnx.Module):
  """Transform, then the decoder tied to the word embeddings, plus a separate output bias."""

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    self.transform = PredictionTransform(cfg, rngs)
    self.bias = nnx.Param(jnp.zeros((cfg.padded_vocab_size,)), out_sharding=("vocab",))


class MlmHead(nnx.Module):

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    self.predictions = Predictions(cfg, rngs)


# Positions inside a span the span boundary objective embeds; a token further into its span
# (a span of more than this many tokens) is predicted by the MLM head only.
SPAN_BOUNDARY_POSITIONS = 32


class SpanBoundaryHead(nnx.Module):
  """SpanBERT's span boundary objective (Joshi et al., 2020, eq. 1-2): a masked token is also
  predicted from the encoder states of the two tokens around its span and a relative-position
  embedding, through two linear + GeLU + LayerNorm layers, then scored against the tied word
  embeddings (with a bias of its own). Hugging Face's BERT has no place for it: the export
  leaves it out."""

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    d = cfg.hidden_size
    self.position_embeddings = _embed(cfg, SPAN_BOUNDARY_POSITIONS, (None, "embed"), rngs)
    self.dense1 = _dense(cfg, 3 * d, d, (None, "embed"), rngs)
    self.LayerNorm1 = _layer_norm(cfg, rngs)
    self.dense2 = _dense(cfg, d, d, (None, "embed"), rngs)
    self.LayerNorm2 = _layer_norm(cfg, rngs)
    self.bias = nnx.Param(jnp.zeros((cfg.padded_vocab_size,)), out_sharding=("vocab",))

  def __call__(self, left: jax.Array, right: jax.Array, offset: jax.Array) -> jax.Array:
    """[B, P, D] states of the tokens before and after each target's span, [B, P] its place in
    the span (0-based) -> [B, P, D] representations to score against the vocabulary."""
    position = self.position_embeddings.embedding[...][offset].astype(left.dtype)
    h = jnp.concatenate([left, right, position], axis=-1)
    h = self.LayerNorm1(gelu(self.cfg, self.dense1(h))).astype(self.cfg.compute_dtype)
    return self.LayerNorm2(gelu(self.cfg, self.dense2(h)))


class BertForMaskedLM(nnx.Module):
  """HF `BertForMaskedLM`: `bert` body plus `cls` head, logits only at the requested positions;
  with `span_boundary_head`, SpanBERT's `sbo` head too (training only)."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.bert = BertModel(cfg, rngs)
    self.cls = MlmHead(cfg, rngs)
    self.sbo = SpanBoundaryHead(cfg, rngs) if cfg.span_boundary_head else None

  def __call__(self, input_ids: jax.Array, positions: jax.Array, *,
               token_type_ids: jax.Array | None = None,
               lengths: jax.Array | None = None,
               dropout_key: jax.Array | None = None) -> jax.Array:
    """MLM logits at `positions`.

    Args:
      input_ids: [B, S] int32, right-padded with `pad_token_id`.
      positions: [B, P] int32 positions to predict.
      token_type_ids: [B, S] int32, zeros when None.
      lengths: [B] int32 real tokens per row (padding only at the end); computed from
        `input_ids != pad_token_id` when None.
      dropout_key: PRNG key enabling dropout (training); None is deterministic.

    Returns:
      [B, P, padded_vocab_size] float32 logits; columns past `vocab_size` are -1e9.
    """
    hidden = self.encode(input_ids, token_type_ids=token_type_ids, lengths=lengths,
                         dropout_key=dropout_key)
    hidden = jnp.take_along_axis(hidden, positions[..., None], axis=1)  # [B, P, D]
    return self.logits(hidden)

  def encode(self, input_ids: jax.Array, *, token_type_ids: jax.Array | None = None,
             lengths: jax.Array | None = None,
             dropout_key: jax.Array | None = None) -> jax.Array:
    """[B, S, D] the encoder's last hidden states (arguments as `__call__`)."""
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    if lengths is None:
      lengths = real_lengths(input_ids, self.cfg.pad_token_id)
    return self.bert(input_ids, token_type_ids, lengths, dropout_key)

  def logits(self, hidden: jax.Array) -> jax.Array:
    """Head on gathered hidden states [B, P, D] -> [B, P, V_padded] float32."""
    head = self.cls.predictions
    return self._vocab_scores(head.transform(hidden), head.bias[...])

  def span_boundary_logits(self, hidden: jax.Array, left: jax.Array, right: jax.Array,
                           offset: jax.Array) -> jax.Array:
    """SBO logits [B, P, V_padded] float32 from the encoder's [B, S, D] states, each target's
    boundary positions `left`, `right` [B, P] and its `offset` in its span [B, P]."""
    at = lambda positions: jnp.take_along_axis(hidden, positions[..., None], axis=1)
    return self._vocab_scores(self.sbo(at(left), at(right), offset), self.sbo.bias[...])

  def _vocab_scores(self, h: jax.Array, bias: jax.Array) -> jax.Array:
    cfg = self.cfg
    table = self.bert.embeddings.word_embeddings.embedding[...].astype(cfg.compute_dtype)
    # Compute-dtype logits, upcast for the loss: the backward matmuls stay in the compute dtype.
    logits = jnp.einsum("bpd,vd->bpv", h.astype(cfg.compute_dtype),
                        table).astype(jnp.float32) + bias
    real = jnp.arange(cfg.padded_vocab_size) < cfg.vocab_size
    return jnp.where(real, logits, -1e9)


def hidden_states(graphdef: nnx.GraphDef, params: Any, input_ids: jax.Array) -> jax.Array:
  """[B, S, D] the encoder's last hidden states of the rows as they are: no dropout, and no
  gradient to the parameters or through the states.

  What the rest of the package reads of a model besides its predictions (contextual masking in
  the train step, the probes, show_masks), so all of them see the same states.
  """
  model = nnx.merge(graphdef, jax.lax.stop_gradient(params))
  return jax.lax.stop_gradient(model.encode(input_ids))


def real_lengths(input_ids: jax.Array, pad_token_id: int) -> jax.Array:
  """[B] number of tokens before the first padding (rows are right-padded)."""
  return jnp.sum(input_ids != pad_token_id, axis=-1).astype(jnp.int32)
