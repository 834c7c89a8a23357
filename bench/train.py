r"""Train-step benchmark: the real jitted train step, masking inside, on synthetic token ids.

    mlmjax-bench-train --config=configs/bert_base.py               # B=256, S=128, bf16
    mlmjax-bench-train --config=configs/bert_base.py --masking     # + every masking strategy
    mlmjax-bench-train --config=configs/bert_large.py:512 --config.train.batch_size=32
    mlmjax-bench-train --config=configs/bert_large.py:512 --find_max_batch  # remat as configured
    mlmjax-bench-train --config=configs/bench.py:tiny --steps=3    # a CPU smoke run
    mlmjax-bench-train --config=configs/bench.py:mini --hf         # beside HF PyTorch, same CPU
    mlmjax-bench-train --config=configs/bench.py:dispatch          # host time of a step call
    mlmjax-bench-train --report=a.json,b.json                      # one Markdown table

The step is the one training runs (`train.state.build` + `jit_train_step`, compiled ahead of
time as the loop does); only the data is synthetic (`synthetic.py`): a vocabulary of
`config.data.vocab_size` ids and rows packed as `data/packing.py` makes them (right-padded when
--pad_fraction > 0), with the annotations the masking strategy reads.

`configs/bench.py:NAME` is a config of one of the SHAPES below (tiny, mini, dispatch, and BERT's
base and large in bf16); any config file works, and `--config.*` overrides go on top. Attention
is the config's ("auto": cuDNN flash on a GPU in bf16).

Timing: warm-up steps, then `--steps` steps in `--windows` windows, each ended by
`block_until_ready`; the median window gives step ms and tokens/s (rows x seq_len / step).
`host_ms` is the host time of one step call (the median over 20 calls, each made with the
device idle): what the training loop pays per step before the device has work, and what it
hides by running ahead. `configs/bench.py:dispatch` (BERT-base's 12 layers at a width of 16)
shows it alone.

`--hf` also times Hugging Face `BertForMaskedLM` (PyTorch, eager) at the same shape, batch,
dropout and dtype on the same device, in the same run (`mlmjax.bench.torch_baseline`): on a CPU
a side-by-side anyone can run; the ratio is in the table's last column.
MFU counts the sparse-head model FLOPs of `train/metrics.flops_per_token` with P slots per row.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlmjax import bench
from mlmjax import config as config_lib
from mlmjax import masking
from mlmjax.bench import synthetic
from mlmjax.bench import torch_baseline
from mlmjax.model.bert import attention_kernel
from mlmjax.train import state as state_lib
from mlmjax.train import step as step_lib
from mlmjax.train import metrics as metrics_lib
from mlmjax.train import partition

# Benchmark shapes by name, as dotted config paths (`configs/bench.py:NAME` applies one).
SHAPES: dict[str, dict[str, Any]] = {
    # BERT-Tiny's width at a small vocabulary: for tests and CPU smoke runs.
    "tiny": {"model.hidden_size": 64, "model.num_layers": 2, "model.num_heads": 2,
             "model.intermediate_size": 256, "model.max_position_embeddings": 512,
             "data.vocab_size": 1024, "data.seq_len": 64, "train.batch_size": 8},
    # BERT-Mini (4 layers, width 256): the CPU side-by-side with HF (`--hf`).
    "mini": {"model.hidden_size": 256, "model.num_layers": 4, "model.num_heads": 4,
             "model.intermediate_size": 1024, "model.max_position_embeddings": 512,
             "data.vocab_size": 8192, "data.seq_len": 128, "train.batch_size": 16},
    # BERT-base's depth at a width of 16: the step's host (dispatch) time with little compute.
    "dispatch": {"model.hidden_size": 16, "model.num_layers": 12, "model.num_heads": 2,
                 "model.intermediate_size": 32, "model.max_position_embeddings": 512,
                 "data.vocab_size": 1024, "data.seq_len": 16, "train.batch_size": 2},
    "base": {**{f"model.{k}": v for k, v in config_lib.BERT_SHAPES["base"].items()},
             "model.dtype": "bfloat16", "data.vocab_size": 30522, "data.seq_len": 128,
             "train.batch_size": 256},
    "large": {**{f"model.{k}": v for k, v in config_lib.BERT_SHAPES["large"].items()},
              "model.dtype": "bfloat16", "data.vocab_size": 30522, "data.seq_len": 512,
              "train.batch_size": 32},
}

# ----------------------------------------------------------------------------- config


def model_name(config: ml_collections.ConfigDict) -> str:
  """The SHAPES name of the model's shape ("base", "large", "tiny", ...), else e.g. "L2-d64"."""
  for name, preset in SHAPES.items():
    shape = {k[len("model."):]: v for k, v in preset.items()
             if k.startswith("model.") and k != "model.dtype"}
    if all(config.model[k] == v for k, v in shape.items()):
      return name
  return f"L{config.model.num_layers}-d{config.model.hidden_size}"


# ----------------------------------------------------------------------------- measurement


@dataclasses.dataclass
class Setup:
  """What the benchmarks share: the config, the built components and one batch of host rows."""
  config: ml_collections.ConfigDict
  components: state_lib.Components
  rows: dict[str, np.ndarray]
  started: float  # time.perf_counter() when setup began


def progress(message: str) -> None:
  """A phase line on stderr: a run cut short by a time limit still says where it was."""
  print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def setup(config: ml_collections.ConfigDict, pad_fraction: float = 0.0) -> Setup:
  started = time.perf_counter()
  vocab = synthetic.synthetic_vocab(config.data.vocab_size)
  tables = synthetic.synthetic_tables(vocab)
  c = state_lib.build(config, tables, len(vocab), pad_id=synthetic.PAD)
  rows = synthetic.synthetic_rows(tables, config.train.batch_size, config.data.seq_len,
                                  config.seed, pad_fraction)
  progress(f"built model, masker and batch in {time.perf_counter() - started:.1f} s")
  return Setup(config, c, rows, started)


def device_memory() -> dict[str, float | None]:
  """Peak and limit of device 0's allocator in GiB (None where the backend keeps no stats)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  get = lambda k: stats[k] / bench.GIB if k in stats else None
  return {"peak_gib": get("peak_bytes_in_use"), "limit_gib": get("bytes_limit")}


def planned_memory(compiled) -> float | None:
  """XLA's own plan for the step in GiB: arguments + outputs - donated aliases + temporaries."""
  try:
    m = compiled.memory_analysis()
    total = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
             + m.temp_size_in_bytes)
    return total / bench.GIB
  except Exception:  # pylint: disable=broad-except  (not every backend implements it)
    return None


def bench_train(s: Setup, steps: int = 20, warmup: int = 3, windows: int = 3,
                profile_dir: str = "", name: str = "mlmjax", model: str = "") -> dict:
  """Compiles the train step ahead of time, warms up, times it; returns one record."""
  config, c = s.config, s.components
  rows, seq_len = config.train.batch_size, config.data.seq_len
  fields = synthetic.batch_fields(config)
  with partition.mesh_context(c.mesh, config.mesh.axis_rules):
    train_fn = state_lib.jit_train_step(config, c)
    state = c.init_state(jax.random.key(config.seed))
    batch = partition.global_batch({k: s.rows[k] for k in fields}, c.mesh)
    key = jax.random.key(config.seed)
    progress(f"state initialised ({time.perf_counter() - s.started:.1f} s since start)")
    start = time.perf_counter()
    empty_window = state_lib.empty_window(c)
    compiled = train_fn.lower(state, batch, key, empty_window).compile()
    compile_s = time.perf_counter() - start
    progress(f"train step compiled in {compile_s:.1f} s")

    holder = {"state": state, "window": None}

    def run():  # the loop's own call; the state is donated, so keep only the newest
      holder["state"], holder["window"] = compiled(holder["state"], batch, key, empty_window)
      return holder["window"]

    for _ in range(warmup):
      run()
    jax.block_until_ready(holder["state"])
    progress(f"{warmup} warm-up steps done; timing {steps}")
    times = bench.time_steps(run, steps, windows, jax.block_until_ready)
    host_s = host_time(run, lambda: jax.block_until_ready(holder["state"]))
    if profile_dir:
      with jax.profiler.trace(profile_dir, create_perfetto_trace=True):  # + a JSON trace
        jax.block_until_ready([run() for _ in range(3)])
    last = step_lib.window_means(jax.device_get(holder["window"]))  # the last step alone

  step_s = statistics.median(times)
  tokens_per_s = rows * seq_len / step_s
  real = float(np.mean(s.rows["input_ids"] != synthetic.PAD))
  flops = metrics_lib.flops_per_token(c.model_cfg, seq_len, config.masking.max_predictions)
  tflops = flops * tokens_per_s / jax.device_count() / 1e12
  peak = metrics_lib.peak_flops_per_device()
  return {
      "kind": "train", "name": name, "model": model or f"L{c.model_cfg.num_layers}",
      "batch": rows, "seq_len": seq_len, "tokens_per_s": tokens_per_s,
      "real_tokens_per_s": tokens_per_s * real, "step_ms": step_s * 1e3,
      "host_ms": host_s * 1e3, "step_ms_windows": [t * 1e3 for t in times], "tflops": tflops,
      "mfu": tflops * 1e12 / peak if peak else None, "compile_s": compile_s,
      **device_memory(), "planned_gib": planned_memory(compiled),
      "loss": float(last["loss"]), "skipped_updates": float(last["skipped_updates"]),
      "flops_per_token": flops, "max_predictions": config.masking.max_predictions,
      "attention": attention_kernel(c.model_cfg.attention, c.model_cfg.compute_dtype),
      "dtype": c.model_cfg.dtype, "remat": c.model_cfg.remat_policy,
      "strategy": config.masking.strategy, "steps": steps, "warmup": warmup,
      "devices": jax.device_count(), "device": jax.devices()[0].device_kind,
      "jax": jax.__version__,
  }


def host_time(run: Callable, wait: Callable, calls: int = 20) -> float:
  """Median seconds for `run()` to return with the device idle (`wait()` before each call)."""
  times = []
  for _ in range(calls):
    wait()
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  wait()
  return statistics.median(times)


def hf_shape(config: ml_collections.ConfigDict) -> dict:
  """HF `BertConfig` fields for our config's model: the same shape, dropout and vocabulary."""
  m = config.model
  return dict(vocab_size=config.data.vocab_size, hidden_size=m.hidden_size,
              num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads,
              intermediate_size=m.intermediate_size,
              max_position_embeddings=m.max_position_embeddings,
              hidden_dropout_prob=m.hidden_dropout, attention_probs_dropout_prob=m.attention_dropout,
              hidden_act=m.hidden_act)


def bench_hf(config: ml_collections.ConfigDict, steps: int, warmup: int, windows: int,
             model: str) -> dict:
  """HF BertForMaskedLM (PyTorch, eager) at our config's shape on the same device type."""
  device = "cuda" if jax.default_backend() == "gpu" else "cpu"
  return torch_baseline.run_case(
      "eager", False, config.train.batch_size, config.data.seq_len, hf_shape(config), device,
      steps, warmup, windows, config.train.clip_norm, model,
      bf16=config.model.dtype == "bfloat16")


def _unrolled(masker: Callable, unroll: int) -> Callable:
  """jit(key, step0, batch, state, hidden) -> `unroll` MaskedBatches of steps step0, ...

  The arrays are arguments, not closed over: XLA would otherwise embed them as constants.
  """
  def many(key, step0, batch, state, hidden):
    return [masker(key, batch, step0 + i, state, hidden) for i in range(unroll)]
  return jax.jit(many)


def bench_masking(s: Setup, strategies: list[str] | None = None, iters: int = 20,
                  unroll: int = 4, step_ms: float | None = None, model: str = "") -> list[dict]:
  """Each strategy alone, jitted on the train batch's shape; one record per strategy.

  `unroll` masker calls (different steps, so different masks) run in one jitted program, and
  `iters` such programs are dispatched before one block: the figure is the device time of a
  masking call, with the launch overhead a separate dispatch would add amortised away, as
  inside the train step. Contextual masking gets stand-in hidden states of the model's width
  (the forward pass that makes them in training is part of the train step's figure).
  """
  config, c = s.config, s.components
  b, seq = s.rows["input_ids"].shape
  batch = jax.device_put({k: jnp.asarray(v) for k, v in s.rows.items()})
  hidden = jax.random.normal(jax.random.key(1), (b, seq, c.model_cfg.hidden_size))
  records = []
  for name in strategies or list(masking.SPECS):
    mask_config = config.masking.copy_and_resolve_references()
    mask_config.strategy = name
    many = _unrolled(masking.make_masker(mask_config, c.tables), unroll)
    args = (batch, masking.init_state(mask_config, c.tables), hidden)
    key = jax.random.key(config.seed)
    start = time.perf_counter()
    compiled = many.lower(key, jnp.int32(0), *args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(key, jnp.int32(0), *args))
    steps = [jnp.int32(unroll * (i + 1)) for i in range(iters)]  # made before the clock starts
    start = time.perf_counter()
    jax.block_until_ready([compiled(key, st, *args) for st in steps])
    call_s = (time.perf_counter() - start) / (iters * unroll)
    records.append({
        "kind": "masking", "name": name, "model": model, "batch": b, "seq_len": seq,
        "tokens_per_s": b * seq / call_s, "step_ms": call_s * 1e3, "compile_s": compile_s,
        "share_of_step": call_s * 1e3 / step_ms if step_ms else None,
        "max_predictions": mask_config.max_predictions, "unroll": unroll, "iters": iters,
        "device": jax.devices()[0].device_kind,
    })
  return records


# ----------------------------------------------------------------------------- command line


def write_json(path: str, records: list[dict]) -> None:
  if path:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
      json.dump(records, out, indent=1)


def _print_summary(r: dict) -> None:
  fmt = lambda v, spec: "n/a" if v is None else format(v, spec)
  print(f"{r['name']} {r['model']} B={r['batch']} S={r['seq_len']} on {r['device']}: "
        f"{r['tokens_per_s']:,.0f} tokens/s, {r['step_ms']:.2f} ms/step, "
        f"host {r['host_ms']:.2f} ms/call, "
        f"{r['tflops']:.2f} model TFLOP/s/device, MFU {fmt(r['mfu'], '.1%')}, "
        f"compile {r['compile_s']:.1f} s, peak {fmt(r['peak_gib'], '.2f')} GiB "
        f"(XLA plan {fmt(r['planned_gib'], '.2f')} GiB), loss {r['loss']:.3f}", flush=True)


def run(config: ml_collections.ConfigDict, model: str, steps: int = 20, warmup: int = 3,
        windows: int = 3, pad_fraction: float = 0.0, profile_dir: str = "",
        name: str = "mlmjax", hf: bool = False, masking_strategies: list[str] = (),
        masking_iters: int = 20, masking_unroll: int = 4) -> list[dict]:
  """The train step's record, then HF's at the same shape (`hf`) and each masking strategy's;
  a line printed per record."""
  s = setup(config, pad_fraction)
  r = bench_train(s, steps, warmup, windows, profile_dir, name=name, model=model)
  _print_summary(r)
  records = [r]
  if hf:
    theirs = bench_hf(config, steps, warmup, windows, model)
    print(f"HF eager (PyTorch {theirs['torch']}) at the same shape: "
          f"{theirs['tokens_per_s']:,.0f} tokens/s, {theirs['step_ms']:.2f} ms/step; "
          f"mlmjax / HF = {r['tokens_per_s'] / theirs['tokens_per_s']:.2f}x")
    records.append(theirs)
  if masking_strategies:
    for m in bench_masking(s, list(masking_strategies), masking_iters, masking_unroll,
                           r["step_ms"], model):
      print(f"masking {m['name']:>10}: {m['step_ms']:.3f} ms per call "
            f"({m['share_of_step']:.2%} of the step), compile {m['compile_s']:.1f} s")
      records.append(m)
  return records
