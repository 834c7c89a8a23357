"""SpanBERT's span boundary objective (SBO): spans from the predicted slots, the loss in the one
compiled step, nothing when off, and an export without the head."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from flax import nnx

from helpers import load_config, tiny_wordpiece
from mlmjax import masking
from mlmjax.convert import hf
from mlmjax.model.bert import BertForMaskedLM
from mlmjax.model.config import ModelConfig
from mlmjax.train import optim, partition
from mlmjax.train import state as state_lib
from mlmjax.train import step as step_lib

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)]


def test_spans_are_runs_of_adjacent_predictions():
  positions = jnp.array([[3, 4, 5, 9, 12, 13, 0, 0]])
  weights = jnp.array([[1, 1, 1, 1, 1, 1, 0, 0]], jnp.float32)
  left, right, offset, valid = step_lib.span_boundaries(positions, weights, seq_len=14)
  assert left[0, :6].tolist() == [2, 2, 2, 8, 11, 11]
  assert right[0, :4].tolist() == [6, 6, 6, 10]
  assert offset[0, :6].tolist() == [0, 1, 2, 0, 0, 1]
  # 12-13 ends the row (no token after it) and the last two slots are unused: no targets.
  assert valid[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]


def _setup(boundary: bool, grad_accum_steps: int = 1):
  config = load_config("quickstart")
  config.data.seq_len = 32
  config.masking = masking.preset("spanbert" if boundary else "roberta")
  config.masking.max_predictions = 8
  config.model.update(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                      max_position_embeddings=32)
  config.train.update(batch_size=4, steps=10, warmup_steps=1, grad_accum_steps=grad_accum_steps)
  tables = masking.VocabTables.from_vocab(VOCAB, frequency=np.ones(len(VOCAB), np.float32))
  ids = np.random.default_rng(0).integers(5, len(VOCAB), (4, 32)).astype(np.int32)
  ids[:, 0], ids[:, -1] = 2, 3
  return config, state_lib.build(config, tables, len(VOCAB), 0), {"input_ids": jnp.asarray(ids)}


def _steps(config, c, batch, n=2):
  with partition.mesh_context(c.mesh, config.mesh.axis_rules):
    state = c.init_state(jax.random.key(0))
    step = state_lib.jit_train_step(config, c)
    windows = []
    for _ in range(n):
      state, window = step(state, batch, jax.random.key(0), state_lib.empty_window(c))
      windows.append(step_lib.window_means(jax.device_get(window)))
  return state, windows


def test_the_spanbert_recipe_trains_the_boundary_head_in_the_step():
  config, c, batch = _setup(boundary=True)
  assert c.model_cfg.span_boundary_head
  with partition.mesh_context(c.mesh, config.mesh.axis_rules):
    before = jax.device_get(c.init_state(jax.random.key(0)).params["sbo"])
  state, windows = _steps(config, c, batch)
  assert all(np.isfinite(w["loss"]) and w["boundary_loss"] > 1.0 for w in windows)
  # Near log(V) for an untrained head: a loss over real targets, not over empty slots.
  assert windows[0]["boundary_loss"] == pytest.approx(np.log(len(VOCAB)), rel=0.25)
  after = jax.device_get(state.params["sbo"])
  moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before),
                                                     jax.tree.leaves(after))]
  assert all(moved)  # every SBO parameter gets a gradient


def test_accumulated_microbatches_give_the_same_boundary_loss():
  one = _steps(*_setup(boundary=True), n=1)[1][0]
  four = _steps(*_setup(boundary=True, grad_accum_steps=4), n=1)[1][0]
  assert four["boundary_loss"] == pytest.approx(one["boundary_loss"], rel=1e-5)
  assert four["loss"] == pytest.approx(one["loss"], rel=1e-5)


def test_off_the_step_has_no_head_and_no_boundary_work():
  config, c, batch = _setup(boundary=False)
  assert "sbo" not in c.abstract_state.params and not c.model_cfg.span_boundary_head
  with partition.mesh_context(c.mesh, config.mesh.axis_rules):
    text = state_lib.jit_train_step(config, c).lower(
        c.abstract_state, batch, jax.random.key(0), state_lib.empty_window(c)).as_text()
  assert "cummax" not in text and "cummin" not in text  # no span_boundaries
  assert "boundary_loss" not in _steps(config, c, batch, n=1)[1][0]


def test_export_leaves_the_head_out_and_import_initialises_it(tmp_path):
  cfg = ModelConfig(vocab_size=99, hidden_size=32, num_layers=2, num_heads=4,
                   intermediate_size=64, max_position_embeddings=40, span_boundary_head=True)
  with nnx.use_eager_sharding(False):
    model = BertForMaskedLM(cfg, rngs=nnx.Rngs(3))
  _, state = nnx.split(model)
  hf.export(state, cfg, tiny_wordpiece(), str(tmp_path), lowercase=True)
  tensors = hf.read_hf_tensors(str(tmp_path))
  assert not any("sbo" in k for k in tensors)
  transformers.BertForMaskedLM.from_pretrained(tmp_path)  # a plain BERT
  _, imported = hf.import_params(tensors, cfg)
  flat = hf.flatten_params(imported)
  original = hf.flatten_params(state)
  assert {k for k in flat if k.startswith("sbo/")} == {k for k in original if k.startswith("sbo/")}
  np.testing.assert_array_equal(flat["bert/embeddings/word_embeddings/embedding"][:99],
                                original["bert/embeddings/word_embeddings/embedding"][:99])
