"""The train-step and masking benchmarks at tiny shapes on CPU (no timing is asserted)."""

import json
import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from helpers import ROOT, load_config
from mlmjax import bench, masking
from mlmjax.bench import fit
from mlmjax.bench import synthetic
from mlmjax.bench import train as bench_train

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
  pinned = load_config("bench", "base")
  pinned.masking.max_predictions = 24
  pinned.data.seq_len = 512
  assert pinned.masking.max_predictions == 24
  with pytest.raises(ValueError, match="choose one of"):
    load_config("bench", "huge")


def test_synthetic_rows_look_like_packed_data():
  tables = synthetic.synthetic_tables(synthetic.synthetic_vocab(300))
  rows = synthetic.synthetic_rows(tables, 6, 40, seed=1, pad_fraction=0.2)
  ids, seg = rows["input_ids"], rows["segment_ids"]
  assert ids.shape == seg.shape == rows["entity_ids"].shape == (6, 40)
  assert np.all(ids[:, 0] == synthetic.CLS)
  lengths = (ids != synthetic.PAD).sum(1)
  assert lengths.min() < 40  # some rows are padded
  for r, n in enumerate(lengths):
    assert np.all(ids[r, n:] == synthetic.PAD) and ids[r, n - 1] == synthetic.SEP
    assert set(np.unique(seg[r, :n])) == {1, 2} and np.all(seg[r, n:] == 0)
    spans = rows["entity_ids"][r]
    assert set(np.unique(spans[spans > 0])) == set(range(1, spans.max() + 1))  # numbered 1..k
  special = np.asarray(tables.is_special)[ids]
  assert np.all(rows["entity_ids"][special] == 0) and np.all(rows["pos_class"][special] == 0)
  full = synthetic.synthetic_rows(tables, 3, 20)
  assert np.all(full["input_ids"] != synthetic.PAD)


def test_train_bench_runs_the_real_step(train_record):
  r = train_record
  assert r["kind"] == "train" and (r["batch"], r["seq_len"]) == (2, 16)
  assert r["tokens_per_s"] > 0 and r["step_ms"] > 0 and r["compile_s"] > 0
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
  assert synthetic.batch_fields(config) == ("input_ids", "segment_ids")
  config.masking.strategy = "mixture"
  config.masking.mixture.strategies = ("entity", "pmi")
  assert synthetic.batch_fields(config)[2:] == ("entity_ids", "phrase_ids", "ngram_ids")


def test_search_batch_doubles_then_bisects():
  tried = []
  def fits(b):
    tried.append(b)
    return b <= 100
  found = fit.search_batch(fits, start=16, limit=1024, refine=3)
  assert found["largest_batch"] == 96 and found["first_oom"] == 104
  assert tried[:4] == [16, 32, 64, 128]
  capped = fit.search_batch(lambda b: True, start=4, limit=20)
  assert capped["largest_batch"] == 16 and capped["limit_reached"]
  assert fit.search_batch(lambda b: False, 8, 64)["largest_batch"] is None


def test_plan_estimate():
  assert fit.plan_estimate({8: 5.0, 16: 9.0}, 41.0) == 80  # 1 GiB + 0.5 GiB per row
  assert fit.plan_estimate({10: 5.0}, 20.0) == 40  # one point: all of it grows
  assert fit.plan_estimate({10: 5.0}, None) is None


def test_is_oom():
  assert fit.is_oom(RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to "
                                         "allocate 123 bytes"))
  assert not fit.is_oom(ValueError("bad shape"))


def test_fit_search_catches_only_out_of_memory(small, monkeypatch):
  def fake_bench(setup, **kwargs):  # out of memory above 8 rows, as XLA says it
    if setup.config.train.batch_size > 8:
      raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
    return {"planned_gib": 1.0 + 0.5 * setup.config.train.batch_size}
  monkeypatch.setattr(bench_train, "setup", lambda config: SimpleNamespace(config=config))
  monkeypatch.setattr(bench_train, "bench_train", fake_bench)
  partial = []
  r = fit.bench_fit(small.config, start=2, limit=64, refine=0, model="small",
                            on_try=partial.append)
  assert (r["largest_batch"], r["first_oom"], r["limit_reached"]) == (8, 16, False)
  assert r["tried"] == {"2": True, "4": True, "8": True, "16": False} and r["done"]
  assert [p["largest_batch"] for p in partial] == [2, 4, 8, 8]  # one record per try
  assert r["planned_gib"] == {"2": 2.0, "4": 3.0, "8": 5.0}
  assert not partial[-1]["done"] and "cut short" in bench.report(partial[:2])

  def broken(setup, **kwargs):
    raise ValueError("not a memory problem")
  monkeypatch.setattr(bench_train, "bench_train", broken)
  with pytest.raises(ValueError, match="not a memory"):
    fit.bench_fit(small.config, start=2, limit=64, refine=0)


def test_report_table_and_goals():
  common = {"model": "base", "device": "NVIDIA H100 80GB HBM3"}
  records = [
      {"kind": "train", "name": "HF torch.compile", "batch": 256, "seq_len": 128,
       "tokens_per_s": 400e3, "step_ms": 82.0, "compile_s": 40.0, **common},
      {"kind": "train", "name": "mlmjax", "batch": 256, "seq_len": 128, "tokens_per_s": 820e3,
       "step_ms": 40.0, "tflops": 447.0, "mfu": 0.452, "compile_s": 30.0, "peak_gib": 20.0,
       **common},
      {"kind": "train", "name": "mlmjax", "batch": 64, "seq_len": 512, "tokens_per_s": 760e3,
       "step_ms": 43.0, **common},
      {"kind": "masking", "name": "span", "batch": 256, "seq_len": 128, "step_ms": 0.2,
       "share_of_step": 0.005, **common},
      {"kind": "fit", "name": "mlmjax", "model": "large", "seq_len": 512, "remat": True,
       "largest_batch": 512, "first_oom": 1024, "limit_reached": False},
  ]
  text = bench.report(records, "H100")
  lines = text.splitlines()
  assert lines[0] == "### H100"
  table = [l for l in lines if l.startswith("| ")]
  assert table[1].startswith("| mlmjax | base | 256×128 | 820,000 |")  # ours first
  assert "2.05× HF torch.compile" in table[1]
  assert "0.50% of the step" in table[-1]
  assert "= 2.05× (goal ≥ 2×)" in text and "93% of s128" in text
  assert "largest batch that trains = 512" in text


def test_cli_report(tmp_path):
  records = [{"kind": "train", "name": "mlmjax", "model": "tiny", "batch": 2, "seq_len": 16,
              "tokens_per_s": 100.0, "step_ms": 320.0, "device": "cpu"}]
  path = tmp_path / "r.json"
  path.write_text(json.dumps(records))
  shown = subprocess.run([sys.executable, "-m", "mlmjax.cli", "bench-train", f"--report={path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert shown.returncode == 0, shown.stderr[-2000:]
  assert "| mlmjax | tiny | 2×16 | 100 | 320.0 |" in shown.stdout


def test_cli_times_a_step_and_its_trace_summarises(tmp_path):
  """The command end to end (as bench/gpu_report.sh runs it), then `mlmjax.bench.trace` on the
  profile it wrote."""
  out = tmp_path / "r.json"
  run = subprocess.run(
      [sys.executable, "-m", "mlmjax.cli", "bench-train", "--config=configs/bench.py:tiny", "--steps=2", "--warmup=1",
       "--windows=1", "--config.train.batch_size=2", "--config.data.seq_len=16",
       "--name=mlmjax, variant", f"--profile_dir={tmp_path / 'trace'}", f"--json_out={out}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  assert "train step compiled in" in run.stderr  # the phase lines
  (record,) = json.loads(out.read_text())
  assert record["name"] == "mlmjax, variant" and record["tokens_per_s"] > 0
  summary = subprocess.run([sys.executable, "-m", "mlmjax.cli", "bench-trace", str(tmp_path / "trace")],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert summary.returncode == 0, summary.stderr[-2000:]
  assert "ms per step over 3 steps" in summary.stdout and "| operation |" in summary.stdout


def test_report_shows_variants_against_the_unchanged_step():
  base = {"kind": "train", "name": "mlmjax", "model": "base", "batch": 256, "seq_len": 128,
          "tokens_per_s": 400.0, "step_ms": 80.0, "device": "gpu"}
  variant = {**base, "name": "mlmjax, no dropout", "tokens_per_s": 500.0, "step_ms": 64.0}
  table = bench.report([base, variant])
  assert "| mlmjax, no dropout | base | 256×128 | 500 | 64.0 |" in table
  assert "1.25× mlmjax |" in table
