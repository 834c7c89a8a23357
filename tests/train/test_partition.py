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
  layer = "bert/encoder/layers/"  # stacked: a leading 'layers' axis, never sharded
  expected = {
      "bert/embeddings/word_embeddings/embedding": "('tensor', 'fsdp')",
      "bert/embeddings/position_embeddings/embedding": "(None, 'fsdp')",
      "bert/embeddings/LayerNorm/scale": "('fsdp',)",
      layer + "attention/self/query/kernel": "(None, 'fsdp', 'tensor')",
      layer + "attention/self/query/bias": "(None, 'tensor')",
      layer + "attention/output/dense/kernel": "(None, 'tensor', 'fsdp')",
      layer + "intermediate/dense/kernel": "(None, 'fsdp', 'tensor')",
      layer + "output/dense/kernel": "(None, 'tensor', 'fsdp')",
      "cls/predictions/bias": "('tensor',)",
      "cls/predictions/transform/dense/kernel": "(None, 'fsdp')",
  }
  for name, spec in expected.items():
    assert specs["params/" + name] == spec, name
  params = {k[len("params/"):]: v for k, v in specs.items() if k.startswith("params/")}
  mu = {k[len("adam_mu/"):]: v for k, v in specs.items() if k.startswith("adam_mu/")}
  assert params == mu  # optimizer state sharded exactly like the parameters
  assert len(params) == 5 + 16 + 5


def test_mesh_shape_resolution():
  assert partition.resolve_mesh_shape((-1, 1, 1), 8) == (8, 1, 1)
  assert partition.resolve_mesh_shape((2, -1, 2), 8) == (2, 2, 2)
  with pytest.raises(ValueError, match="does not divide"):
    partition.resolve_mesh_shape((3, -1, 1), 8)
  with pytest.raises(ValueError, match="needs 4 devices"):
    partition.resolve_mesh_shape((2, 2, 1), 8)
  with pytest.raises(ValueError, match="at most one -1"):
    partition.resolve_mesh_shape((-1, -1, 1), 8)


def test_plan_matches_the_shardings_of_a_real_run(sharded_results):
  import sys
  sys.path.insert(0, HERE)
  from sharded_run import VOCAB, tiny_config
  from mlmjax.model.config import ModelConfig
  config = tiny_config()
  model_cfg = ModelConfig.from_config(config.model, vocab_size=len(VOCAB))
  planned = {r["path"]: str(tuple(r["spec"])) for r in
             partition.sharding_table(model_cfg, (2, 2, 2), config.mesh.axis_rules)}
  real = dict(line.split("=", 1) for line in sharded_results["specs"])
  assert planned == {k[len("params/"):]: v for k, v in real.items() if k.startswith("params/")}


def test_dry_run_plans_bert_large_on_a_tpu_pod_without_devices():
  from helpers import ROOT
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  code = ("import sys; sys.argv[0] = 'mlmjax-train'; from mlmjax import cli; cli.train()")
  proc = subprocess.run([sys.executable, "-c", code, f"--config={ROOT}/configs/tpu_pod.py",
                         "--workdir=/nonexistent/never/written", "--dry_run=32"],
                        env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  assert "mesh {'data': 4, 'fsdp': 8, 'tensor': 1} on 32 devices" in out
  assert "335.2 M parameters" in out  # BERT-large with the tied MLM head, vocab padded 30592
  assert "(None, 'fsdp', 'tensor')" in out and "layers/intermediate/dense/kernel" in out
  # 335.2M float32 parameters split 8 ways by FSDP = 0.157 GiB; with AdamW's two moments and
  # the gradients, 4 x that.
  assert "parameters 0.157 GiB" in out and "state total 0.627 GiB" in out
