"""Sharding: the same steps on 1 device and on data/FSDP/tensor meshes give the same model."""

import os
import subprocess
import sys

import numpy as np
import pytest

from mlmjax.train import partition

HERE = os.path.dirname(os.path.abspath(__file__))
RTOL, ATOL = 1e-4, 1e-5  # float32; sharded reductions sum in a different order


@pytest.fixture(scope="module")
def sharded_results(tmp_path_factory):
  out = tmp_path_factory.mktemp("sharded") / "results.npz"
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, os.path.join(HERE, "sharded_run.py"), str(out)],
                        env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return dict(np.load(out))


@pytest.mark.parametrize("mesh", ["8x1x1", "2x4x1", "2x2x2", "1x1x8", "accum4"])
def test_mesh_matches_one_device(sharded_results, mesh):
  ref = {k.split("/", 1)[1]: v for k, v in sharded_results.items() if k.startswith("1x1x1/")}
  got = {k.split("/", 1)[1]: v for k, v in sharded_results.items() if k.startswith(mesh + "/")}
  assert set(got) == set(ref)
  np.testing.assert_allclose(got["losses"], ref["losses"], rtol=RTOL, atol=ATOL)
  assert not np.allclose(ref["losses"][0], ref["losses"][2])  # the steps really trained
  for name in ref:
    np.testing.assert_allclose(got[name], ref[name], rtol=RTOL, atol=ATOL, err_msg=name)


def test_every_parameter_and_its_adam_state_are_sharded_by_the_rules(sharded_results):
  """On the (2, 2, 2) mesh: embed -> fsdp; heads, mlp, vocab -> tensor; Adam state alike."""
  specs = dict(line.split("=", 1) for line in sharded_results["specs"])
  layer = "bert/encoder/layer/0/"
  expected = {
      "bert/embeddings/word_embeddings/embedding": "('tensor', 'fsdp')",
      "bert/embeddings/position_embeddings/embedding": "(None, 'fsdp')",
      "bert/embeddings/LayerNorm/scale": "('fsdp',)",
      layer + "attention/self/query/kernel": "('fsdp', 'tensor')",
      layer + "attention/self/query/bias": "('tensor',)",
      layer + "attention/output/dense/kernel": "('tensor', 'fsdp')",
      layer + "intermediate/dense/kernel": "('fsdp', 'tensor')",
      layer + "output/dense/kernel": "('tensor', 'fsdp')",
      "cls/predictions/bias": "('tensor',)",
      "cls/predictions/transform/dense/kernel": "(None, 'fsdp')",
  }
  for name, spec in expected.items():
    assert specs["params/" + name] == spec, name
  params = {k[len("params/"):]: v for k, v in specs.items() if k.startswith("params/")}
  mu = {k[len("adam_mu/"):]: v for k, v in specs.items() if k.startswith("adam_mu/")}
  assert params == mu  # optimizer state sharded exactly like the parameters
  assert len(params) == 5 + 16 * 2 + 5


def test_mesh_shape_resolution():
  assert partition.resolve_mesh_shape((-1, 1, 1), 8) == (8, 1, 1)
  assert partition.resolve_mesh_shape((2, -1, 2), 8) == (2, 2, 2)
  with pytest.raises(ValueError, match="does not divide"):
    partition.resolve_mesh_shape((3, -1, 1), 8)
  with pytest.raises(ValueError, match="needs 4 devices"):
    partition.resolve_mesh_shape((2, 2, 1), 8)
  with pytest.raises(ValueError, match="at most one -1"):
    partition.resolve_mesh_shape((-1, -1, 1), 8)
