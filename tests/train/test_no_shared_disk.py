"""Two JAX processes that share nothing but a bucket: kill -9 one mid-run, relaunch, same result.

Each process (launch/local.py, 2 CPU devices each) has its own TMPDIR as its only local disk;
the corpus, the prepared data, the tokenizer, the logs and the checkpoints are in the GCS
emulator. The processes prepare their shards in parallel, each copies only its shuffle shard's
rows to its own disk, and a run killed half-way and relaunched ends with the parameters of an
uninterrupted run, bit for bit.
"""

import os
import subprocess
import sys
import time

import gcsfs
import numpy as np
import psutil
from flax import nnx

import gcs_fixture
from helpers import ROOT, TINY_OVERRIDES, TRAIN_CLI, write_corpus
from mlmjax import inference
from mlmjax.data import manifest as manifest_lib

BUCKET = f"gs://{gcs_fixture.BUCKET}"
STEPS = 60  # the kill lands after the first checkpoint (step 10), long before the end
OVERRIDES = (*TINY_OVERRIDES, f"--config.data.paths={BUCKET}/shared_corpus/*.txt",
             "--config.data.shard_bytes=4000",  # several shards, so both processes prepare
             "--config.data.shuffle_shards=2", f"--config.train.steps={STEPS}",
             "--config.train.checkpoint_every=10", "--config.train.log_every=10")


def launcher(workdir: str, private_tmp) -> list[str]:
  return [sys.executable, str(ROOT / "launch" / "local.py"), "--processes=2",
          "--devices_per_process=2", f"--private_tmp={private_tmp}", "--",
          sys.executable, "-c", TRAIN_CLI, f"--workdir={workdir}", *OVERRIDES]


def params_of(workdir: str) -> dict:
  model, _, _ = inference.load_trained(workdir)
  return {"/".join(map(str, p)): np.asarray(v[...])
          for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def committed_steps(fs, workdir: str) -> list[int]:
  try:
    names = fs.ls(f"{workdir}/checkpoints", detail=False)
  except FileNotFoundError:
    return []
  steps = [int(n.rsplit("/", 1)[1]) for n in names if n.rsplit("/", 1)[1].isdigit()]
  return sorted(s for s in steps if fs.exists(f"{workdir}/checkpoints/{s}/commit_success.txt"))


def test_killed_process_stops_the_job_and_a_relaunch_ends_bit_identical(gcs, tmp_path):
  fs = gcsfs.GCSFileSystem()
  for i in range(3):
    fs.put(str(write_corpus(tmp_path / f"c{i}.txt", num_docs=60, seed=i)),
           f"{BUCKET}/shared_corpus/c{i}.txt")
  env = {**os.environ, **gcs}

  straight = f"{BUCKET}/runs/straight"
  out = subprocess.run(launcher(straight, tmp_path / "tmp_straight"), env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-4000:]
  manifest = manifest_lib.read(f"{straight}/data")
  assert manifest["shards"]["processes"] == 2 and manifest["shards"]["count"] >= 4
  # Each process copied only the parts its shuffle shard lies in, to its own disk.
  copies = {i: sorted(f for _, _, names in os.walk(tmp_path / "tmp_straight" / f"process_{i}")
                      for f in names if f.startswith("parts_train-"))
            for i in (0, 1)}
  train_parts = len(manifest["splits"]["train"]["parts"])
  assert all(0 < len(c) < 2 * train_parts for c in copies.values()), copies  # 2 fields a part
  assert copies[0] != copies[1]

  killed = f"{BUCKET}/runs/killed"
  job = subprocess.Popen(launcher(killed, tmp_path / "tmp_killed"), env=env, cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.monotonic() + 300
  while not committed_steps(fs, killed) and time.monotonic() < deadline and job.poll() is None:
    time.sleep(0.2)
  assert job.poll() is None, "the run ended before it could be killed"
  victim = next(p for p in psutil.Process(job.pid).children()
                if p.environ().get("JAX_PROCESS_ID") == "1")
  victim.kill()
  killed_at = time.monotonic()
  output, _ = job.communicate(timeout=120)
  assert time.monotonic() - killed_at < 60, "the surviving process did not stop within a minute"
  assert job.returncode != 0
  assert "process 1 of 2 was killed by SIGKILL; stopping the other 1 running" in output, (
      output[-3000:])
  assert committed_steps(fs, killed)[-1] < STEPS

  out = subprocess.run(launcher(killed, tmp_path / "tmp_killed"), env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-4000:]
  a, b = params_of(straight), params_of(killed)
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_array_equal(b[name], a[name], err_msg=name)
