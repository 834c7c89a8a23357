"""Runs the same 3 train steps on several meshes of 8 simulated CPU devices (a subprocess).

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python sharded_run.py OUT.npz

Writes, per mesh, the 3 losses and the final parameters, for test_partition.py to compare.
The (2, 2, 2) run computes its initial state on the host (`train.init_on="host"`) and places
it in its shardings; the others initialise on the devices.
"""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from helpers import load_config  # noqa: E402

from mlmjax import masking  # noqa: E402
from mlmjax.convert import hf  # noqa: E402
from mlmjax.train import partition  # noqa: E402
from mlmjax.train import state as state_lib  # noqa: E402

MESHES = ((1, 1, 1), (8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 1, 8))
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(251)]


def tiny_config(grad_accum_steps: int = 1):
  config = load_config("quickstart")
  config.data.seq_len = 16
  config.masking.max_predictions = 4
  config.model.update(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                      max_position_embeddings=16, hidden_dropout=0.0)
  config.train.update(batch_size=16, steps=3, warmup_steps=1, grad_accum_steps=grad_accum_steps)
  return config


def batches(n: int, rows: int, seq: int):
  rng = np.random.default_rng(0)
  for _ in range(n):
    ids = rng.integers(5, len(VOCAB), size=(rows, seq)).astype(np.int32)
    ids[:, 0] = 2
    lengths = rng.integers(seq // 2, seq + 1, size=rows)
    for r, n_tok in enumerate(lengths):
      ids[r, n_tok - 1] = 3
      ids[r, n_tok:] = 0
    yield {"input_ids": ids}


def run(mesh_shape, grad_accum_steps=1, init_on="device"):
  config = tiny_config(grad_accum_steps)
  config.mesh.shape = mesh_shape
  config.train.init_on = init_on
  tables = masking.VocabTables.from_vocab(VOCAB)
  devices = jax.devices()[: int(np.prod(mesh_shape))]
  c = state_lib.build(config, tables, len(VOCAB), 0, devices=devices)
  with partition.mesh_context(c.mesh, config.mesh.axis_rules):
    state = c.init_state(jax.random.key(config.seed))
    step = state_lib.jit_train_step(config, c)
    losses = []
    for batch in batches(3, config.train.batch_size, config.data.seq_len):
      state, window = step(state, partition.global_batch(batch, c.mesh), jax.random.key(0),
                           state_lib.empty_window(c))
      losses.append(float(window["loss"]))  # a window of one step: its loss
  return np.array(losses), hf.flatten_params(state.params), shardings(state)


def shardings(state) -> dict[str, str]:
  """'params/<path>' and 'adam_mu/<path>' -> the PartitionSpec each leaf lives in."""
  specs = {}
  adam = state.opt_state[1][0]  # chain(clip, adamw) -> adamw's ScaleByAdamState
  for prefix, tree in (("params", state.params), ("adam_mu", adam.mu)):
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      name = "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))
      specs[f"{prefix}/{name}"] = str(tuple(leaf.sharding.spec))
  return specs


def main(out_path):
  results = {}
  for shape in MESHES:
    losses, params, specs = run(shape, init_on="host" if shape == (2, 2, 2) else "device")
    if shape == (2, 2, 2):
      results["specs"] = np.array(sorted(f"{k}={v}" for k, v in specs.items()))
    results["x".join(map(str, shape)) + "/losses"] = losses
    results.update({"x".join(map(str, shape)) + "/" + k: v for k, v in params.items()})
  losses, params, _ = run((8, 1, 1), grad_accum_steps=4)
  results["accum4/losses"] = losses
  results.update({"accum4/" + k: v for k, v in params.items()})
  np.savez(out_path, **results)


if __name__ == "__main__":
  main(sys.argv[1])
