"""The train-step benchmark at tiny shapes on CPU (no timing is asserted)."""

import json
import math
import subprocess
import sys

import pytest

from bench import train as bench_train
from helpers import ROOT, load_config
from mlmjax import masking

# A one-layer model on 2 x 16 rows: the real step, compiled in seconds.
SMALL = {"model.hidden_size": 32, "model.num_layers": 1, "model.num_heads": 2,
         "model.intermediate_size": 64, "data.seq_len": 16, "data.vocab_size": 256,
         "train.batch_size": 2}


@pytest.fixture(scope="module")
def small():
  config = load_config("bench", "tiny")
  config.update_from_flattened_dict(SMALL)
  return bench_train.setup(config)


@pytest.fixture(scope="module")
def train_record(small):
  return bench_train.bench_train(small, steps=2, warmup=1, windows=2, model="small")


def test_bench_shapes_then_overrides():
  config = load_config("bench", "base")
  config.update_from_flattened_dict({"data.seq_len": 512, "model.remat_policy": "full"})
  assert (config.model.hidden_size, config.model.num_layers, config.model.dtype) == (
      768, 12, "bfloat16")
  assert config.data.seq_len == 512 and config.model.remat_policy == "full"
  assert config.masking.max_predictions == 80  # follows the sequence length, as BERT's
  assert bench_train.model_name(config) == "base"
  assert bench_train.model_name(load_config("bert_large", "512")) == "large"
  assert bench_train.model_name(load_config("quickstart")) == "L2-d128"
  pinned = load_config("bench", "base")
  pinned.masking.max_predictions = 24
  pinned.data.seq_len = 512
  assert pinned.masking.max_predictions == 24
  with pytest.raises(ValueError, match="choose one of"):
    load_config("bench", "huge")


def test_train_bench_runs_the_real_step(train_record):
  r = train_record
  assert r["kind"] == "train" and (r["batch"], r["seq_len"]) == (2, 16)
  assert r["tokens_per_s"] > 0 and r["step_ms"] > 0 and r["compile_s"] > 0
  assert r["host_ms"] > 0
  assert math.isfinite(r["loss"]) and r["skipped_updates"] == 0
  assert r["tflops"] > 0 and r["mfu"] is None  # no datasheet peak for a CPU
  assert r["max_predictions"] == 2 and r["attention"] == "xla"
  assert len(r["step_ms_windows"]) == 2
  json.dumps(r)  # a record is plain JSON


def test_masking_bench_covers_every_strategy(small, train_record):
  records = bench_train.bench_masking(small, iters=1, unroll=1,
                                      step_ms=train_record["step_ms"])
  assert [r["name"] for r in records] == list(masking.SPECS)
  for r in records:
    assert r["kind"] == "masking" and r["step_ms"] > 0 and r["share_of_step"] > 0


def test_batch_fields_follow_the_strategy(small):
  config = small.config.copy_and_resolve_references()
  assert bench_train.batch_fields(config) == ("input_ids", "segment_ids")
  config.masking.strategy = "mixture"
  config.masking.mixture.strategies = ("entity", "pmi")
  assert bench_train.batch_fields(config)[2:] == ("entity_ids", "phrase_ids", "ngram_ids")


def test_command_times_a_step_and_its_trace_summarises(tmp_path):
  """The command end to end (as bench/gpu_report.sh runs it), then `bench.trace` on the
  profile it wrote."""
  out = tmp_path / "r.json"
  run = subprocess.run(
      [sys.executable, "-m", "bench.train", "--config=configs/bench.py:tiny", "--steps=2",
       "--warmup=1", "--windows=1", "--config.train.batch_size=2", "--config.data.seq_len=16",
       "--name=mlmjax, variant", f"--profile_dir={tmp_path / 'trace'}", f"--json_out={out}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  assert "train step compiled in" in run.stderr  # the phase lines
  (record,) = json.loads(out.read_text())
  assert record["name"] == "mlmjax, variant" and record["tokens_per_s"] > 0
  assert record["model"] == "tiny"
  summary = subprocess.run([sys.executable, "-m", "bench.trace", str(tmp_path / "trace")],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert summary.returncode == 0, summary.stderr[-2000:]
  assert "ms per step over 3 steps" in summary.stdout and "| operation |" in summary.stdout

