"""The largest-batch search, its steps faked (no device memory is filled)."""

from types import SimpleNamespace

import pytest

from bench import fit, report
from bench import train as bench_train
from helpers import load_config


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


def test_fit_search_catches_only_out_of_memory(monkeypatch):
  config = load_config("bench", "tiny")

  def fake_bench(setup, **kwargs):  # out of memory above 8 rows, as XLA says it
    if setup.config.train.batch_size > 8:
      raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
    return {"planned_gib": 1.0 + 0.5 * setup.config.train.batch_size}
  monkeypatch.setattr(bench_train, "setup", lambda config: SimpleNamespace(config=config))
  monkeypatch.setattr(bench_train, "bench_train", fake_bench)
  partial = []
  r = fit.bench_fit(config, start=2, limit=64, refine=0, model="tiny", on_try=partial.append)
  assert (r["largest_batch"], r["first_oom"], r["limit_reached"]) == (8, 16, False)
  assert r["tried"] == {"2": True, "4": True, "8": True, "16": False} and r["done"]
  assert [p["largest_batch"] for p in partial] == [2, 4, 8, 8]  # one record per try
  assert r["planned_gib"] == {"2": 2.0, "4": 3.0, "8": 5.0}
  assert not partial[-1]["done"] and "cut short" in report.fit_line(partial[1])
  assert "largest batch that trains = 8; first batch out of memory: 16" in report.fit_line(r)

  def broken(setup, **kwargs):
    raise ValueError("not a memory problem")
  monkeypatch.setattr(bench_train, "bench_train", broken)
  with pytest.raises(ValueError, match="not a memory"):
    fit.bench_fit(config, start=2, limit=64, refine=0)
