"""A whole run with its workdir and corpus in a bucket (the GCS emulator on loopback).

The real command lines, in subprocesses whose current directory and TMPDIR are empty temporary
folders: prepare, train, checkpoint, resume, evaluate, export (to the bucket and to a local
folder) and fill-mask all go through the bucket, and nothing is written under the cwd.
"""

import json
import os
import subprocess
import sys

import gcsfs
import numpy as np

import gcs_fixture
from helpers import TINY_OVERRIDES, TRAIN_CLI, write_corpus
from mlmjax import inference

RUN = f"gs://{gcs_fixture.BUCKET}/runs/one"
CORPUS = f"gs://{gcs_fixture.BUCKET}/corpus"
CLI = "import sys; from mlmjax import cli; cli.main()"


def run(cmd, gcs, cwd, tmp):
  env = {**os.environ, **gcs, "JAX_PLATFORMS": "cpu", "TMPDIR": str(tmp)}
  out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600,
                       check=False)
  assert out.returncode == 0, out.stderr[-4000:]
  return out


def test_prepare_train_resume_evaluate_export_in_a_bucket(gcs, tmp_path):
  fs = gcsfs.GCSFileSystem()
  fs.put(str(write_corpus(tmp_path / "a.txt", num_docs=80, seed=1)), f"{CORPUS}/a.txt")
  fs.put(str(write_corpus(tmp_path / "b.txt", num_docs=60, seed=2)), f"{CORPUS}/b.txt")
  cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
  cwd.mkdir()
  tmp.mkdir()
  train = [sys.executable, "-c", TRAIN_CLI, f"--workdir={RUN}", *TINY_OVERRIDES,
           f"--config.data.paths={CORPUS}/*.txt", "--config.train.checkpoint_every=2",
           "--config.train.eval_every=2"]

  run([*train, "--config.train.steps=4"], gcs, cwd, tmp)
  files = gcs_fixture.files(RUN)
  for expected in ("data/manifest.json", "data/token_stats.npz", "tokenizer/tokenizer.json",
                   "tokenizer/vocab.txt", "config.json", "eval_results.json", "curves.png",
                   "tensorboard/metrics.jsonl", "checkpoints/2/_CHECKPOINT_METADATA",
                   "checkpoints/4/_CHECKPOINT_METADATA"):
    assert expected in files, (expected, files)
  assert any(f.startswith("data/parts/train-") for f in files)
  assert any(f.startswith("tensorboard/events.out.tfevents") for f in files)
  assert not os.listdir(cwd)  # nothing under the current directory (no ./gs:/...)

  # Resume: the same command with more steps goes on from step 4.
  out = run([*train, "--config.train.steps=6"], gcs, cwd, tmp)
  assert "step 6:" in out.stdout
  assert "Restoring checkpoint at step 4" in out.stderr
  metrics = [json.loads(line) for line in
             fs.cat(f"{RUN}/tensorboard/metrics.jsonl").decode().splitlines()]
  steps = [m["step"] for m in metrics if "loss" in m]
  assert steps == [2, 4, 6]  # one history across both runs
  results = json.loads(fs.cat(f"{RUN}/eval_results.json"))
  assert results["step"] == 6 and np.isfinite(results["eval_loss"])

  # Export to the bucket and to a local folder; both are the same Hugging Face model.
  run([sys.executable, "-c", CLI, "export", f"--workdir={RUN}", f"--out={RUN}/hf"], gcs, cwd,
      tmp)
  local = tmp_path / "hf"  # in this process: the command line is the same code
  assert inference.export_workdir(RUN, str(local)) == str(local)
  exported = gcs_fixture.files(f"{RUN}/hf")
  assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt"} <= set(exported)
  assert fs.cat(f"{RUN}/hf/model.safetensors") == (local / "model.safetensors").read_bytes()
  out = run([sys.executable, "-c", CLI, "fill-mask", f"--workdir={RUN}",
             "The parser [MASK] a new string."], gcs, cwd, tmp)
  assert "[MASK]" in out.stdout
  assert not os.listdir(cwd)


def test_a_bucket_that_does_not_exist_is_one_clear_error(gcs, tmp_path):
  out = subprocess.run([sys.executable, "-c", TRAIN_CLI, "--workdir=gs://no-such-bucket/run",
                        *TINY_OVERRIDES, f"--config.data.paths={write_corpus(tmp_path / 'c.txt')}"],
                       env={**os.environ, **gcs, "JAX_PLATFORMS": "cpu"}, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
  assert ("mlmjax: error: The bucket gs://no-such-bucket does not exist, or this account "
          "cannot see it; create it (gcloud storage buckets create gs://no-such-bucket)"
          in out.stderr), out.stderr[-3000:]
