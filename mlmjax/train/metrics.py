"""Model-FLOP and MFU accounting, and the metric writer (TensorBoard + JSONL, process 0 only)."""

import json
import os

import jax

# Dense bf16 datasheet peaks per chip, TFLOP/s, by `device_kind` prefix (for MFU only).
PEAK_TFLOPS = {
    "NVIDIA H100": 989.0, "NVIDIA H200": 989.0, "NVIDIA A100": 312.0, "NVIDIA B200": 2250.0,
    "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v6": 918.0,
}


def body_params(hidden: int, layers: int, intermediate: int) -> int:
  """Matrix parameters of the encoder layers (what the 6·N rule counts)."""
  return layers * (4 * hidden * hidden + 2 * hidden * intermediate)


def flops_per_token(model_cfg, seq_len: int, predictions_per_row: int) -> float:
  """Training FLOPs per token with the sparse MLM head.

  6·N_body + 12·L·S·d (attention scores and values, forward + backward)
  + 6·m·(d² + d·V), m = the share of tokens the head runs on (P / S).
  """
  d, layers = model_cfg.hidden_size, model_cfg.num_layers
  n_body = body_params(d, layers, model_cfg.intermediate_size)
  m = predictions_per_row / seq_len
  return 6 * n_body + 12 * layers * seq_len * d + 6 * m * (d * d + d * model_cfg.vocab_size)


def peak_flops_per_device() -> float | None:
  kind = jax.devices()[0].device_kind
  for prefix, tflops in PEAK_TFLOPS.items():
    if kind.startswith(prefix):
      return tflops * 1e12
  return None


class MetricWriter:
  """Scalars to TensorBoard event files and `metrics.jsonl` in the workdir, on process 0 only."""

  def __init__(self, logdir: str, enabled: bool = True):
    self.enabled = enabled
    if not enabled:
      return
    from tensorboardX import SummaryWriter  # light: needs neither TensorFlow nor torch
    os.makedirs(logdir, exist_ok=True)
    self._tb = SummaryWriter(logdir)
    self._jsonl = open(os.path.join(logdir, "metrics.jsonl"), "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    for name, value in scalars.items():
      self._tb.add_scalar(name, value, step)
    self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")
    self._jsonl.flush()

  def write_text(self, tag: str, text: str, step: int = 0) -> None:
    if self.enabled:
      self._tb.add_text(tag, text, step)

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      self._jsonl.close()
