"""The training loop: `train_and_evaluate(config, workdir)` reads top to bottom.

Data preparation (cached), the components of `state.py` (model, masker, optimizer, the train
state created already sharded on the mesh, the jitted steps), then only the loop: periodic
metrics, evaluation with fixed masks against the most-frequent-token baseline, asynchronous
Orbax checkpoints, preemption, and resume from the workdir.
"""

import dataclasses
import json
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging
from jax.experimental import multihost_utils

from mlmjax import checkpoint, storage
from mlmjax import config as config_lib
from mlmjax import workdir as workdir_lib
from mlmjax.data import pipeline, prepare, stats as data_stats, tokenizer as tokenizer_lib
from mlmjax.model.config import ModelConfig
from mlmjax.train import curves
from mlmjax.train import metrics as metrics_lib
from mlmjax.train import partition
from mlmjax.train import state as state_lib
from mlmjax.train import step as step_lib
from mlmjax.train.step import TrainState

EVAL_STREAM = 1_000_003  # eval masks use their own fixed key, never a training one


def evaluate(eval_fn, state: TrainState, batches: list, seed: int, mesh) -> dict:
  """Validation loss, accuracy and the baseline's accuracy, on the same fixed masks every time."""
  eval_key = jax.random.fold_in(jax.random.key(seed), EVAL_STREAM)
  totals = None
  for i, batch in enumerate(batches):
    out = eval_fn(state.params, state.mask_state, partition.global_batch(batch, mesh),
                  jax.random.fold_in(eval_key, i))
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  totals = jax.device_get(totals)
  count = max(float(totals["count"]), 1.0)
  return {
      "eval_loss": float(totals["loss_sum"]) / count,
      "eval_accuracy": float(totals["correct"]) / count,
      "eval_baseline_accuracy": float(totals["baseline_correct"]) / count,
      "eval_predictions": float(totals["count"]),
  }


def train_and_evaluate(config, workdir: str,
                       init_params: Callable[[ModelConfig], dict] | None = None) -> dict:
  """Trains per `config`, resuming from `workdir` if it holds checkpoints; returns final eval.

  `init_params(model_cfg)`, when given, returns the starting parameters of a fresh run as
  {"bert/embeddings/...": array} (continued pretraining; the optimizer starts afresh). The
  command line and `mlmjax.pretrain` pass Hugging Face weights this way (`config.init_from_hf`).
  """
  if config.init_from_hf and init_params is None:
    raise ValueError("The training loop takes starting parameters as init_params; for "
                     "config.init_from_hf call mlmjax.pretrain.train_and_evaluate(config, "
                     "workdir), which reads the Hugging Face folder.")
  workdir = os.fspath(storage.path(workdir))  # a local path made absolute; a URL kept
  with owned(workdir):  # one job trains in a workdir: a second is refused at once
    manifest, tokenizer, tables = _prepare_data(config, workdir)
    c = state_lib.build(config, tables, tokenizer.get_vocab_size(),
                        manifest["tokenizer"]["roles"]["pad"],
                        train_rows=manifest["splits"]["train"]["rows"])
    with partition.mesh_context(c.mesh, config.mesh.axis_rules):
      return _train(config, workdir, c, manifest, tokenizer, init_params)


def owned(workdir: str):
  """The workdir's lock (`mlmjax.workdir`), held by this job: process 0 takes it, and every
  process gets its answer, so all of them refuse together."""
  several = jax.process_count() > 1
  return workdir_lib.owned(workdir, is_main=jax.process_index() == 0,
                           agree=process0_says if several else None)


def process0_says(message: str, size: int = 4096) -> str:
  """Process 0's `message` (UTF-8, at most `size` bytes), on every process: a host sync."""
  data = np.zeros(size, np.uint8)
  encoded = message.encode("utf-8")[:size]
  data[:len(encoded)] = np.frombuffer(encoded, np.uint8)
  agreed = np.asarray(multihost_utils.broadcast_one_to_all(data))
  return agreed.tobytes().rstrip(b"\0").decode("utf-8", "replace")


def _prepare_data(config, workdir: str):
  """(manifest, tokenizer, vocabulary tables with corpus statistics) of the prepared data.

  Prepared once into the workdir (local or a bucket), reused by later runs. With several
  processes every one prepares its share of the shards (`prepare.prepare`), meeting at
  barriers; then each reads the same manifest.
  """
  sync = (multihost_utils.sync_global_devices if jax.process_count() > 1
          else lambda name: None)
  manifest = prepare.prepare(config.data, workdir, process_index=jax.process_index(),
                             process_count=jax.process_count(), sync=sync)
  tokenizer = tokenizer_lib.get_tokenizer(config.data, workdir)
  return manifest, tokenizer, data_stats.vocab_tables(tokenizer, manifest)


def _restore_or_init(config, c, manager, data_iter, meta: dict, init_params) -> TrainState:
  """The latest good checkpoint of this experiment, else a fresh state."""
  def check_saved(saved: dict) -> bool:
    check_compatible(saved, meta)
    check_same_experiment(saved["config"], meta["config"], config.train.allow_config_change)
    same_data = not any(k.startswith("data.")
                        for k in config_changes(saved["config"], meta["config"]))
    if not same_data:  # a new phase (e.g. seq 128 -> 512): the model goes on, the data restarts
      logging.warning("The data config changed since the checkpoint: continuing the model on "
                      "the new data from its first batch.")
    return same_data

  state, _ = checkpoint.restore_latest_good(manager, c.abstract_state, data_iter, check_saved)
  if state is None:
    state = c.init_state(jax.random.key(config.seed))
    if init_params is not None:
      state = state.replace(params=state_lib.place_params(init_params(c.model_cfg), c))
  return state


class Throughput:
  """Tokens/s, step time and MFU over the steps since the window last restarted."""

  def __init__(self, config, c):
    self.tokens_per_step = config.train.batch_size * config.data.seq_len
    self.flops_per_token = metrics_lib.flops_per_token(c.model_cfg, config.data.seq_len,
                                                       config.masking.max_predictions)
    self.peak_flops = metrics_lib.peak_flops_per_device()
    self.restart()

  def restart(self) -> None:
    """Starts a new window (after a compile or an evaluation, which are not steps)."""
    self.start, self.steps = time.perf_counter(), 0

  def read(self) -> dict:
    """The window's scalars; the next window starts now."""
    seconds = time.perf_counter() - self.start
    tokens_per_second = self.steps * self.tokens_per_step / seconds
    tflops = self.flops_per_token * tokens_per_second / jax.device_count() / 1e12
    scalars = {"tokens_per_second": tokens_per_second, "step_seconds": seconds / self.steps,
               "model_tflops_per_device": tflops}
    if self.peak_flops:
      scalars["mfu"] = tflops * 1e12 / self.peak_flops
    self.restart()
    return scalars


def _train(config, workdir, c, manifest, tokenizer, init_params) -> dict:
  is_main = jax.process_index() == 0
  data_dir = manifest["data_dir"]
  baseline_token = state_lib.most_frequent_token(c.tables)
  eval_fn = state_lib.jit_eval_step(c, baseline_token)
  eval_batches = pipeline.eval_batches(data_dir, "validation", config.train.batch_size,
                                       config.train.eval_batches or None)
  run_eval = lambda state: evaluate(eval_fn, state, eval_batches, config.seed, c.mesh)
  data_iter = iter(pipeline.make_loader(data_dir, "train", config.train.batch_size,
                                        seed=config.seed,
                                        shuffle_shards=config.data.shuffle_shards))

  # State: resume from the latest checkpoint, or initialise.
  manager = checkpoint.make_manager(workdir, save_every=config.train.checkpoint_every,
                                    keep=config.train.keep_checkpoints)
  meta = {"config": json.loads(config.to_json_best_effort()),
          "tokenizer_hash": manifest["tokenizer"]["sha256"],
          "model": dataclasses.asdict(c.model_cfg)}
  state = _restore_or_init(config, c, manager, data_iter, meta, init_params)

  writer = metrics_lib.MetricWriter(storage.join(workdir, workdir_lib.TENSORBOARD),
                                    enabled=is_main)
  if is_main:
    storage.write_text(storage.join(workdir, workdir_lib.CONFIG),
                       config.to_json_best_effort(indent=2))

  def save(step, state, *, force=False, metrics=None) -> bool:
    """A checkpoint if the policy says so; the metrics are flushed with it (for a bucket
    workdir: uploaded), so a run that dies later still has its curves up to the checkpoint.
    A disk too full for it stops the run here, on every process, before anything is written."""
    if force or manager.should_save(step):  # the manager's own policy decides
      problem = checkpoint.space_problem(manager, state) if is_main else ""
      if jax.process_count() > 1:
        problem = process0_says(problem)
      if problem:
        raise storage.NoSpaceError(problem)
    started = checkpoint.save(manager, step, state, data_iter, meta, force=force,
                              metrics=metrics)
    if started:
      writer.flush()
    return started

  # SIGTERM (preemption) is noticed from here to the end, never fatal: during the steps the
  # current step is saved and the run stops; after them the final evaluation and save finish.
  preemption = checkpoint.PreemptionNotice()
  try:
    state, preempted = _run_steps(config, c, state, data_iter, run_eval, save, writer,
                                  preemption)
    checkpoint.wait(manager)
    if preempted:
      writer.close()
      _plot_curves(workdir, is_main)
      return {"step": int(jax.device_get(state.step)), "preempted": True}

    # The final evaluation, saved with the last checkpoint.
    results = run_eval(state)
    final_step = int(jax.device_get(state.step))
    if final_step not in manager.all_steps():
      save(final_step, state, force=True, metrics=results)
    checkpoint.wait(manager)
    writer.write_scalars(final_step, results)
    writer.close()
    results["step"] = final_step
    results["baseline_token"] = tokenizer.id_to_token(baseline_token)
    if is_main:
      storage.write_json(storage.join(workdir, workdir_lib.RESULTS), results)
    _plot_curves(workdir, is_main)
    return results
  finally:
    preemption.close()


def _plot_curves(workdir: str, is_main: bool) -> None:
  """workdir/curves.png: training and held-out loss and accuracy so far (process 0)."""
  if is_main:
    curves.plot(workdir_lib.metrics_file(workdir), storage.join(workdir, workdir_lib.CURVES))


def _run_steps(config, c, state, data_iter, run_eval, save, writer,
               preemption: checkpoint.PreemptionNotice) -> tuple[TrainState, bool]:
  """Steps from the state's step to the last one: (the state, whether it stopped preempted).

  Steps are dispatched, not waited for: the host runs ahead of the device and only blocks where
  it reads a result (logging, evaluation, a checkpoint), so host time never adds to the step.
  """
  start = int(jax.device_get(state.step))
  last = config.train.stop_after or config.train.steps
  logging.info("Training from step %d to %d on mesh %s", start, last, dict(c.mesh.shape))
  train_fn, train_key = state_lib.jit_train_step(config, c), jax.random.key(config.seed)
  compiled = None
  throughput = Throughput(config, c)
  # The metrics of the steps since the last log, summed on the device (see step.add_to_window).
  empty = window = state_lib.empty_window(c)
  bar = tqdm.tqdm(total=config.train.steps, initial=start, desc="train", dynamic_ncols=True,
                  disable=jax.process_index() != 0)
  try:
    for step in range(start + 1, last + 1):
      batch = partition.global_batch(next(data_iter), c.mesh)
      if compiled is None:  # compiled once, ahead of time: a changed shape fails, never recompiles
        compile_start = time.perf_counter()
        compiled = train_fn.lower(state, batch, train_key, window).compile()
        writer.write_scalars(step, {"compile_seconds": time.perf_counter() - compile_start})
        throughput.restart()
      state, window = compiled(state, batch, train_key, window)
      throughput.steps += 1
      bar.update(1)

      if step % config.train.log_every == 0 or step == last:  # the loop's one read per window
        scalars = step_lib.window_means(jax.device_get(window))
        window = empty
        check_consecutive_skips(int(scalars["consecutive_skips"]), step, config)
        scalars.update(throughput.read())
        writer.write_scalars(step, scalars)
        bar.set_postfix(loss=f"{scalars['loss']:.3f}", acc=f"{scalars['accuracy']:.3f}",
                        tok_s=f"{scalars['tokens_per_second']:,.0f}")
      eval_metrics = None
      if config.train.eval_every and step % config.train.eval_every == 0 and step < last:
        eval_metrics = run_eval(state)
        writer.write_scalars(step, eval_metrics)
        throughput.restart()
      # At the last step nothing is left to resume: a SIGTERM lets the final save and
      # evaluation run (they finish under it), not a preempted stop.
      if step < last and preemption.reached(step):
        save(step, state, force=True)
        logging.warning("Preempted: saved step %d; rerun the same command to resume.", step)
        return state, True
      # Evaluated steps are always saved, with their loss, so the best one can be kept.
      save(step, state, force=eval_metrics is not None, metrics=eval_metrics)
    return state, False
  finally:
    bar.close()


SHAPE_FIELDS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size")


def check_compatible(saved: dict, current: dict) -> None:
  """Refuses to resume a workdir written with another model shape or tokenizer.

  Settings that leave the parameters' shapes alone (dtype, attention kernel, remat, dropout)
  may change between runs.
  """
  shape = lambda model: {k: model.get(k) for k in SHAPE_FIELDS}
  if shape(saved.get("model", {})) != shape(current["model"]):
    raise ValueError(f"The checkpoint in this workdir has model {shape(saved.get('model', {}))}, "
                     f"but the config asks for {shape(current['model'])}. Use a new --workdir, "
                     "or restore the original config.model.")
  if saved.get("tokenizer_hash") != current["tokenizer_hash"]:
    raise ValueError("The checkpoint in this workdir was trained with another tokenizer than "
                     "the prepared data now uses. Use a new --workdir.")


def check_consecutive_skips(count: int, step: int, config) -> None:
  """Stops the run when too many updates in a row had a non-finite loss or gradient.

  Checked where the loop reads metrics anyway (every `log_every` steps and the last), so the
  check costs no wait for the device; a streak that ended before that step did no harm: its
  updates were skipped.
  """
  limit = config.train.max_consecutive_skips
  if limit and count >= limit:
    raise RuntimeError(f"{count} consecutive updates up to step {step} had a non-finite loss "
                       "or gradient and were skipped; the run stops here. The last checkpoint "
                       "holds only good updates. Lower config.train.learning_rate, check the "
                       "data, or raise config.train.max_consecutive_skips.")




def _flatten(tree: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def _as_run(saved: dict, current: dict) -> tuple[dict, dict]:
  """The flattened configs of a checkpoint and of this run. A key the saved config lacks was
  added to the schema after it was written: the saved run ran as its default does."""
  old, new = _flatten(saved), _flatten(current)
  defaults = _flatten(json.loads(config_lib.default_config().to_json_best_effort()))
  old.update({k: v for k, v in defaults.items() if k not in old and k in new})
  return old, new


def _differing(old: dict, new: dict) -> list[str]:
  return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def config_changes(saved: dict, current: dict) -> list[str]:
  """The flattened keys whose value differs between a checkpoint's config and this run's."""
  return _differing(*_as_run(saved, current))


def check_same_experiment(saved: dict, current: dict, allow_change: bool) -> None:
  """Refuses to resume a workdir written by another experiment's config (unless allowed)."""
  old, new = _as_run(saved, current)
  changed = [k for k in _differing(old, new)
             if not any(k == r or (r.endswith(".") and k.startswith(r))
                        for r in workdir_lib.RESUMABLE_CHANGES)]
  if changed and not allow_change:
    details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:8])
    raise ValueError(f"This workdir holds a run of another config ({details}). Use a new "
                     "--workdir, or pass --config.train.allow_config_change=True to continue "
                     "this run with the new settings.")
