"""The workdir's lock: one owner at a time, locally (flock) and on a bucket (a lease)."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

import gcs_fixture
from helpers import load_config
from mlmjax import storage
from mlmjax import workdir as workdir_lib
from mlmjax.experiments import compare

BUCKET = f"gs://{gcs_fixture.BUCKET}"


@contextlib.contextmanager
def held_by_another_process(workdir: str):
  """`workdir`'s lock, held by a child process for the duration; the child."""
  holder = subprocess.Popen(
      [sys.executable, "-c", "import time; from mlmjax import workdir as w\n"
       f"with w.owned({workdir!r}):\n  print('held', flush=True); time.sleep(600)"],
      stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    yield holder
  finally:
    holder.kill()  # kill -9
    holder.wait()


def test_a_local_workdir_has_one_owner_and_a_dead_owners_lock_is_free(tmp_path):
  workdir = str(tmp_path / "run")
  with workdir_lib.owned(workdir):
    owner = json.loads((tmp_path / "run" / workdir_lib.LOCK).read_text())
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    with pytest.raises(workdir_lib.WorkdirError,
                       match=f"is in use by .* \\(pid {os.getpid()} on {socket.gethostname()}"):
      with workdir_lib.owned(workdir):
        pass
  with workdir_lib.owned(workdir):  # released
    pass
  with held_by_another_process(workdir) as holder:
    with pytest.raises(workdir_lib.WorkdirError, match=f"pid {holder.pid}"):
      with workdir_lib.owned(workdir):
        pass
  with workdir_lib.owned(workdir):  # its owner was killed with -9: free at once
    pass


def test_a_comparison_is_refused_in_a_workdir_someone_owns(tmp_path):
  with held_by_another_process(str(tmp_path)):
    with pytest.raises(workdir_lib.WorkdirError, match="is in use by"):
      compare.compare(load_config("compare"), str(tmp_path))


def test_the_processes_of_a_job_refuse_together(tmp_path):
  """Process 0 takes the lock and every process gets its answer (threads stand in for the
  processes; `agree` does what `loop.owned` passes, JAX's broadcast from process 0)."""
  shared, barrier, results = {}, threading.Barrier(2), {}

  def process(index: int) -> None:
    def agree(message: str) -> str:
      if index == 0:
        shared["message"] = message
      barrier.wait()
      return shared["message"]
    try:
      with workdir_lib.owned(str(tmp_path), is_main=index == 0, agree=agree):
        results[index] = "owned"
    except workdir_lib.WorkdirError as e:
      results[index] = str(e)

  with held_by_another_process(str(tmp_path)):
    threads = [threading.Thread(target=process, args=(i,)) for i in (0, 1)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
  assert results[0] == results[1] and "is in use by" in results[0]


def test_a_read_only_or_missing_parent_is_said_plainly(tmp_path):
  (tmp_path / "file").write_text("not a folder")
  with pytest.raises(workdir_lib.WorkdirError, match="cannot be written"):
    with workdir_lib.owned(str(tmp_path / "file" / "run")):
      pass


def test_a_lease_on_a_bucket(gcs):
  del gcs
  workdir = f"{BUCKET}/leased"
  lock = storage.join(workdir, workdir_lib.LOCK)
  with workdir_lib.owned(workdir):
    held = storage.read_json(lock)
    assert held["pid"] == os.getpid() and time.time() - held["renewed"] < 60
    with pytest.raises(workdir_lib.WorkdirError, match="renewed its lease .* s ago"):
      with workdir_lib.owned(workdir):
        pass
  assert not lock.exists()  # released: the file goes
  # A lease left by a run that is gone: expired, or a process of this host that ended.
  for left in ({"pid": 1, "host": "elsewhere", "renewed": time.time() - 10 * workdir_lib.LEASE_S},
               {"pid": _ended_pid(), "host": socket.gethostname(), "renewed": time.time()}):
    storage.write_json(lock, {"command": "mlmjax-train", "since": "earlier", **left})
    with workdir_lib.owned(workdir):
      assert storage.read_json(lock)["pid"] == os.getpid()
  # A live lease of another host is respected.
  storage.write_json(lock, {"command": "mlmjax-train", "pid": 7, "host": "another-host",
                            "since": "now", "renewed": time.time()})
  with pytest.raises(workdir_lib.WorkdirError, match="pid 7 on another-host"):
    with workdir_lib.owned(workdir):
      pass


def test_a_bucket_that_does_not_exist_is_said_plainly(gcs):
  del gcs
  with pytest.raises(workdir_lib.WorkdirError,
                     match="The bucket gs://no-such-bucket-here does not exist"):
    with workdir_lib.owned("gs://no-such-bucket-here/run"):
      pass


def _ended_pid() -> int:
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid
