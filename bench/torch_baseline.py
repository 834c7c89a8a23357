r"""Hugging Face PyTorch baseline: `BertForMaskedLM` training steps, eager and `torch.compile`.

    python -m bench.torch_baseline                            # on a CUDA GPU: 3 cases
    python -m bench.torch_baseline --cases=compiled-s128 --steps=30
    python -m bench.torch_baseline --device=cpu --tiny --dtype=fp32   # a smoke run

What a user would run instead of mlmjax: HF `BertForMaskedLM` (BERT-base, random init, SDPA
attention, dropout 0.1 as configured), bf16 autocast with float32 parameters, fused AdamW,
gradients clipped at 1.0 as the HF Trainer does, the dense MLM head HF computes (logits at every
position, labels -100 except at the 15% predicted ones). Data: random full rows of Zipf-shaped
ids over the same id layout as `bench/synthetic.py`, [MASK] at the predicted slots.

The records are those of `bench.train`; model FLOPs are counted with the same sparse-head
formula, imported from mlmjax (`train/metrics.flops_per_token`, P = 20 per 128 tokens), so the
MFU of both compares directly, although HF's dense head does more work than it is credited
with. That import brings JAX into the process; no JAX computation runs here, so JAX starts no
backend and takes no GPU memory (tests/bench/test_torch_baseline.py checks it).
"""

from __future__ import annotations

import gc
import statistics
import types
from typing import Any, Callable

from absl import app, flags

from bench import harness
from mlmjax.train import metrics as metrics_lib

FLAGS = flags.FLAGS

# name -> (torch.compile?, batch, seq_len): the figures docs/BENCHMARKS.md compares against.
CASES = {
    "eager-s128": (False, 256, 128),
    "compiled-s128": (True, 256, 128),
    "eager-s512": (False, 32, 512),
}
BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, max_position_embeddings=512)
# --tiny: the train bench's "tiny" preset, 4 rows a quarter as long (s128 -> 32, s512 -> 128).
TINY = dict(vocab_size=1024, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=256, max_position_embeddings=512)
MASK_ID, NUM_SPECIAL = 4, 5  # [PAD] [UNK] [CLS] [SEP] [MASK], as bench/synthetic.py
PREDICTIONS_PER_128 = 20  # BERT's max_predictions at 128 tokens


def make_model(shape: dict, device: str):
  """A randomly initialised HF BertForMaskedLM with SDPA attention, float32 parameters."""
  import torch  # pylint: disable=g-import-not-at-top
  from transformers import BertConfig, BertForMaskedLM  # pylint: disable=g-import-not-at-top
  config = BertConfig(**shape, attn_implementation="sdpa")
  torch.manual_seed(0)
  return BertForMaskedLM(config).to(device).train()


def synthetic_batch(vocab_size: int, batch: int, seq_len: int, device: str) -> dict:
  """Full rows of Zipf-distributed ids; P = seq_len * 20/128 positions per row to predict."""
  import torch  # pylint: disable=g-import-not-at-top
  g = torch.Generator().manual_seed(0)
  weights = 1.0 / torch.arange(1, vocab_size - NUM_SPECIAL + 1, dtype=torch.float64)
  ids = torch.multinomial(weights, batch * seq_len, replacement=True, generator=g)
  ids = (ids + NUM_SPECIAL).reshape(batch, seq_len)
  ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
  p = predictions(seq_len)
  positions = torch.argsort(torch.rand(batch, seq_len - 2, generator=g), dim=1)[:, :p] + 1
  labels = torch.full_like(ids, -100)
  labels.scatter_(1, positions, ids.gather(1, positions))
  inputs = ids.scatter(1, positions, MASK_ID)
  return {"input_ids": inputs.to(device), "attention_mask": torch.ones_like(ids).to(device),
          "token_type_ids": torch.zeros_like(ids).to(device), "labels": labels.to(device)}


def predictions(seq_len: int) -> int:
  return max(1, round(seq_len * PREDICTIONS_PER_128 / 128))


def make_step(model, compiled: bool, clip_norm: float, device: str,
              bf16: bool = True) -> Callable[[dict], Any]:
  """One training step: bf16 autocast forward + loss, backward, clipping, fused AdamW."""
  import torch  # pylint: disable=g-import-not-at-top
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01,
                          fused=device.startswith("cuda"))
  forward = torch.compile(model) if compiled else model

  def step(batch):
    with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
      loss = forward(**batch).loss
    loss.backward()
    if clip_norm:
      torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()

  return step


def sync(device: str) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  if device.startswith("cuda"):
    torch.cuda.synchronize()


def device_name(device: str) -> str:
  import torch  # pylint: disable=g-import-not-at-top
  return torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"


def peak_flops(device: str) -> float | None:
  """The same datasheet table as `metrics.peak_flops_per_device`, matched on the CUDA name."""
  name = device_name(device)
  for prefix, tflops in metrics_lib.PEAK_TFLOPS.items():
    if name.startswith(prefix):
      return tflops * 1e12
  return None


def flops_per_token(shape: dict, seq_len: int) -> float:
  """metrics.flops_per_token for this HF shape (P = 20 per 128 tokens, as ours)."""
  cfg = types.SimpleNamespace(hidden_size=shape["hidden_size"],
                              num_layers=shape["num_hidden_layers"],
                              intermediate_size=shape["intermediate_size"],
                              vocab_size=shape["vocab_size"], family="bert")
  return metrics_lib.flops_per_token(cfg, seq_len, predictions(seq_len))


def run_case(name: str, compiled: bool, batch_size: int, seq_len: int, shape: dict,
             device: str, steps: int, warmup: int, windows: int, clip_norm: float,
             model_label: str, bf16: bool = True) -> dict:
  """Builds a fresh model and optimizer, times the step; returns one record."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  if device.startswith("cuda"):
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
  model = make_model(shape, device)
  step = make_step(model, compiled, clip_norm, device, bf16)
  batch = synthetic_batch(shape["vocab_size"], batch_size, seq_len, device)

  losses = []

  def run():  # the record reports the last step's loss
    losses.append(step(batch))
    return losses[-1]

  # The first step: torch.compile compiles here (eager: CUDA set-up).
  (first_s,) = harness.time_calls(run, lambda _: sync(device), 1)
  times = harness.time_calls(run, lambda _: sync(device), steps, windows, warmup=warmup)

  step_s = statistics.median(times)
  tokens_per_s = batch_size * seq_len / step_s
  flops = flops_per_token(shape, seq_len)
  tflops = flops * tokens_per_s / 1e12
  peak = peak_flops(device)
  gib = (torch.cuda.max_memory_allocated() / harness.GIB if device.startswith("cuda") else None)
  record = {
      "kind": "train", "name": "HF torch.compile" if compiled else "HF eager",
      "model": model_label, "batch": batch_size, "seq_len": seq_len,
      "tokens_per_s": tokens_per_s, "step_ms": step_s * 1e3,
      "step_ms_windows": [t * 1e3 for t in times], "tflops": tflops,
      "mfu": tflops * 1e12 / peak if peak else None,
      "compile_s": first_s if compiled else None, "first_step_s": first_s, "peak_gib": gib,
      "loss": float(losses[-1]), "flops_per_token": flops, "case": name,
      "dtype": "bfloat16" if bf16 else "float32", "steps": steps,
      "warmup": warmup, "device": device_name(device), "torch": torch.__version__,
      "transformers": transformers.__version__,
  }
  del model, step, batch
  gc.collect()
  return record


def run_cases(cases: list[str], device: str = "", tiny: bool = False, steps: int = 20,
              warmup: int = 3, windows: int = 3, bf16: bool = True, clip_norm: float = 1.0,
              ) -> list[dict]:
  """Times each case of CASES; prints a line per case; returns the records."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  device = device or ("cuda" if torch.cuda.is_available() else "cpu")
  # TF32 for what autocast leaves in float32, as the HF Trainer's --tf32 does.
  torch.backends.cuda.matmul.allow_tf32 = True
  torch.backends.cudnn.allow_tf32 = True
  shape, label = (TINY, "tiny") if tiny else (BASE, "base")
  print(f"torch {torch.__version__}, transformers {transformers.__version__} on "
        f"{device_name(device)}; BERT-{label}", flush=True)
  records = []
  for name in cases:
    if name not in CASES:
      raise ValueError(f"unknown case {name!r}; choose from {list(CASES)}")
    compiled, batch_size, seq_len = CASES[name]
    if tiny:
      batch_size, seq_len = 4, seq_len // 4
    r = run_case(name, compiled, batch_size, seq_len, shape, device, steps, warmup, windows,
                 clip_norm, label, bf16)
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)
    print(f"{r['name']} B={batch_size} S={seq_len}: {r['tokens_per_s']:,.0f} tokens/s, "
          f"{r['step_ms']:.2f} ms/step, {r['tflops']:.2f} model TFLOP/s, MFU "
          f"{fmt(r['mfu'], '.1%')}, first step {r['first_step_s']:.1f} s, peak "
          f"{fmt(r['peak_gib'], '.2f')} GiB, loss {r['loss']:.3f}", flush=True)
    records.append(r)
  return records


def main(_):
  f = FLAGS
  records = run_cases(f.cases, f.device, f.tiny, f.steps, f.warmup, f.windows,
                      f.dtype == "bf16", f.clip_norm)
  harness.write_records(f.json_out, records)


if __name__ == "__main__":
  flags.DEFINE_string("device", "", "cuda or cpu (default: cuda if available)")
  flags.DEFINE_list("cases", list(CASES), "cases to time")
  flags.DEFINE_bool("tiny", False, "tiny model and rows (smoke test)")
  flags.DEFINE_integer("steps", 20, "timed steps per case")
  flags.DEFINE_integer("warmup", 3, "steps after the first, untimed")
  flags.DEFINE_integer("windows", 3, "timed windows; median reported")
  flags.DEFINE_enum("dtype", "bf16", ["bf16", "fp32"],
                    "bf16: autocast (the GPU baseline); fp32: none (CPUs without bf16)")
  flags.DEFINE_float("clip_norm", 1.0, "0 disables clipping")
  flags.DEFINE_string("json_out", "", "write the records (a JSON list) here")
  app.run(main)
