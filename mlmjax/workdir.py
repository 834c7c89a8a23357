"""The workdir: what a run keeps where, which config changes a run survives, and its owner.

Layout (README's table): `tokenizer/`, `data/` (the prepared rows and their manifest),
`checkpoints/` (Orbax), `tensorboard/` (event files and `metrics.jsonl`), `config.json`,
`eval_results.json`, `curves.png`, `lock.json`. Every module names them from here.

The owner: one job at a time trains (or prepares) in a workdir.

Two trainers in one workdir would write the same checkpoints over each other, so a command that
writes there first takes the workdir's lock, `WORKDIR/lock.json`, and a second one is refused at
once with the owner's name (command, host, pid, since when). With several processes (the hosts
of a cluster) the job is the owner: process 0 takes the lock and every process gets its answer.

- Local folder (or a shared filesystem with locks, such as NFS): `flock` on the file. The kernel
  drops it when its process ends, `kill -9` included, so a lock left by a killed run is free at
  once; the file itself only names the last owner.
- Bucket (gs://, no locks there): a lease. The owner writes the file and renews it every
  `RENEW_S`; another command refuses while it was renewed less than `LEASE_S` ago. A lease
  whose owner is gone is taken over: at once when it names a process of this host that no
  longer runs, otherwise once it has expired.

Taking the lock is also the first write: a workdir that cannot be written (a read-only mount,
no permission) is refused here, before any work, with the reason.
"""

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time

from mlmjax import storage

# The workdir's layout.
TOKENIZER, DATA, CHECKPOINTS, TENSORBOARD = "tokenizer", "data", "checkpoints", "tensorboard"
METRICS = "metrics.jsonl"  # in TENSORBOARD: every logged scalar, one JSON object per line
CONFIG, RESULTS, CURVES, LOCK = "config.json", "eval_results.json", "curves.png", "lock.json"

# Keys that leave a run's results as they are (up to float rounding, as a new mesh does):
# logging, evaluation and checkpoint cadence, the hardware layout, kernels, how the work is
# split. A finished comparison run is reused across them (experiments/compare.py).
EXECUTION_KEYS = ("train.log_every", "train.eval_every", "train.eval_batches",
                  "train.checkpoint_every", "train.keep_checkpoints", "train.allow_config_change",
                  "train.max_consecutive_skips", "train.grad_accum_steps", "train.init_on",
                  "model.attention", "model.remat_policy", "model.scan_layers", "mesh.",
                  "data.num_workers")
# Keys that may differ between a checkpoint's config and the resuming run's: those, and what
# changes the numbers without making it another experiment: the run's length, the compute
# dtype, where dropout's bits come from, the data (a new training phase). Anything else means
# another experiment (train/loop.py refuses it).
RESUMABLE_CHANGES = EXECUTION_KEYS + ("train.steps", "train.stop_after", "model.dtype",
                                      "model.dropout_impl", "data.", "init_from_hf")


def metrics_file(workdir):
  """The run's `metrics.jsonl` (a path or URL, through `storage`)."""
  return storage.join(workdir, TENSORBOARD, METRICS)


def read_metrics(path) -> dict[str, list[tuple[int, float]]]:
  """{metric: [(step, value)] sorted by step} from a `metrics.jsonl`; a step logged twice (a
  resumed run) keeps its last value; {} when there is none yet."""
  p = storage.path(path)
  if not p.exists():
    return {}
  by_step: dict[str, dict[int, float]] = {}
  for line in p.read_text(encoding="utf-8").splitlines():
    if not line.strip():
      continue
    record = json.loads(line)
    step = record.pop("step")
    for name, value in record.items():
      by_step.setdefault(name, {})[step] = value
  return {name: sorted(values.items()) for name, values in by_step.items()}


LEASE_S = 120.0  # a bucket lease not renewed for this long belongs to a run that is gone
RENEW_S = 30.0


class WorkdirError(ValueError):
  """The workdir cannot be used now; the message says why and what to do."""


def _owner() -> dict:
  command = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
  return {"command": command, "host": socket.gethostname(), "pid": os.getpid(),
          "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def _describe(owner: dict) -> str:
  return (f"{owner.get('command', 'another command')} (pid {owner.get('pid')} on "
          f"{owner.get('host')}, since {owner.get('since')})")


def _unwritable(workdir: str, error: OSError) -> WorkdirError:
  reason = {errno.EROFS: "is on a read-only filesystem", errno.EACCES: "is not writable",
            errno.EPERM: "is not writable", errno.ENOSPC: "is on a full disk"}.get(
                error.errno, f"cannot be written ({error.strerror})")
  return WorkdirError(f"--workdir={workdir} {reason}; choose a folder this user can write to.")


class _FileLock:
  """flock on WORKDIR/lock.json, held while the file stays open."""

  def __init__(self, workdir: str):
    path = os.path.join(workdir, LOCK)
    try:
      os.makedirs(workdir, exist_ok=True)
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise _unwritable(workdir, e) from e
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      with os.fdopen(fd, encoding="utf-8") as f:
        text = f.read()
      owner = json.loads(text) if text.strip() else {}
      raise WorkdirError(f"{workdir} is in use by {_describe(owner)}; wait for it to end or "
                         "stop it, or give another --workdir.") from None
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, json.dumps(_owner()).encode("utf-8"), 0)
    except OSError as e:
      os.close(fd)
      raise _unwritable(workdir, e) from e
    self._fd = fd

  def release(self) -> None:
    os.close(self._fd)  # drops the flock


class _Lease:
  """A renewed lease in WORKDIR/lock.json on an object store."""

  def __init__(self, workdir: str):
    self._path = storage.join(workdir, LOCK)
    try:
      held = storage.read_json(self._path)
      self._take(workdir, held)
    except OSError as e:  # the store itself: a bucket that is not there, a network that is not
      raise storage.explain(workdir, e) from e
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._renew, daemon=True, name="mlmjax-lease")
    self._thread.start()

  def _take(self, workdir: str, held: dict | None) -> None:
    if held is not None and not self._gone(held):
      raise WorkdirError(
          f"{workdir} is in use by {_describe(held)}, which renewed its lease "
          f"{time.time() - held.get('renewed', 0):.0f} s ago; wait for it to end or stop it, "
          f"or give another --workdir. (A lease not renewed for {LEASE_S:.0f} s is taken "
          "over.)")
    self._owner = _owner()
    self._write()
    time.sleep(0.5)  # two commands starting together: the last write wins, the other leaves
    if storage.read_json(self._path) != self._record:
      raise WorkdirError(f"{workdir} was taken by another command at the same moment; give "
                         "another --workdir or try again.")

  @staticmethod
  def _gone(held: dict) -> bool:
    if time.time() - held.get("renewed", 0) > LEASE_S:
      return True
    if held.get("host") == socket.gethostname() and held.get("pid"):
      try:
        os.kill(int(held["pid"]), 0)
      except ProcessLookupError:
        return True  # a process of this machine that no longer runs
      except PermissionError:
        return False
    return False

  def _write(self) -> None:
    self._record = {**self._owner, "renewed": time.time()}
    storage.write_json(self._path, self._record)

  def _renew(self) -> None:
    while not self._stop.wait(RENEW_S):
      try:
        self._write()
      except Exception:  # pylint: disable=broad-except
        pass  # a store that is away: the next renewal tries again; the run reports its own

  def release(self) -> None:
    self._stop.set()
    self._thread.join()
    with contextlib.suppress(Exception):
      if storage.read_json(self._path) == self._record:
        self._path.unlink()


@contextlib.contextmanager
def owned(workdir: str, *, is_main: bool = True, agree=None):
  """Holds the workdir's lock for the duration (see the module docstring); the owner is named
  after this program (`sys.argv[0]`: mlmjax-train, mlmjax-compare, ...).

  Args:
    workdir: a local folder or a URL.
    is_main: whether this process takes the lock (process 0 of a job).
    agree: with several processes, a function that gives every process process 0's value
      (`multihost_utils.broadcast_one_to_all` for a string), so that all of them refuse together.
  Raises:
    WorkdirError: the workdir is owned by another command, cannot be written, or is in a
      bucket that does not exist or cannot be reached.
  """
  lock, refusal = None, ""
  if is_main:
    try:
      lock = (_Lease if storage.is_url(workdir) else _FileLock)(workdir)
    except (WorkdirError, storage.StorageError) as e:
      refusal = str(e)
  if agree is not None:
    refusal = agree(refusal)
  if refusal:
    if lock is not None:
      lock.release()
    raise WorkdirError(refusal)
  try:
    yield
  finally:
    if lock is not None:
      lock.release()
