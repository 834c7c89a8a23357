"""Orbax checkpoints of the train state, the data iterator and the run's metadata.

A checkpoint is one step directory with three items: `state` (params, optimizer, step, masking
state), `data` (the grain iterator, so a resumed run sees the batches an uninterrupted one
would) and `meta` (config, tokenizer hash, model shape). Saves are asynchronous: training goes
on while the arrays are written; Orbax commits a step directory atomically, so a half-written
checkpoint is never taken for a good one.

The state is always restored into an abstract target that carries the current mesh's
shardings, so a checkpoint written on one mesh restores onto another.
"""

import os

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging


def make_manager(workdir: str, *, save_every: int, keep: int) -> ocp.CheckpointManager:
  policies = ocp.checkpoint_managers
  options = ocp.CheckpointManagerOptions(
      # Every `save_every` steps, and at once when the cluster announces a preemption.
      save_decision_policy=policies.AnySavePolicy([
          policies.FixedIntervalPolicy(max(int(save_every), 1)),
          policies.PreemptionCheckpointingPolicy()]),
      max_to_keep=max(int(keep), 1),
      enable_async_checkpointing=True,
      cleanup_tmp_directories=True,  # a save killed half-way leaves a tmp dir: never restored
  )
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                               options=options, item_names=("state", "data", "meta"))


def save(manager: ocp.CheckpointManager, step: int, state, data_iterator, meta: dict,
         *, force: bool = False) -> bool:
  """Saves if the interval says so (or `force`); returns whether a save started."""
  args = ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=grain.checkpoint.CheckpointSave(data_iterator),
      meta=ocp.args.JsonSave(meta))
  return manager.save(int(step), args=args, force=force)


def abstract_like(state):
  """ShapeDtypeStructs with the shardings of `state` (a restore target on the current mesh)."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


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
