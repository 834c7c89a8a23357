"""What XLA is given for BERT-base's train step: the structure a fast GPU step needs, on a CPU.

The real step of `configs/bert_base.py` (2 layers, 8 rows; as BERT and as ModernBERT) is lowered for CUDA without a GPU
(JAX lowers for any platform; only cuDNN's version and capability probes need a GPU, and they
are stubbed here), and compiled for the CPU for what only a compiled program shows (buffer
donation, copies). Each assertion failed on the step as it was before the GPU-step work:
f32 matmuls in the MLM head's backward pass, three Q/K/V matmuls per layer, threefry on every
dropout activation, 611 state leaves, a per-leaf select that copied the optimizer state.
"""

import collections
import re
from unittest import mock

import jax
import numpy as np
import pytest
from jax._src.cudnn import fused_attention_stablehlo as cudnn_attention

from helpers import load_config
from mlmjax import config as config_lib
from mlmjax import masking
from mlmjax.data import packing
from mlmjax.train import partition
from mlmjax.train import state as state_lib
from mlmjax.train import step as step_lib

LAYERS, ROWS = 2, 8
WINDOW = jax.eval_shape(step_lib.empty_window)  # the logging window's sums (a few scalars)
# The head's shape, not its size, is under test: 1024 ids, words of one or more WordPiece pieces.
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
    f"##p{i}" if i % 3 == 2 else f"w{i}" for i in range(1019)]


# What differs between the families' steps: the fused Q/K/V kernel's shape, and the attention
# kernels (ModernBERT's layer 0 is global, layer 1 local: the window goes in as a bias).
FAMILY = {
    "bert": {"qkv": "{d}x3x{d}", "params": 26,  # 16 stacked layer arrays, 10 embeddings and head
             "attention": {"__cudnn$fmhaSoftmax": LAYERS}},
    "modernbert": {"qkv": "{d}x{d3}", "params": 12,  # 6 stacked, 6 embeddings, norm and head
                   "attention": {"__cudnn$fmhaSoftmax": 1, "__cudnn$fmhaScaleBiasSoftmax": 1}},
}


@pytest.fixture(scope="module", params=sorted(FAMILY))
def setup(request):
  """The components the trainer builds (`train.state.build`) and the batch it feeds, abstract."""
  config = config_lib.with_family(load_config("bert_base"), request.param)
  config.model.num_layers = LAYERS
  if request.param == "modernbert":  # GeGLU's [d, 2 x 1152] is Wqkv's [d, 3d]: tell them apart
    config.model.intermediate_size = 1024
  config.model.attention = "cudnn"  # what "auto" picks on a GPU in bf16
  config.data.vocab_size = len(VOCAB)
  config.train.batch_size = ROWS
  c = state_lib.build(config, masking.VocabTables.from_vocab(VOCAB), len(VOCAB), pad_id=0)
  fields = ("input_ids", "segment_ids") + masking.batch_fields(config.masking)
  batch = {k: jax.ShapeDtypeStruct((ROWS, config.data.seq_len), packing.FIELD_DTYPES[k])
           for k in fields}
  key = jax.eval_shape(lambda: jax.random.key(0))
  return config, c, batch, key


@pytest.fixture(scope="module")
def cuda_module(setup) -> str:
  config, c, batch, key = setup
  with partition.mesh_context(c.mesh, config.mesh.axis_rules), \
       mock.patch.object(cudnn_attention, "check_cudnn_version", lambda *_: 90800), \
       mock.patch.object(cudnn_attention, "check_compute_capability", lambda *_: True):
    step = state_lib.jit_train_step(config, c)
    return step.trace(c.abstract_state, batch, key, WINDOW).lower(
        lowering_platforms=("cuda",)).as_text()


@pytest.fixture(scope="module")
def cpu_compiled(setup):
  """The same step compiled for the CPU, with XLA's attention (cuDNN's needs a GPU)."""
  config, c, batch, key = setup
  config = config.copy_and_resolve_references()
  config.model.attention = "xla"
  c = state_lib.build(config, c.tables, config.data.vocab_size, pad_id=0)
  with partition.mesh_context(c.mesh, config.mesh.axis_rules):
    return state_lib.jit_train_step(config, c).lower(c.abstract_state, batch, key,
                                                     WINDOW).compile()


@pytest.fixture(scope="module")
def masker_module(setup) -> str:
  """The masker alone, lowered for CUDA: what the step may contain besides the model."""
  config, c, batch, key = setup
  fn = jax.jit(lambda key, batch: c.masker(key, batch, 0, None, None))
  return fn.trace(key, batch).lower(lowering_platforms=("cuda",)).as_text()


# ------------------------------------------------------------------ reading the lowered module

_FUNC = re.compile(r"^\s*func\.func (?:public|private) @([\w$.-]+)\(", re.M)
_CALL = re.compile(r"call @([\w$.-]+)\(.*?\) : \(([^)]*)\)")


def _elements(tensor_type: str) -> int:
  dims = re.match(r"tensor<((?:\d+x)*)", tensor_type).group(1)
  return int(np.prod([int(d) for d in dims.split("x") if d], dtype=np.int64))


def _classify(line: str):
  """The op a line of StableHLO holds, as a hashable description (None: not of interest)."""
  if "stablehlo.dot_general" in line:
    return ("dot",) + tuple(re.findall(r": \((tensor<[^>]*>), (tensor<[^>]*>)\)", line)[0])
  if "stablehlo.custom_call" in line or "custom_call @" in line:
    return ("custom_call", re.search(r"custom_call @([\w$]+)", line).group(1))
  if "stablehlo.while" in line:
    return ("while",)
  return None


def op_counts(module: str) -> collections.Counter:
  """Ops executed by `main`, each function call expanded (a body called 12 times counts 12x).

  Calls of threefry functions count as ("threefry", elements of their largest operand).
  """
  starts = [(m.group(1), m.start()) for m in _FUNC.finditer(module)]
  bodies = {name: module[start:(starts[i + 1][1] if i + 1 < len(starts) else len(module))]
            for i, (name, start) in enumerate(starts)}
  memo = {}

  def count(name: str) -> collections.Counter:
    if name not in memo:
      total = collections.Counter()
      for line in bodies[name].splitlines()[1:]:
        call = _CALL.search(line)
        if call and call.group(1) in bodies:
          if "threefry2x32" in call.group(1):
            total[("threefry", max(map(_elements, call.group(2).split(", "))))] += 1
          total += count(call.group(1))
        elif (op := _classify(line)) is not None:
          total[op] += 1
      memo[name] = total
    return memo[name]

  return count("main")


# ------------------------------------------------------------------ the structure


def test_every_matmul_of_the_model_takes_bf16_operands(cuda_module, masker_module):
  step, masker = op_counts(cuda_module), op_counts(masker_module)
  f32 = {op: n for op, n in step.items() if op[0] == "dot" and "f32>" in op[1] + op[2]}
  # The masker's exact prefix-sum matmuls may stay float32; nothing else may.
  assert all(masker[op] >= n for op, n in f32.items()), f32


def test_one_qkv_matmul_per_layer(setup, cuda_module):
  config, _, _, _ = setup
  d = config.model.hidden_size
  rows = f"tensor<{ROWS}x{config.data.seq_len}x{d}xbf16>"  # [B, S, D] activations
  kernel = FAMILY[config.model.family]["qkv"].format(d=d, d3=3 * d)
  qkv = [op for op in op_counts(cuda_module).elements()
         if op[0] == "dot" and op[1] == rows and op[2] == f"tensor<{kernel}xbf16>"]
  assert len(qkv) == LAYERS
  projections = [op for op in op_counts(cuda_module).elements()
                 if op[0] == "dot" and op[1] == rows and op[2] == f"tensor<{d}x{d}xbf16>"]
  # Only the attention output's, forward and backward (dX): no separate Q, K or V.
  assert len(projections) == 2 * LAYERS


def test_cudnn_attention_forward_and_backward_once_per_layer(setup, cuda_module):
  config, _, _, _ = setup
  counts = op_counts(cuda_module)
  fused = {op[1]: n for op, n in counts.items()
           if op[0] == "custom_call" and op[1].startswith("__cudnn$fmha")}
  expected = FAMILY[config.model.family]["attention"]
  assert fused == {**expected, **{k + "Backward": n for k, n in expected.items()}}


def test_no_threefry_on_activations(cuda_module):
  sizes = [op[1] for op in op_counts(cuda_module) if op[0] == "threefry"]
  assert max(sizes, default=0) <= 4, sizes  # key derivations only: a few words each


def test_no_loop_but_the_maskers(cuda_module, masker_module):
  assert op_counts(cuda_module)[("while",)] == op_counts(masker_module)[("while",)]


def test_the_state_is_donated_whole(setup, cpu_compiled):
  _, c, _, _ = setup
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(c.abstract_state))
  assert cpu_compiled.memory_analysis().alias_size_in_bytes == state_bytes


def test_the_state_is_updated_in_place(cpu_compiled):
  """No copy reads a state buffer (XLA names the step's parameters after the argument paths).

  A copy of a donated buffer is a full extra read and write of it: a per-leaf select between the
  old and the new state made XLA copy every Adam moment.
  """
  # Arrays only: a scalar counter's copy costs nothing.
  copied = re.findall(r"= \w+\[[\d,]+\]\S* copy\(%(state_[\w.]+)\)", cpu_compiled.as_text())
  assert not copied, copied[:5]
  assert "%state_opt_state" in cpu_compiled.as_text()  # the naming this test relies on


def test_few_state_leaves(setup):
  """Each leaf costs host time at every step call (~3 us): layers are stacked, not listed."""
  config, c, _, _ = setup
  params = len(jax.tree.leaves(c.abstract_state.params))
  assert params == FAMILY[config.model.family]["params"]  # whatever the depth
  assert len(jax.tree.leaves(c.abstract_state)) <= 3 * params + 8
