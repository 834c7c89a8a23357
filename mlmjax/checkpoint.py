"""Orbax checkpoints of the train state, the data iterator and the run's metadata.

A checkpoint is one step directory with three items: `state` (params, optimizer, step, masking
state), `data` (the grain iterator, so a resumed run sees the batches an uninterrupted one
would) and `meta` (config, tokenizer hash, model shape). Saves are asynchronous: training goes
on while the arrays are written; Orbax commits a step directory atomically, so a half-written
checkpoint is never taken for a good one.

The state is always restored into an abstract target that carries the current mesh's
shardings, so a checkpoint written on one mesh restores onto another.
"""

import contextlib
import os
import signal
import threading

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from mlmjax import storage
from mlmjax import workdir as workdir_lib

BEST_METRIC = "eval_loss"  # the checkpoint with the lowest one is kept besides the latest
# What a checkpoint holds besides the state's arrays: metadata, the data iterator's position,
# OCDBT's manifests (~0.15 MB for the tests' tiny model); counted with room to spare.
CHECKPOINT_OVERHEAD_BYTES = 1 << 20


ITEMS = ("state", "data", "meta")  # train state, data-iterator position, config and model


def open_for_reading(workdir) -> ocp.CheckpointManager | None:
  """The workdir's checkpoints, to read (nothing is created); None when it has none."""
  directory = storage.join(workdir, workdir_lib.CHECKPOINTS)
  if not directory.is_dir():
    return None
  return ocp.CheckpointManager(directory, item_names=ITEMS,
                               options=ocp.CheckpointManagerOptions(create=False))


def make_manager(workdir, *, save_every: int, keep: int) -> ocp.CheckpointManager:
  """Saves every `save_every` steps (and on preemption); keeps the last `keep` and the best.

  `workdir` is a local folder or an object-store URL (gs://bucket/run): the checkpoints go to
  its `checkpoints/` folder either way (TensorStore writes the arrays to the bucket itself).
  """
  policies = ocp.checkpoint_managers
  options = ocp.CheckpointManagerOptions(
      # Every `save_every` steps, and at once when the cluster announces a preemption.
      save_decision_policy=policies.AnySavePolicy([
          policies.FixedIntervalPolicy(max(int(save_every), 1)),
          policies.PreemptionCheckpointingPolicy()]),
      preservation_policy=policies.AnyPreservationPolicy([
          policies.LatestN(max(int(keep), 1)),
          policies.BestN(get_metric_fn=lambda metrics: metrics[BEST_METRIC], reverse=True, n=1,
                         keep_checkpoints_without_metrics=False)]),
      enable_async_checkpointing=True,
      cleanup_tmp_directories=True,  # a save killed half-way leaves a tmp dir: never restored
  )
  return ocp.CheckpointManager(storage.join(workdir, workdir_lib.CHECKPOINTS),
                               options=options, item_names=ITEMS)


def save(manager: ocp.CheckpointManager, step: int, state, data_iterator, meta: dict,
         *, force: bool = False, metrics: dict | None = None) -> bool:
  """Saves if the policy says so (or `force`); returns whether a save started.

  `metrics` (with BEST_METRIC) mark the checkpoint as a candidate for "best". A save that
  fails (now, or an earlier asynchronous one) raises an error that says why (`_explained`).
  """
  args = ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=grain.checkpoint.CheckpointSave(data_iterator),
      meta=ocp.args.JsonSave(meta))
  with _explained(manager, step):
    return manager.save(int(step), args=args, force=force, metrics=metrics)


def wait(manager: ocp.CheckpointManager) -> None:
  """Waits for the asynchronous saves to end; one that failed raises (`_explained`)."""
  with _explained(manager, manager.latest_step()):
    manager.wait_until_finished()


def space_problem(manager: ocp.CheckpointManager, state) -> str:
  """Why the disk of a local checkpoint directory cannot take the next save ("" if it can).

  Checked before a save starts, so that a full disk stops the run with this message instead of
  failing in Orbax's writer threads. Waits for the save under way first (the next one would
  wait for it anyway), so that what it wrote is counted. The next save needs about what the
  last committed one took on disk (before the first: the state's bytes) plus
  CHECKPOINT_OVERHEAD_BYTES, with 10% to spare: the old checkpoints go only after it is
  committed.
  """
  wait(manager)
  directory = manager.directory
  free = storage.free_bytes(directory)
  if free is None:
    return ""
  latest = committed_step(manager)
  on_disk = _folder_bytes(directory / str(latest)) if latest is not None else 0
  state_bytes = sum(x.nbytes for x in jax.tree.leaves(state) if hasattr(x, "nbytes"))
  needed = int(1.1 * max(on_disk, state_bytes + CHECKPOINT_OVERHEAD_BYTES))
  if free >= needed:
    return ""
  kept = f"checkpoint {latest} stays" if latest is not None else "no checkpoint was saved yet"
  return (f"No space for the next checkpoint in {directory}: it needs about "
          f"{storage.megabytes(needed)} and its disk has {storage.megabytes(free)} free. "
          f"Free some space (or move --workdir to a larger disk) and run the same command "
          f"again: it resumes from the last checkpoint ({kept}).")


def committed_step(manager: ocp.CheckpointManager) -> int | None:
  """The newest step whose checkpoint is complete (Orbax's latest_step also names one that is
  still being written)."""
  for step in sorted(manager.all_steps(), reverse=True):
    if (manager.directory / str(step)).exists():
      return step
  return None


def _folder_bytes(folder) -> int:
  return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(folder)
             for n in names)


@contextlib.contextmanager
def _explained(manager: ocp.CheckpointManager, step):
  """Orbax's errors of a save as one that says what happened and what to do."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    directory = manager.directory
    if storage.is_url(directory):  # listing a store that fails would only fail again, slowly
      kept = "the checkpoints committed before stay"
    else:
      latest = committed_step(manager)
      kept = (f"the last good checkpoint, {latest}, stays" if latest is not None
              else "no checkpoint was complete yet")
    if storage.is_no_space(e):
      raise storage.NoSpaceError(
          f"The disk of {directory} filled up while checkpoint {step} was written ({kept}). "
          "Free some space (or move --workdir to a larger disk) and run the same command "
          "again.") from e
    if storage.is_url(directory):
      explained = storage.explain(os.fspath(directory), e,
                                  f"Writing checkpoint {step} to {directory} ({kept})")
      raise storage.StorageError(f"{explained} Then run the same command again.") from e
    raise


def restore_latest_good(manager: ocp.CheckpointManager, abstract_state, data_iterator,
                        meta_check) -> tuple[object, dict] | tuple[None, None]:
  """The newest checkpoint that restores, newest first; (None, None) if there is none.

  A checkpoint that fails to read (truncated or corrupted files) is skipped with a warning that
  names it, and the one before it is used. `meta_check(saved_meta)` may raise to refuse the
  workdir (another model, tokenizer or config), and returns whether the data config is the
  same (else the iterator starts afresh).
  """
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      meta = read_meta(manager, step)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("Checkpoint %s/%d is unreadable (%s: %s); trying the previous one.",
                      manager.directory, step, type(e).__name__, e)
      continue
    same_data = meta_check(meta)
    try:
      return restore(manager, step, abstract_state, data_iterator if same_data else None), meta
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("Checkpoint %s/%d is unreadable (%s: %s); trying the previous one.",
                      manager.directory, step, type(e).__name__, str(e)[:500])
  return None, None


class PreemptionNotice:
  """Tells the loop when to save and stop because the scheduler is taking the machine back.

  Cloud TPU and SLURM send SIGTERM. With several processes, JAX's preemption service (started
  by `jax.distributed.initialize`) catches it and all processes agree on the step to save at;
  a single process installs its own SIGTERM handler.
  """

  def __init__(self):
    self._event = threading.Event()
    self._multi = jax.process_count() > 1
    if not self._multi and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self._event.set())

  def reached(self, step: int) -> bool:
    """Call at every step, on every process: True at the step to save at."""
    if self._multi:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._event.is_set()

  def close(self) -> None:
    if not self._multi and hasattr(self, "_previous"):
      signal.signal(signal.SIGTERM, self._previous)


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict:
  return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def restore(manager: ocp.CheckpointManager, step: int, abstract_state, data_iterator=None):
  """Restores `state` onto the shardings in `abstract_state`, and the iterator in place.

  With `data_iterator=None` only the state is restored: the data starts afresh (a new
  training phase, e.g. BERT's switch from 128- to 512-token rows).
  """
  logging.info("Restoring checkpoint at step %d from %s", step, manager.directory)
  items = {"state": ocp.args.StandardRestore(abstract_state)}
  if data_iterator is not None:
    items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
  return manager.restore(step, args=ocp.args.Composite(**items))["state"]


def restore_params(manager: ocp.CheckpointManager, step: int, abstract_params):
  """Only the parameters of the state at `step`, onto the shardings in `abstract_params` (the
  optimizer's moments, twice their size, stay on disk): what inference and export need."""
  target = {"params": abstract_params}
  item = ocp.args.PyTreeRestore(target, partial_restore=True,
                                restore_args=ocp.checkpoint_utils.construct_restore_args(target))
  return manager.restore(step, args=ocp.args.Composite(state=item))["state"]["params"]
