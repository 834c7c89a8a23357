"""Model-FLOP and MFU accounting, and the metric writer (TensorBoard + JSONL, process 0 only)."""

import json
import os
import shutil
import uuid

import jax

from mlmjax import storage
from mlmjax import workdir as workdir_lib


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
  if model_cfg.family == "modernbert":  # GeGLU: Wi is [d, 2·intermediate]
    n_body += layers * d * model_cfg.intermediate_size
  m = predictions_per_row / seq_len
  return 6 * n_body + 12 * layers * seq_len * d + 6 * m * (d * d + d * model_cfg.vocab_size)


def peak_flops_per_device() -> float | None:
  kind = jax.devices()[0].device_kind
  for prefix, tflops in PEAK_TFLOPS.items():
    if kind.startswith(prefix):
      return tflops * 1e12
  return None


class MetricWriter:
  """Scalars to TensorBoard event files and `metrics.jsonl` in `logdir`, on process 0 only.

  `logdir` is a local folder or an object-store URL (gs://bucket/run/tensorboard). An object
  store has no append, so for a URL both files are written to a local mirror
  (`storage.local_cache`) and uploaded whole by `flush()` and `close()`; a resumed run's
  `metrics.jsonl` continues the one already in the bucket.
  """

  def __init__(self, logdir, enabled: bool = True):
    self.enabled = enabled
    if not enabled:
      return
    from tensorboardX import SummaryWriter  # light: needs neither TensorFlow nor torch
    self._remote = None  # the URL the mirror is uploaded to; None: written in place
    suffix = ""
    if storage.is_url(logdir):
      self._remote = storage.path(logdir)
      self._dir = storage.local_cache(logdir, workdir_lib.TENSORBOARD)
      shutil.rmtree(self._dir)  # only this writer's files: a stale mirror is never uploaded
      os.makedirs(self._dir)
      remote_jsonl = self._remote / workdir_lib.METRICS
      if remote_jsonl.exists():  # a resumed run appends to the bucket's file
        storage.download(remote_jsonl, os.path.join(self._dir, workdir_lib.METRICS))
      # Event files are named after the second and the host: a writer started in the same
      # second as the last one would replace its file in the bucket without this.
      suffix = f".{uuid.uuid4().hex[:8]}"
    else:
      self._dir = os.fspath(logdir)
      os.makedirs(self._dir, exist_ok=True)
    self._uploaded: dict[str, tuple[int, int]] = {}  # mirror file -> (size, mtime) uploaded
    self._tb = SummaryWriter(self._dir, filename_suffix=suffix)
    self._jsonl = open(os.path.join(self._dir, workdir_lib.METRICS), "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    for name, value in scalars.items():
      self._tb.add_scalar(name, value, step)
    self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")
    self._jsonl.flush()

  def flush(self) -> None:
    """Makes everything written so far readable in `logdir` (for a URL: uploads the mirror's
    changed files)."""
    if not self.enabled:
      return
    self._tb.flush()
    self._jsonl.flush()
    self._upload()

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      self._jsonl.close()
      self._upload()

  def _upload(self) -> None:
    if self._remote is None:
      return
    for name in sorted(os.listdir(self._dir)):
      local = os.path.join(self._dir, name)
      if not os.path.isfile(local):
        continue
      info = os.stat(local)
      version = (info.st_size, info.st_mtime_ns)
      if self._uploaded.get(name) != version:
        try:
          storage.upload(local, self._remote / name)
        except OSError as e:  # the store: say which problem it is
          raise storage.explain(os.fspath(self._remote), e,
                                f"Uploading {name} to {self._remote}") from e
        self._uploaded[name] = version
