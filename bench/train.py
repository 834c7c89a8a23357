r"""Train-step benchmark: the real jitted train step, masking inside, on synthetic token ids.

    python -m bench.train --config=configs/bert_base.py               # B=256, S=128, bf16
    python -m bench.train --config=configs/bert_base.py --masking     # + every masking strategy
    python -m bench.train --config=configs/bert_large.py:512 --config.train.batch_size=32
    python -m bench.train --config=configs/bench.py:tiny --steps=3    # a CPU smoke run
    python -m bench.train --config=configs/bench.py:mini --hf         # beside HF PyTorch, same CPU
    python -m bench.train --config=configs/bench.py:dispatch          # host time of a step call

The step is the one training runs (`train.state.build` + `jit_train_step`, compiled ahead of
time as the loop does); only the data is synthetic (`synthetic.py`): a vocabulary of
`config.data.vocab_size` ids and rows packed as `data/packing.py` makes them (right-padded when
--pad_fraction > 0), with the annotations the masking strategy reads.

`configs/bench.py:NAME` is a config of one of its SHAPES (tiny, mini, dispatch, and BERT's base
and large in bf16); any config file works, and `--config.*` overrides go on top. Attention is
the config's ("auto": cuDNN flash on a GPU in bf16).

Timing: warm-up steps, then `--steps` steps in `--windows` windows, each ended by
`block_until_ready`; the median window gives step ms and tokens/s (rows x seq_len / step).
`host_ms` is the host time of one step call (the median over 20 calls, each made with the
device idle): what the training loop pays per step before the device has work, and what it
hides by running ahead. `configs/bench.py:dispatch` (BERT-base's 12 layers at a width of 16)
shows it alone.

`--masking` also times each strategy alone at the batch's shape (`masking.time_strategy`, as a
share of the step); `--hf` Hugging Face `BertForMaskedLM` (PyTorch, eager) at the same shape,
batch, dropout and dtype on the same device, in the same run (`torch_baseline.py`): on a CPU a
side-by-side anyone can run. MFU counts the sparse-head model FLOPs of
`train/metrics.flops_per_token` with P slots per row. `python -m bench.report` tables records.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from bench import harness, masking as masking_bench, synthetic, torch_baseline
from mlmjax import masking
from mlmjax.model.layers import attention_kernel
from mlmjax.train import metrics as metrics_lib
from mlmjax.train import partition
from mlmjax.train import state as state_lib
from mlmjax.train import step as step_lib

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
FLAGS = flags.FLAGS


# ----------------------------------------------------------------------------- config


def shapes() -> dict[str, dict[str, Any]]:
  """configs/bench.py's SHAPES, read from the file as `--config` reads it (configs/ is no
  package)."""
  spec = importlib.util.spec_from_file_location("bench_shapes", CONFIGS / "bench.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.SHAPES


def model_name(config: ml_collections.ConfigDict) -> str:
  """The SHAPES name of the model's shape ("base", "large", "tiny", ...), else e.g. "L2-d64";
  another family than BERT is named after it ("mini modernbert", its own feed-forward width)."""
  family = "" if config.model.family == "bert" else f" {config.model.family}"
  free = ("model.dtype",) + (("model.intermediate_size",) if family else ())
  for name, preset in shapes().items():
    shape = {k[len("model."):]: v for k, v in preset.items()
             if k.startswith("model.") and k not in free}
    if all(config.model[k] == v for k, v in shape.items()):
      return name + family
  return f"L{config.model.num_layers}-d{config.model.hidden_size}{family}"


def batch_fields(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The fields a training batch carries for this masking config (what prepared data holds)."""
  return ("input_ids", "segment_ids") + masking.batch_fields(config.masking)


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
  tok = synthetic.synthetic_tokenizer(config.data.vocab_size)
  c = state_lib.build(config, synthetic.synthetic_tables(tok), tok.get_vocab_size(),
                      pad_id=synthetic.PAD)
  rows = synthetic.synthetic_rows(tok, config.train.batch_size, config.data.seq_len,
                                  config.seed, pad_fraction)
  progress(f"built model, masker and batch in {time.perf_counter() - started:.1f} s")
  return Setup(config, c, rows, started)


def device_memory() -> dict[str, float | None]:
  """Peak and limit of device 0's allocator in GiB (None where the backend keeps no stats)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  get = lambda k: stats[k] / harness.GIB if k in stats else None
  return {"peak_gib": get("peak_bytes_in_use"), "limit_gib": get("bytes_limit")}


def planned_memory(compiled) -> float | None:
  """XLA's own plan for the step in GiB: arguments + outputs - donated aliases + temporaries."""
  try:
    m = compiled.memory_analysis()
    total = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
             + m.temp_size_in_bytes)
    return total / harness.GIB
  except Exception:  # pylint: disable=broad-except  (not every backend implements it)
    return None


def bench_train(s: Setup, steps: int = 20, warmup: int = 3, windows: int = 3,
                profile_dir: str = "", name: str = "mlmjax", model: str = "") -> dict:
  """Compiles the train step ahead of time, warms up, times it; returns one record."""
  config, c = s.config, s.components
  with partition.mesh_context(c.mesh, config.mesh.axis_rules):
    state = c.init_state(jax.random.key(config.seed))
    batch = partition.global_batch({k: s.rows[k] for k in batch_fields(config)}, c.mesh)
    key, window = jax.random.key(config.seed), state_lib.empty_window(c)
    progress(f"state initialised ({time.perf_counter() - s.started:.1f} s since start)")
    start = time.perf_counter()
    compiled = state_lib.jit_train_step(config, c).lower(state, batch, key, window).compile()
    compile_s = time.perf_counter() - start
    progress(f"train step compiled in {compile_s:.1f} s")
    held = {"state": state, "window": None}

    def run():  # the loop's own call; the state is donated, so keep only the newest
      held["state"], held["window"] = compiled(held["state"], batch, key, window)
      return held["window"]

    times = harness.time_calls(run, jax.block_until_ready, steps, windows, warmup=warmup)
    progress(f"{warmup} warm-up and {steps} timed steps done")
    host = harness.time_calls(run, lambda _: None, 20, 20,
                              idle=lambda: jax.block_until_ready(held["state"]))
    if profile_dir:
      with jax.profiler.trace(profile_dir, create_perfetto_trace=True):  # + a JSON trace
        harness.time_calls(run, jax.block_until_ready, 3)
    last = step_lib.window_means(jax.device_get(held["window"]))  # the last step alone
  return {"kind": "train", "name": name, "model": model or f"L{c.model_cfg.num_layers}",
          **_speed(s, statistics.median(times)), "host_ms": statistics.median(host) * 1e3,
          "step_ms_windows": [t * 1e3 for t in times], "compile_s": compile_s,
          **device_memory(), "planned_gib": planned_memory(compiled),
          "loss": float(last["loss"]), "skipped_updates": float(last["skipped_updates"]),
          "steps": steps, "warmup": warmup, **_described(s)}


def _speed(s: Setup, step_s: float) -> dict:
  """Tokens/s, step ms and model FLOP/s of a step that takes `step_s` seconds."""
  config, model_cfg = s.config, s.components.model_cfg
  rows, seq_len = config.train.batch_size, config.data.seq_len
  tokens_per_s = rows * seq_len / step_s
  real = float(np.mean(s.rows["input_ids"] != synthetic.PAD))
  flops = metrics_lib.flops_per_token(model_cfg, seq_len, config.masking.max_predictions)
  tflops = flops * tokens_per_s / jax.device_count() / 1e12
  peak = metrics_lib.peak_flops_per_device()
  return {"batch": rows, "seq_len": seq_len, "tokens_per_s": tokens_per_s,
          "real_tokens_per_s": tokens_per_s * real, "step_ms": step_s * 1e3,
          "tflops": tflops, "mfu": tflops * 1e12 / peak if peak else None,
          "flops_per_token": flops}


def _described(s: Setup) -> dict:
  """What ran: the model's settings, the strategy, the devices and JAX."""
  config, model_cfg = s.config, s.components.model_cfg
  return {"max_predictions": config.masking.max_predictions,
          "attention": attention_kernel(model_cfg.attention, model_cfg.compute_dtype),
          "dtype": model_cfg.dtype, "remat": model_cfg.remat_policy,
          "strategy": config.masking.strategy, "devices": jax.device_count(),
          "device": jax.devices()[0].device_kind, "jax": jax.__version__}


def hf_shape(config: ml_collections.ConfigDict) -> dict:
  """HF `BertConfig` fields for our config's model: the same shape, dropout and vocabulary."""
  m = config.model
  return dict(vocab_size=config.data.vocab_size, hidden_size=m.hidden_size,
              num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads,
              intermediate_size=m.intermediate_size,
              max_position_embeddings=m.max_position_embeddings,
              hidden_dropout_prob=m.hidden_dropout,
              attention_probs_dropout_prob=m.attention_dropout, hidden_act=m.hidden_act)


def bench_hf(config: ml_collections.ConfigDict, steps: int, warmup: int, windows: int,
             model: str) -> dict:
  """HF BertForMaskedLM (PyTorch, eager) at our config's shape on the same device type."""
  device = "cuda" if jax.default_backend() == "gpu" else "cpu"
  return torch_baseline.run_case(
      "eager", False, config.train.batch_size, config.data.seq_len, hf_shape(config), device,
      steps, warmup, windows, config.train.clip_norm, model,
      bf16=config.model.dtype == "bfloat16")


def bench_masking(s: Setup, strategies: list[str] | None = None, iters: int = 20,
                  unroll: int = 4, step_ms: float | None = None, model: str = "") -> list[dict]:
  """Each strategy alone, jitted on the train batch's shape; one record per strategy.

  `iters` programs of `unroll` masker calls are dispatched before one wait, so a figure is the
  device time of a call without a separate dispatch's launch cost (inside the step there is
  none). Contextual masking gets stand-in hidden states of the model's width (the forward pass
  that makes them in training is part of the train step's figure).
  """
  config, c = s.config, s.components
  b, seq = s.rows["input_ids"].shape
  batch = jax.device_put({k: jnp.asarray(v) for k, v in s.rows.items()})
  hidden = jax.random.normal(jax.random.key(1), (b, seq, c.model_cfg.hidden_size))
  records = []
  for name in strategies or list(masking.SPECS):
    mask_config = config.masking.copy_and_resolve_references()
    mask_config.strategy = name
    r = masking_bench.time_strategy(mask_config, c.tables, batch, hidden, iters, unroll)
    records.append({**r, "model": model,
                    "share_of_step": r["step_ms"] / step_ms if step_ms else None})
  return records


# ----------------------------------------------------------------------------- command line


def _print_summary(r: dict) -> None:
  fmt = lambda v, spec: "n/a" if v is None else format(v, spec)
  print(f"{r['name']} {r['model']} B={r['batch']} S={r['seq_len']} on {r['device']}: "
        f"{r['tokens_per_s']:,.0f} tokens/s, {r['step_ms']:.2f} ms/step, "
        f"host {r['host_ms']:.2f} ms/call, "
        f"{r['tflops']:.2f} model TFLOP/s/device, MFU {fmt(r['mfu'], '.1%')}, "
        f"compile {r['compile_s']:.1f} s, peak {fmt(r['peak_gib'], '.2f')} GiB "
        f"(XLA plan {fmt(r['planned_gib'], '.2f')} GiB), loss {r['loss']:.3f}", flush=True)


def print_header(config: ml_collections.ConfigDict) -> str:
  """Prints what is about to run; returns the model's name."""
  model = model_name(config)
  kernel = attention_kernel(config.model.attention, config.model.dtype)
  print(f"jax {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}; "
        f"model {model}, {config.model.dtype}, attention {kernel}, "
        f"remat {config.model.remat_policy}, strategy {config.masking.strategy}, "
        f"P={config.masking.max_predictions}", flush=True)
  return model


def main(_):
  logging.set_verbosity(logging.WARNING)
  f = FLAGS
  model = print_header(f.config)
  s = setup(f.config, f.pad_fraction)
  r = bench_train(s, f.steps, f.warmup, f.windows, f.profile_dir, f.name, model)
  _print_summary(r)
  records = [r]
  if f.hf:
    theirs = bench_hf(f.config, f.steps, f.warmup, f.windows, model)
    print(f"HF eager (PyTorch {theirs['torch']}) at the same shape: "
          f"{theirs['tokens_per_s']:,.0f} tokens/s, {theirs['step_ms']:.2f} ms/step; "
          f"mlmjax / HF = {r['tokens_per_s'] / theirs['tokens_per_s']:.2f}x")
    records.append(theirs)
  if f.masking:
    for m in bench_masking(s, f.strategies, f.masking_iters, f.masking_unroll, r["step_ms"],
                           model):
      print(f"masking {m['name']:>10}: {m['step_ms']:.3f} ms per call "
            f"({m['share_of_step']:.2%} of the step), compile {m['compile_s']:.1f} s")
      records.append(m)
  harness.write_records(f.json_out, records)


def define_config_flag() -> None:
  config_flags.DEFINE_config_file("config", None, "training config file (e.g. "
                                  "configs/bench.py:tiny); --config.a.b=value overrides a key",
                                  lock_config=True)
  flags.mark_flag_as_required("config")


if __name__ == "__main__":
  define_config_flag()
  flags.DEFINE_string("name", "mlmjax", "the run's name in the report (e.g. a variant's)")
  flags.DEFINE_integer("steps", 20, "timed steps")
  flags.DEFINE_integer("warmup", 3, "steps run before timing")
  flags.DEFINE_integer("windows", 3, "timed windows (each ends in a block); the median is kept")
  flags.DEFINE_float("pad_fraction", 0.0, "mean share of padding per row (0: full rows)")
  flags.DEFINE_string("profile_dir", "", "if set, a jax.profiler trace of 3 steps goes here")
  flags.DEFINE_string("json_out", "", "write the result records (a JSON list) here")
  flags.DEFINE_bool("masking", False, "also time each masking strategy on the batch's shape")
  flags.DEFINE_bool("hf", False, "also time HF BertForMaskedLM (PyTorch, eager), same shape")
  flags.DEFINE_list("strategies", [], "masking strategies to time (default: all)")
  flags.DEFINE_integer("masking_iters", 20, "dispatches per strategy")
  flags.DEFINE_integer("masking_unroll", 4, "masker calls per dispatch")
  app.run(main)
