"""Two JAX processes x 4 CPU devices (gloo over loopback) train like one process on 8 devices."""

import os
import subprocess
import sys

import numpy as np
from flax import nnx

from helpers import ROOT, TINY_OVERRIDES, TRAIN_CLI, write_corpus
from mlmjax import inference

OVERRIDES = (*TINY_OVERRIDES, "--config.train.steps=4", "--config.train.checkpoint_every=2",
             "--config.mesh.shape=(2,2,2)", "--config.model.hidden_dropout=0.0")


def params_of(workdir):
  model, _, meta = inference.load_trained(str(workdir))
  flat = {"/".join(map(str, p)): np.asarray(v[...])
          for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  return flat, meta


def test_two_processes_equal_one_process_on_eight_devices(tmp_path):
  corpus = write_corpus(tmp_path / "corpus.txt")
  args = [f"--config.data.paths={corpus}", *OVERRIDES]
  # The tokenizer is trained once and shared, as a real cluster shares its prepared data.
  single = tmp_path / "single"
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  out = subprocess.run([sys.executable, "-c", TRAIN_CLI, f"--workdir={single}", *args], env=env,
                       capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]

  multi = tmp_path / "multi"
  tokenizer = single / "tokenizer" / "tokenizer.json"
  launcher = [sys.executable, str(ROOT / "launch" / "local.py"), "--processes=2",
              "--devices_per_process=4", "--", sys.executable, "-c", TRAIN_CLI,
              f"--workdir={multi}", *args, f"--config.data.tokenizer_path={tokenizer}"]
  out = subprocess.run(launcher, capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-4000:]

  steps = sorted(int(p.name) for p in (multi / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [2, 4]
  a, meta_a = params_of(single)
  b, _ = params_of(multi)
  assert meta_a["model"]["hidden_size"] == 32
  for name in a:
    np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=1e-5, err_msg=name)
