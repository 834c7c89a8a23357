"""Reliability: kill -9, SIGTERM, corrupted checkpoints, resharding, refused workdirs."""

import signal
import subprocess
import time

import numpy as np
import pytest

from helpers import (assert_same_params, cli_env as env, params_of, run_ok as run,
                     steps_in, train_cmd)
from mlmjax.train import loop


@pytest.fixture(scope="module")
def corpus(reliability_corpus):
  return reliability_corpus


@pytest.fixture(scope="module")
def straight(straight_run):
  """An uninterrupted 12-step run, checkpointing every step."""
  return straight_run


def test_kill_9_at_several_points_then_resume_is_bit_identical(tmp_path, corpus, straight):
  workdir = tmp_path / "killed"
  cmd = train_cmd(workdir, corpus, "--config.train.steps=12", "--config.train.checkpoint_every=1")
  for kill_after in (2, 5, 8):  # checkpoints are written every step: kills land mid-save too
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
      if any(s >= kill_after for s in steps_in(workdir)):
        break
      time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert steps_in(workdir), "killed before the first checkpoint"
  run(cmd)
  assert max(steps_in(workdir)) == 12
  assert_same_params(straight, workdir)


def test_sigterm_saves_the_current_step_and_exits_0(tmp_path, corpus):
  workdir = tmp_path / "preempted"
  cmd = train_cmd(workdir, corpus, "--config.train.steps=100000",
                  "--config.train.checkpoint_every=1000")
  proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  metrics = workdir / "tensorboard" / "metrics.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline and not (metrics.exists() and "loss" in metrics.read_text()):
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  stdout, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 0, stderr[-3000:]
  saved = steps_in(workdir)
  assert len(saved) == 1 and saved[0] >= 2 and saved[0] % 1000  # the current step, not a
  assert f"checkpoint saved at step {saved[0]}" in stdout        # scheduled one

  out = run(train_cmd(workdir, corpus, f"--config.train.steps={saved[0] + 2}",
                      "--config.train.checkpoint_every=1000", "--config.train.allow_config_change=True"))
  assert steps_in(workdir)[-1] == saved[0] + 2
  assert f"step {saved[0] + 2}: held-out" in out.stdout


def test_corrupted_latest_checkpoint_falls_back_to_the_previous(tiny, tmp_path, caplog):
  workdir = tmp_path / "run"
  tiny.train.update(steps=4, checkpoint_every=2, eval_every=0)
  loop.train_and_evaluate(tiny, str(workdir))
  assert steps_in(workdir) == [2, 4]
  for path in (workdir / "checkpoints" / "4" / "state").rglob("*"):
    if path.is_file() and path.stat().st_size > 0:
      path.write_bytes(b"\0" * 7)  # truncated, garbage
  tiny.train.steps = 6
  with caplog.at_level("WARNING"):
    results = loop.train_and_evaluate(tiny, str(workdir))
  assert any("checkpoints/4 is unreadable" in r.getMessage() for r in caplog.records)
  assert results["step"] == 6


def test_restore_onto_another_mesh_then_continue(tmp_path, corpus, tiny):
  """Written on 8 devices (8,1,1), resumed on 4 devices (2,2,1): same model as 1 device."""
  sharded = tmp_path / "sharded"
  args = ("--config.train.steps=4", "--config.train.checkpoint_every=2",
          "--config.model.hidden_dropout=0.0")
  run(train_cmd(sharded, corpus, *args, "--config.train.stop_after=2",
                "--config.mesh.shape=(8,1,1)"), devices=8)
  assert steps_in(sharded) == [2]
  run(train_cmd(sharded, corpus, *args, "--config.mesh.shape=(2,2,1)"), devices=4)
  single = tmp_path / "single"
  run(train_cmd(single, corpus, *args))
  a, b = params_of(single), params_of(sharded)
  for name in a:
    np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_a_workdir_of_another_experiment_is_refused_unless_allowed(tiny, tmp_path):
  workdir = tmp_path / "run"
  tiny.train.steps = 2
  loop.train_and_evaluate(tiny, str(workdir))
  tiny.train.steps = 3
  tiny.train.learning_rate = 0.5
  with pytest.raises(ValueError, match=r"train.learning_rate: 0.002 -> 0.5"):
    loop.train_and_evaluate(tiny, str(workdir))
  tiny.train.allow_config_change = True
  assert loop.train_and_evaluate(tiny, str(workdir))["step"] == 3


def test_best_and_latest_checkpoints_are_kept(tiny, tmp_path):
  workdir = tmp_path / "run"
  tiny.train.update(steps=8, checkpoint_every=1, eval_every=2, keep_checkpoints=2)
  loop.train_and_evaluate(tiny, str(workdir))
  kept = steps_in(workdir)
  assert kept[-2:] == [7, 8]
  assert len(kept) <= 3  # the two latest and, if older, the best evaluated one
