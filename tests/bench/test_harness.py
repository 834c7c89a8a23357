"""The benchmarks' timer and record files (what is called when, not how long it takes)."""

from bench import harness


def _recorder():
  events = []

  def run():
    events.append("run")
    return len(events)

  return events, run


def test_windows_end_in_a_sync_of_their_last_output():
  events, run = _recorder()
  synced = []
  times = harness.time_calls(run, lambda out: synced.append(out) or events.append("sync"),
                             calls=6, windows=3)
  assert len(times) == 3 and all(t >= 0 for t in times)
  assert events == ["run", "run", "sync"] * 3
  assert synced == [2, 5, 8]  # each window's last output (len(events) when it ran)


def test_warm_up_by_count_and_idle_before_each_window():
  events, run = _recorder()
  harness.time_calls(run, lambda _: events.append("sync"), calls=2, windows=2, warmup=2,
                     idle=lambda: events.append("idle"))
  assert events == ["run", "sync"] * 2 + ["idle", "run", "sync"] * 2


def test_more_windows_than_calls_is_one_call_a_window():
  events, run = _recorder()
  assert len(harness.time_calls(run, lambda _: None, calls=2, windows=5)) == 2
  assert events == ["run", "run"]


def test_records_round_trip_through_json_files(tmp_path):
  a, b = [{"kind": "train", "name": "x"}], [{"kind": "masking", "name": "y"}]
  harness.write_records(str(tmp_path / "deep" / "a.json"), a)
  harness.write_records(str(tmp_path / "b.json"), b)
  harness.write_records("", a)  # no path: nothing written
  paths = [str(tmp_path / "deep" / "a.json"), str(tmp_path / "none.json"),
           str(tmp_path / "b.json")]
  assert harness.load_records(paths) == a + b
