"""The training and validation curves of a run as a PNG, from its `metrics.jsonl`.

    mlmjax.train.curves.plot("WORKDIR/tensorboard/metrics.jsonl", "WORKDIR/curves.png")

Written by the loop at the end of every run (process 0), beside TensorBoard's event files, so
a run can be looked at without starting TensorBoard. Both paths may be local or object-store
URLs (gs://...): they go through `mlmjax.storage`.
"""

import io
import os

from matplotlib.figure import Figure  # no pyplot: no global backend, no display

from mlmjax import storage
from mlmjax import workdir as workdir_lib


def plot(metrics_path, out_path) -> str | None:
  """Loss and accuracy against steps, training and held-out; returns out_path (None if the
  run logged nothing yet)."""
  metrics = workdir_lib.read_metrics(metrics_path)
  if "loss" not in metrics:
    return None
  fig = Figure(figsize=(10, 3.6))
  loss_ax, acc_ax = fig.subplots(1, 2)
  panels = ((loss_ax, "MLM loss", (("loss", "training (window means)"), ("eval_loss", "held-out")), ()),
            (acc_ax, "MLM accuracy",
             (("accuracy", "training (window means)"), ("eval_accuracy", "held-out")),
             (("eval_baseline_accuracy", "most frequent token"),)))
  for ax, title, lines, baselines in panels:
    for name, label in lines:
      if name in metrics:
        steps, values = zip(*metrics[name])
        ax.plot(steps, values, marker="o" if name.startswith("eval") else None,
                markersize=3, label=label)
    for name, label in baselines:
      if name in metrics:
        ax.axhline(metrics[name][-1][1], color="gray", linestyle="--", linewidth=1,
                   label=label)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  image = io.BytesIO()  # rendered in memory, then written whole (an object store has no seek)
  fig.savefig(image, format="png", dpi=110)
  storage.write_bytes(out_path, image.getvalue())
  return os.fspath(out_path)
