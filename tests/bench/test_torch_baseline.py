"""The Hugging Face PyTorch baseline runs on CPU at tiny shapes (no timing is asserted)."""

import json
import math
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from bench import torch_baseline  # noqa: E402
from helpers import ROOT  # noqa: E402
from mlmjax.model.config import ModelConfig  # noqa: E402
from mlmjax.train import metrics  # noqa: E402

# The command's own process: its record, and whether JAX (imported for the FLOP count) started
# a backend, which would take device memory beside PyTorch's.
RUN = """
import json
from jax._src import xla_bridge
from bench import torch_baseline
(r,) = torch_baseline.run_cases(["eager-s128"], device="cpu", tiny=True, steps=1, warmup=0,
                                windows=1, bf16=False)
print(json.dumps({**r, "jax_backend_started": xla_bridge.backends_are_initialized()}))
"""


def test_tiny_eager_on_cpu_without_a_jax_backend():
  done = subprocess.run([sys.executable, "-c", RUN], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  r = json.loads(done.stdout.splitlines()[-1])
  assert r["name"] == "HF eager" and (r["batch"], r["seq_len"]) == (4, 32)
  assert r["tokens_per_s"] > 0 and math.isfinite(r["loss"]) and r["mfu"] is None
  assert r["jax_backend_started"] is False


def test_same_flop_formula_as_ours():
  ours = ModelConfig(vocab_size=30522)  # BERT-base
  assert torch_baseline.flops_per_token(torch_baseline.BASE, 128) == pytest.approx(
      metrics.flops_per_token(ours, 128, 20))
  assert torch_baseline.predictions(512) == 80


def test_synthetic_batch_predicts_p_positions():
  b = torch_baseline.synthetic_batch(1024, 3, 32, "cpu")
  labelled = (b["labels"] != -100).sum(1)
  assert labelled.tolist() == [5, 5, 5]  # 32 * 20/128
  assert (b["input_ids"][b["labels"] != -100] == torch_baseline.MASK_ID).all()
  assert (b["input_ids"][:, 0] == 2).all() and (b["input_ids"][:, -1] == 3).all()
