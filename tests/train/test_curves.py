"""The curves PNG: read from metrics.jsonl, a resumed run's repeated steps counted once."""

import json

from mlmjax import workdir
from mlmjax.train import curves


def test_curves_from_metrics_with_a_resume(tmp_path):
  path = tmp_path / "metrics.jsonl"
  records = [{"step": 2, "loss": 5.0, "accuracy": 0.1}, {"step": 4, "loss": 4.0, "accuracy": 0.2},
             {"step": 4, "eval_loss": 4.5, "eval_accuracy": 0.15, "eval_baseline_accuracy": 0.05},
             # resumed from step 2: step 4 logged again, with its new value
             {"step": 4, "loss": 3.9, "accuracy": 0.21}, {"step": 6, "loss": 3.5, "accuracy": 0.3}]
  path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
  metrics = workdir.read_metrics(str(path))
  assert metrics["loss"] == [(2, 5.0), (4, 3.9), (6, 3.5)]
  assert metrics["eval_loss"] == [(4, 4.5)]
  out = curves.plot(str(path), str(tmp_path / "curves.png"))
  assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG" and out.endswith("curves.png")
  assert curves.plot(str(tmp_path / "none.jsonl"), str(tmp_path / "x.png")) is None
