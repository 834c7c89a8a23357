"""Faults a long run meets, injected for real: a full disk (a tmpfs of limited size), a read-only
workdir (a read-only bind mount), a second trainer, SIGTERM at awkward moments.

Each ends in a clean success or in one clear error (no traceback), nothing is lost, and the same
command then resumes to the parameters of an uninterrupted run, bit for bit. Mounting needs
root, as CI has; elsewhere those tests are skipped with that reason.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import (STRAIGHT_ARGS, assert_same_params, cli_env, run_fails, run_ok,
                     split_arrays, steps_in, train_cmd, write_corpus)
from mlmjax import config as config_lib
from mlmjax.data import manifest as manifest_lib
from mlmjax.data import prepare as prepare_lib

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a tmpfs or a read-only bind mount needs root (CI has it)")
PREPARE_CLI = "import sys; sys.argv[0] = 'mlmjax-prepare'; from mlmjax import cli; cli.prepare()"


@contextlib.contextmanager
def tmpfs(folder, size: str):
  """A tmpfs of `size` (e.g. "32m") mounted on `folder` for the duration."""
  folder.mkdir(parents=True, exist_ok=True)
  subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                 check=True)
  try:
    yield folder
  finally:
    subprocess.run(["umount", "-l", str(folder)], check=True)


def resize(folder, size: str) -> None:
  subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)


@contextlib.contextmanager
def read_only(source, target):
  """`source` seen read-only at `target` (a bind mount) for the duration."""
  target.mkdir(parents=True, exist_ok=True)
  subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
  try:
    subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)
    yield target
  finally:
    subprocess.run(["umount", "-l", str(target)], check=True)


def fill(folder, leave: int):
  """A file that takes all but `leave` bytes of `folder`'s disk; its path."""
  ballast = folder / "ballast"
  with open(ballast, "wb") as f:
    f.write(b"\1" * max(shutil.disk_usage(folder).free - leave, 0))
  return ballast


def wait_for(condition, what: str, proc=None, timeout: float = 300) -> None:
  deadline = time.monotonic() + timeout
  while not condition():
    assert proc is None or proc.poll() is None, f"the run ended before {what}"
    assert time.monotonic() < deadline, f"timed out waiting for {what}"
    time.sleep(0.02)


def trained_to(workdir, step: int = 1) -> bool:
  """Whether the run has logged a training loss at `step` or later."""
  metrics = workdir / "tensorboard" / "metrics.jsonl"
  records = [json.loads(line) for line in metrics.read_text().splitlines()
             if line.strip()] if metrics.exists() else []
  return any("loss" in r and r["step"] >= step for r in records)


# ----------------------------------------------------------------------------- a full disk


@needs_root
def test_a_disk_too_full_for_the_next_checkpoint_stops_the_run_and_it_resumes_after(
    tmp_path, reliability_corpus, straight_run):
  with tmpfs(tmp_path / "disk", "32m") as disk:
    workdir = disk / "run"
    cmd = train_cmd(workdir, reliability_corpus, *STRAIGHT_ARGS)
    run_ok([*cmd, "--config.train.stop_after=4"])
    ballast = fill(disk, leave=64 << 10)
    err = run_fails(cmd)  # at once, at step 5's save, before Orbax writes anything
    assert "No space for the next checkpoint in" in err, err
    assert "checkpoint 4 stays" in err and str(workdir / "checkpoints") in err
    assert steps_in(workdir) == [3, 4]
    assert not [p.name for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]
    ballast.unlink()
    run_ok(cmd)
    assert steps_in(workdir)[-1] == 12
    assert_same_params(straight_run, workdir)


@needs_root
def test_a_full_disk_during_preparation_is_one_error_and_leaves_no_partial_file(tmp_path):
  corpus = write_corpus(tmp_path / "corpus.txt", num_docs=6000)
  args = [f"--config.data.paths={corpus}", "--config.data.source=files",
          "--config.data.vocab_size=300", "--config.data.shard_bytes=200000"]
  with tmpfs(tmp_path / "disk", "500k") as disk:
    cmd = [sys.executable, "-c", PREPARE_CLI, f"--workdir={disk / 'run'}", *args]
    err = run_fails(cmd)
    assert "filled up while shard" in err and "shard(s) finished are kept" in err, err
    assert not list(disk.rglob("*.tmp"))
    assert manifest_lib.read(str(disk / "run" / "data")) is None
    resize(disk, "16m")
    run_ok(cmd)
    config = config_lib.default_config().data
    config.update(source="files", paths=str(corpus), vocab_size=300, shard_bytes=200000)
    prepare_lib.prepare(config, str(tmp_path / "fresh"))
    for split in manifest_lib.SPLITS:
      got, want = split_arrays(disk / "run" / "data", split), split_arrays(
          tmp_path / "fresh" / "data", split)
      for name in want:
        assert (got[name] == want[name]).all(), (split, name)


# ----------------------------------------------------------------- a workdir that is not free


@needs_root
def test_a_read_only_workdir_is_refused_before_any_work(tmp_path, reliability_corpus):
  (tmp_path / "source" / "run").mkdir(parents=True)
  with read_only(tmp_path / "source", tmp_path / "ro") as ro:
    for workdir in (ro / "run", ro / "new"):  # an existing folder, and one to create
      err = run_fails(train_cmd(workdir, reliability_corpus, "--config.train.steps=2"))
      assert f"--workdir={workdir} is on a read-only filesystem" in err, err
      assert "Preparing data" not in err


def test_a_second_trainer_is_refused_and_a_killed_owners_lock_is_taken_over(
    tmp_path, reliability_corpus):
  workdir = tmp_path / "run"
  owner = subprocess.Popen(
      train_cmd(workdir, reliability_corpus, "--config.train.steps=100000",
                "--config.train.checkpoint_every=100000"),
      env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    wait_for(lambda: trained_to(workdir), "the first run trained", owner)
    named = f"is in use by mlmjax-train (pid {owner.pid} on {socket.gethostname()}, since "
    assert named in run_fails(train_cmd(workdir, reliability_corpus, "--config.train.steps=2"))
    prepare = [sys.executable, "-c", PREPARE_CLI, f"--workdir={workdir}",
               f"--config.data.paths={reliability_corpus}", "--config.data.source=files"]
    assert named in run_fails(prepare)
  finally:
    owner.kill()  # kill -9: the lock's owner is gone, its file stays
    owner.wait()
  assert (workdir / "lock.json").exists()
  out = run_ok(train_cmd(workdir, reliability_corpus, "--config.train.steps=2"))
  assert "step 2: held-out" in out.stdout


# -------------------------------------------------------------------- SIGTERM at any moment


def test_sigterm_while_checkpoints_are_written_saves_exits_0_and_resumes_bit_identical(
    tmp_path, reliability_corpus, straight_run):
  workdir = tmp_path / "run"
  cmd = train_cmd(workdir, reliability_corpus, *STRAIGHT_ARGS)  # a save every step: always one
  proc = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.PIPE,  # under way
                          stderr=subprocess.PIPE, text=True)
  wait_for(lambda: len(steps_in(workdir)) >= 2, "two checkpoints", proc)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 0, stderr[-3000:]
  assert steps_in(workdir)
  run_ok(cmd)
  assert_same_params(straight_run, workdir)


def test_sigterm_during_the_final_evaluation_finishes_it_and_exits_0(tmp_path,
                                                                    reliability_corpus):
  workdir = tmp_path / "run"
  cmd = train_cmd(workdir, reliability_corpus, "--config.train.steps=4",
                  "--config.train.eval_batches=0")  # the whole held-out split: a longer eval
  proc = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  wait_for(lambda: trained_to(workdir, 4), "the last step", proc)
  proc.send_signal(signal.SIGTERM)  # the loop is done: the final evaluation and save are next
  stdout, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 0, stderr[-3000:]
  assert "step 4: held-out" in stdout
  assert steps_in(workdir)[-1] == 4 and (workdir / "eval_results.json").exists()
