"""End to end: a tiny run trains, evaluates, checkpoints, resumes exactly, and exports."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from mlmjax import inference
from mlmjax.train import loop


def final_params(workdir):
  model, _, _ = inference.load_trained(str(workdir))
  return {"/".join(map(str, p)): np.asarray(v[...])
          for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_tiny_run_trains_evaluates_and_checkpoints(tiny, tmp_path):
  workdir = tmp_path / "run"
  results = loop.train_and_evaluate(tiny, str(workdir))
  assert results["step"] == 6
  assert 0.0 <= results["eval_accuracy"] <= 1.0 and np.isfinite(results["eval_loss"])
  assert results["eval_predictions"] > 0
  saved = json.loads((workdir / "eval_results.json").read_text())
  assert saved["eval_loss"] == pytest.approx(results["eval_loss"])
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [3, 6]
  logged = [json.loads(l) for l in (workdir / "tensorboard" / "metrics.jsonl").read_text().split("\n") if l]
  assert [r["step"] for r in logged if "loss" in r] == [2, 4, 6]
  assert any(p.name.startswith("events.out.tfevents") for p in (workdir / "tensorboard").iterdir())
  assert (workdir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the run's curves


def test_resume_continues_and_matches_an_uninterrupted_run(tiny, tmp_path):
  straight = tmp_path / "straight"
  loop.train_and_evaluate(tiny, str(straight))

  resumed = tmp_path / "resumed"
  tiny.train.stop_after = 3  # an interrupted run: same schedule, stops at step 3
  loop.train_and_evaluate(tiny, str(resumed))
  assert sorted(int(p.name) for p in (resumed / "checkpoints").iterdir() if p.name.isdigit()) == [3]
  tiny.train.stop_after = 0
  results = loop.train_and_evaluate(tiny, str(resumed))
  assert results["step"] == 6

  a, b = final_params(straight), final_params(resumed)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_resume_refuses_another_model_shape(tiny, tmp_path):
  workdir = tmp_path / "run"
  tiny.train.steps = 3
  loop.train_and_evaluate(tiny, str(workdir))
  tiny.model.hidden_size = 64
  with pytest.raises(ValueError, match="new --workdir"):
    loop.train_and_evaluate(tiny, str(workdir))


def test_one_compilation_of_each_step_for_the_whole_run(tiny, tmp_path, caplog):
  """Steps, evaluations (two of them here) and changing learning rates never recompile."""
  import logging
  tiny.train.update(steps=6, eval_every=2)
  with caplog.at_level(logging.WARNING), jax.log_compiles(True):
    loop.train_and_evaluate(tiny, str(tmp_path / "run"))
  compiled = [r.getMessage() for r in caplog.records if "Finished XLA compilation" in r.getMessage()]
  assert sum("jit(train_step_in_window)" in m for m in compiled) == 1, compiled
  assert sum("jit(eval_batch)" in m for m in compiled) == 1, compiled


def test_logged_training_metrics_are_window_means_read_once_per_window(tiny, tmp_path,
                                                                      monkeypatch):
  """A run logging every 3 steps logs, at steps 3 and 6, the mean loss of the steps a run
  logging every step logs one by one; and it reads from the device once per logged window, not
  once per step (the runs differ by exactly the 4 reads of the 4 windows fewer)."""
  reads = []
  device_get = jax.device_get
  monkeypatch.setattr(jax, "device_get", lambda x: reads.append(1) or device_get(x))

  def run(log_every):
    tiny.train.update(steps=6, log_every=log_every, eval_every=0)
    reads.clear()
    loop.train_and_evaluate(tiny, str(tmp_path / f"every{log_every}"))
    lines = (tmp_path / f"every{log_every}" / "tensorboard" / "metrics.jsonl").read_text()
    logged = {r["step"]: r for r in map(json.loads, lines.split("\n")[:-1]) if "loss" in r}
    return logged, len(reads)

  every_step, reads_every_step = run(1)
  windows, reads_windows = run(3)
  assert sorted(windows) == [3, 6] and sorted(every_step) == [1, 2, 3, 4, 5, 6]
  for end in (3, 6):
    steps = range(end - 2, end + 1)
    for name in ("loss", "accuracy"):
      np.testing.assert_allclose(windows[end][name],
                                 np.mean([every_step[s][name] for s in steps]), rtol=1e-5)
    assert windows[end]["window_steps"] == 3 and every_step[end]["window_steps"] == 1
    assert windows[end]["learning_rate"] == every_step[end]["learning_rate"]
  assert reads_every_step - reads_windows == 6 - 2


def test_keys_added_to_the_schema_since_a_checkpoint_are_not_changes():
  """A workdir written before a key existed (e.g. model.family, data.tokenizer_type) resumes:
  the old run ran as the default does. Set otherwise, the key is a change and is refused."""
  import json  # pylint: disable=g-import-not-at-top
  from mlmjax import config as config_lib  # pylint: disable=g-import-not-at-top
  current = json.loads(config_lib.default_config().to_json_best_effort())
  saved = json.loads(json.dumps(current))
  del saved["model"]["family"], saved["data"]["tokenizer_type"]
  assert loop.config_changes(saved, current) == []
  loop.check_same_experiment(saved, current, allow_change=False)
  current["model"]["family"] = "roberta"
  assert loop.config_changes(saved, current) == ["model.family"]
  with pytest.raises(ValueError, match="model.family: 'bert' -> 'roberta'"):
    loop.check_same_experiment(saved, current, allow_change=False)
