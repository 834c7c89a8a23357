"""The Flax BERT: HF parameter layout, shapes, padded vocabulary, dropout keys, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mlmjax.model import layers
from mlmjax.model.bert import BertForMaskedLM
from mlmjax.model.config import ModelConfig

CFG = ModelConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                 max_position_embeddings=32)


def make_model(cfg=CFG, seed=0):
  with nnx.use_eager_sharding(False):
    return BertForMaskedLM(cfg, rngs=nnx.Rngs(seed))


def test_parameter_paths_are_hf_names():
  paths = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(make_model()))}
  layer = "bert/encoder/layers/"  # stacked on a leading [num_layers] axis
  expected = {
      "bert/embeddings/word_embeddings/embedding", "bert/embeddings/LayerNorm/scale",
      layer + "attention/self/query/kernel", layer + "attention/output/dense/kernel",
      layer + "attention/output/LayerNorm/scale", layer + "intermediate/dense/kernel",
      layer + "output/dense/kernel", layer + "output/LayerNorm/bias",
      "cls/predictions/transform/dense/kernel", "cls/predictions/bias"}
  assert expected <= paths
  assert len(paths) == 5 + 16 + 5  # embeddings, stacked layers, head (tied decoder)


def test_logits_shape_and_padded_vocab_masked():
  model = make_model()
  ids = jnp.array([[2, 10, 11, 3, 0, 0], [2, 12, 13, 14, 15, 3]], jnp.int32)
  logits = model(ids, jnp.array([[1, 2], [3, 4]], jnp.int32))
  assert logits.shape == (2, 2, 128)  # vocabulary padded to a multiple of 128
  assert logits.dtype == jnp.float32
  assert bool(jnp.all(logits[..., CFG.vocab_size:] <= -1e8))
  assert bool(jnp.all(jnp.isfinite(logits[..., :CFG.vocab_size])))


def test_padding_does_not_change_real_positions():
  model = make_model()
  short = jnp.array([[2, 10, 11, 3]], jnp.int32)
  padded = jnp.array([[2, 10, 11, 3, 0, 0, 0]], jnp.int32)
  pos = jnp.array([[1, 2]], jnp.int32)
  np.testing.assert_allclose(model(short, pos), model(padded, pos), atol=1e-5)


def test_dropout_follows_the_key():
  model = make_model()
  ids = jnp.array([[2, 10, 11, 12, 13, 3]], jnp.int32)
  pos = jnp.array([[1, 2, 3]], jnp.int32)
  a = model(ids, pos, dropout_key=jax.random.key(1))
  b = model(ids, pos, dropout_key=jax.random.key(1))
  c = model(ids, pos, dropout_key=jax.random.key(2))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  np.testing.assert_array_equal(model(ids, pos), model(ids, pos))  # no key: deterministic


def test_hidden_states_are_the_encoders_without_dropout_or_gradient():
  model = make_model()
  graphdef, params = nnx.split(model)
  ids = jnp.array([[2, 10, 11, 12, 3, 0]], jnp.int32)
  states = layers.hidden_states(graphdef, params, ids)
  np.testing.assert_array_equal(states, model.encode(ids))
  grads = jax.grad(lambda p: layers.hidden_states(graphdef, p, ids).sum())(params)
  assert all(not np.any(g) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("remat_policy", ["none", "full"])
def test_bfloat16_compute_keeps_float32_params(remat_policy):
  cfg = ModelConfig(**{**CFG.__dict__, "dtype": "bfloat16", "remat_policy": remat_policy})
  model = make_model(cfg)
  assert all(v[...].dtype == jnp.float32 for _, v in nnx.to_flat_state(nnx.state(model)))
  ids = jnp.array([[2, 10, 11, 3]], jnp.int32)
  out32 = make_model()(ids, jnp.array([[1, 2]], jnp.int32))
  out16 = model(ids, jnp.array([[1, 2]], jnp.int32))
  assert out16.dtype == jnp.float32
  np.testing.assert_allclose(out16[..., :100], out32[..., :100], atol=0.1)  # same init, bf16 noise


def test_unknown_model_key_is_named():
  import ml_collections
  with pytest.raises(ValueError, match="hiden_size"):
    ModelConfig.from_config(ml_collections.ConfigDict({"hiden_size": 3}), vocab_size=10)


def test_attention_dropout_is_applied_on_the_xla_path_and_refused_on_cudnn():
  """attention_dropout drops attention probabilities in training (HF's
  attention_probs_dropout_prob), leaves evaluation and the other dropouts alone, and is refused
  where the kernel cannot apply it (cuDNN's fused attention) instead of being ignored."""
  import dataclasses
  ids = jnp.array([[2, 10, 11, 12, 13, 3, 0, 0]] * 2, jnp.int32)
  positions = jnp.array([[1, 2, 3]] * 2, jnp.int32)
  plain = dataclasses.replace(CFG, hidden_dropout=0.0)
  dropping = dataclasses.replace(plain, attention_dropout=0.3)
  a, b = make_model(plain), make_model(dropping)  # same seed: same parameters
  key = jax.random.key(1)
  np.testing.assert_allclose(a(ids, positions), b(ids, positions), atol=1e-5)  # evaluation
  np.testing.assert_allclose(a(ids, positions, dropout_key=key), a(ids, positions), atol=1e-5)
  trained = b.encode(ids, dropout_key=key)  # hidden states: O(1) after the LayerNorms
  assert float(jnp.abs(trained - b.encode(ids)).max()) > 1e-3  # 0.014 here; noise is 1e-6
  np.testing.assert_array_equal(trained, b.encode(ids, dropout_key=key))  # by the key
  cudnn = make_model(dataclasses.replace(dropping, attention="cudnn"))
  with pytest.raises(ValueError, match="attention_dropout=0.3 cannot run in cuDNN"):
    cudnn(ids, positions, dropout_key=key)  # refused before any kernel runs
