"""Layers rolled (a device loop) or unrolled, and remat policies: the same function, sharded alike."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mlmjax import config as mlmjax_config
from mlmjax.convert import hf
from mlmjax.model.bert import BertForMaskedLM
from mlmjax.model.config import ModelConfig
from mlmjax.train import partition

CFG = ModelConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                 max_position_embeddings=32, hidden_dropout=0.1)
ROLLED = dataclasses.replace(CFG, scan_layers=True)
IDS = jnp.array([[2, 10, 11, 12, 3, 0], [2, 13, 14, 15, 16, 3]], jnp.int32)
POS = jnp.array([[1, 2], [3, 4]], jnp.int32)


def make_model(cfg, seed=0):
  with nnx.use_eager_sharding(False):
    return BertForMaskedLM(cfg, rngs=nnx.Rngs(seed))


def run(cfg, params, key=jax.random.key(3)):
  """Logits, loss and gradients (HF names) of one jitted step of `cfg` with dropout on."""
  graphdef, _ = nnx.split(make_model(cfg), nnx.Param)

  def loss(params):
    logits = nnx.merge(graphdef, params)(IDS, POS, dropout_key=key)
    return jnp.mean(jnp.tanh(logits[..., :CFG.vocab_size])), logits  # touches every parameter

  (value, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return logits, value, hf.unstack_layers(hf.flatten_params(grads))


@pytest.fixture(scope="module")
def reference():
  """The same weights, unrolled and rolled, no remat."""
  params = nnx.state(make_model(CFG), nnx.Param)
  return {"params": params, False: run(CFG, params), True: run(ROLLED, params)}


def assert_same(a, b, atol=1e-6):
  (logits_a, loss_a, grads_a), (logits_b, loss_b, grads_b) = a, b
  np.testing.assert_allclose(logits_a, logits_b, atol=1e-5)
  np.testing.assert_allclose(loss_a, loss_b, atol=atol)
  assert grads_a.keys() == grads_b.keys()
  for k in grads_a:
    np.testing.assert_allclose(grads_a[k], grads_b[k], atol=atol, err_msg=k)


def test_parameters_are_stacked_on_a_layers_axis():
  params = dict(nnx.to_flat_state(nnx.state(make_model(CFG), nnx.Param)))
  kernel = params[("bert", "encoder", "layers", "attention", "self", "query", "kernel")]
  assert kernel.shape == (2, 32, 32)
  assert kernel.get_metadata()["out_sharding"] == ("layers", "embed", "heads")
  assert not any("layer" in p for p in params)  # no per-layer copies next to the stack


def test_rolled_equals_unrolled(reference):
  # Dropout keys are folded from the layer index either way, so even the masks agree.
  assert_same(reference[True], reference[False])


def test_unrolled_layers_are_no_device_loop():
  graphdef, params = nnx.split(make_model(CFG), nnx.Param)
  for cfg, loops in ((CFG, 0), (ROLLED, 1)):
    graphdef, _ = nnx.split(make_model(cfg), nnx.Param)
    hlo = jax.jit(lambda p: nnx.merge(graphdef, p)(IDS, POS)).lower(params).as_text()
    assert hlo.count("stablehlo.while") == loops


# Every policy once, over both loops (they share `_remat`), to keep the compiles few.
@pytest.mark.parametrize("rolled,policies", [
    (True, ["full", "dots_with_no_batch_dims_saveable"]), (False, ["dots_saveable"])])
def test_remat_policies_leave_loss_and_grads_alone(reference, rolled, policies):
  for policy in policies:
    cfg = dataclasses.replace(CFG, scan_layers=rolled, remat_policy=policy)
    assert_same(run(cfg, reference["params"]), reference[rolled])


def test_unknown_remat_policy_is_named():
  with pytest.raises(ValueError, match="remat_policy"):
    ModelConfig(vocab_size=10, remat_policy="everything")


def test_plan_leaves_the_layers_axis_unsharded():
  rules = mlmjax_config.default_config().mesh.axis_rules
  for row in partition.sharding_table(CFG, (1, 2, 2), rules):
    if row["path"].startswith("bert/encoder/layers/"):
      assert row["shape"][0] == CFG.num_layers and row["logical"][0] == "layers"
      assert row["spec"][0] is None
  query = {r["path"]: r for r in partition.sharding_table(CFG, (1, 2, 2), rules)}[
      "bert/encoder/layers/attention/self/query/kernel"]
  assert tuple(query["spec"]) == (None, "fsdp", "tensor")  # the other axes as their rules say


def test_rolled_model_builds_sharded_on_a_mesh():
  config = mlmjax_config.default_config()
  mesh = partition.make_mesh((1, 1, 1), jax.devices()[:1])
  with partition.mesh_context(mesh, config.mesh.axis_rules):
    model = BertForMaskedLM(ROLLED, rngs=nnx.Rngs(0))
    logits = nnx.jit(lambda m: m(IDS, POS))(model)  # no dropout key: the evaluation path
  assert logits.shape == (2, 2, 128)
  assert model.bert.encoder.layers.intermediate.dense.kernel[...].shape == (2, 32, 64)
