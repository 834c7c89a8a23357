"""The training loop: `train_and_evaluate(config, workdir)` reads top to bottom.

Data preparation (cached), the model and train state created already sharded on the mesh, one
jitted train step with masking inside, periodic metrics, evaluation with fixed masks against the
most-frequent-token baseline, asynchronous Orbax checkpoints, and resume from the workdir.
"""

import dataclasses
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from mlmjax import checkpoint, masking
from mlmjax.data import pipeline, prepare, stats as data_stats, tokenizer as tokenizer_lib
from mlmjax.model.bert import BertConfig, BertForMaskedLM
from mlmjax.train import metrics as metrics_lib
from mlmjax.train import optim, partition
from mlmjax.train.step import TrainState, eval_step, train_step

EVAL_STREAM = 1_000_003  # eval masks use their own fixed key, never a training one


@dataclasses.dataclass(frozen=True)
class Components:
  """Everything that is built from the config once, before the loop."""
  model_cfg: BertConfig
  graphdef: nnx.GraphDef
  mesh: jax.sharding.Mesh
  tables: masking.VocabTables
  masker: object
  tx: object
  init_state: object  # jitted: key -> TrainState, already sharded
  abstract_state: TrainState  # ShapeDtypeStructs with shardings (restore target)


def build(config, vocab_tables: masking.VocabTables, vocab_size: int, pad_id: int,
          devices=None) -> Components:
  """Model config, mesh, masker, optimizer and the sharded state initialiser."""
  model_cfg = BertConfig.from_config(config.model, vocab_size=vocab_size, pad_token_id=pad_id)
  if config.data.seq_len > model_cfg.max_position_embeddings:
    raise ValueError(f"config.data.seq_len={config.data.seq_len} exceeds "
                     f"config.model.max_position_embeddings={model_cfg.max_position_embeddings}")
  mesh = partition.make_mesh(config.mesh.shape, devices)
  masker = masking.make_masker(config.masking, vocab_tables)
  tx = optim.make_optimizer(config.train)
  mask_state = masking.init_state(config.masking, vocab_tables)

  def init(key):
    model = BertForMaskedLM(model_cfg, rngs=nnx.Rngs(params=key))
    params = nnx.state(model, nnx.Param)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      mask_state=mask_state, skipped=jnp.zeros((), jnp.int32),
                      consecutive_skips=jnp.zeros((), jnp.int32))

  with partition.mesh_context(mesh, config.mesh.axis_rules):
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: BertForMaskedLM(model_cfg, rngs=nnx.Rngs(0))))
    shapes = jax.eval_shape(init, jax.random.key(config.seed))
    # Shardings straight from the parameters' logical-axis annotations under the rules, with no
    # compile (initialisers compile slowly: ~35 s for BERT-base on an H100). The AdamW moments
    # are built by mapping over the same annotated Param nodes, so they are sharded exactly like
    # their parameters (ZeRO-style under FSDP); counters and the like are replicated.
    shardings = nnx.get_named_sharding(shapes, mesh)
  abstract_state = jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
  init_sharded = jax.jit(init, out_shardings=shardings)

  def init_on_device(key):
    with partition.mesh_context(mesh, config.mesh.axis_rules):
      return init_sharded(key)

  def init_on_host(key):
    # Same values (threefry is exact everywhere; the normal's float math may differ in the last
    # bit), computed by the CPU backend outside any mesh the caller has set, then each process
    # places its own shards.
    cpu = jax.local_devices(backend="cpu")[0]
    with jax.set_mesh(None), jax.default_device(cpu), nnx.use_eager_sharding(False):
      host = jax.device_get(jax.jit(init)(jax.device_put(key, cpu)))
    # Rebuilt in the shardings' tree (its Variables carry the mesh-context metadata).
    targets, tree = jax.tree.flatten(shardings)
    return jax.tree.unflatten(tree, [
        jax.make_array_from_callback(np.shape(x), sh, lambda index, x=x: np.asarray(x)[index])
        for x, sh in zip(jax.tree.leaves(host), targets, strict=True)])

  where = config.train.get("init_on", "auto")
  if where not in ("auto", "host", "device"):
    raise ValueError(f"config.train.init_on must be 'auto', 'host' or 'device', got {where!r}")
  on_host = where == "host" or (where == "auto" and jax.default_backend() == "gpu")
  init_state = init_on_host if on_host else init_on_device

  return Components(model_cfg, graphdef, mesh, vocab_tables, masker, tx, init_state,
                    abstract_state)


def jit_train_step(config, c: Components):
  state_shardings = jax.tree.map(lambda s: s.sharding, c.abstract_state)
  step = functools.partial(
      train_step, graphdef=c.graphdef, masker=c.masker, tx=c.tx, mask_config=config.masking,
      learning_rate=optim.learning_rate_schedule(config.train),
      grad_accum_steps=config.train.get("grad_accum_steps", 1))
  return jax.jit(step,
                 in_shardings=(state_shardings, partition.batch_sharding(c.mesh),
                               partition.replicated(c.mesh)),
                 out_shardings=(state_shardings, partition.replicated(c.mesh)),
                 donate_argnums=0)


def jit_eval_step(c: Components, baseline_token: int):
  params_shardings = jax.tree.map(lambda s: s.sharding, c.abstract_state.params)
  mask_shardings = jax.tree.map(lambda s: s.sharding, c.abstract_state.mask_state)
  def eval_batch(params, mask_state, batch, key):
    return eval_step(params, batch, key, graphdef=c.graphdef, masker=c.masker,
                     mask_state=mask_state, baseline_token=baseline_token)

  return jax.jit(
      eval_batch,
      in_shardings=(params_shardings, mask_shardings, partition.batch_sharding(c.mesh),
                    partition.replicated(c.mesh)),
      out_shardings=partition.replicated(c.mesh))


def most_frequent_token(train_ids: np.ndarray, tables: masking.VocabTables) -> int:
  """The most frequent non-special token of the training rows (the trivial predictor)."""
  counts = np.bincount(np.asarray(train_ids).ravel(), minlength=tables.vocab_size)
  counts[np.asarray(tables.is_special)[: len(counts)]] = 0
  return int(np.argmax(counts))


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


def with_hf_architecture(config):
  """A copy of `config` whose model shape and tokenizer are those of `config.init_from_hf`."""
  from mlmjax.convert import hf
  hf_dir = config.init_from_hf
  hf_cfg = hf.config_from_hf(hf_dir)
  config = config.copy_and_resolve_references()
  config.model.update(
      hidden_size=hf_cfg.hidden_size, num_layers=hf_cfg.num_layers, num_heads=hf_cfg.num_heads,
      intermediate_size=hf_cfg.intermediate_size,
      max_position_embeddings=hf_cfg.max_position_embeddings,
      type_vocab_size=hf_cfg.type_vocab_size)
  if not config.data.tokenizer_path:
    for name in ("tokenizer.json", "vocab.txt"):
      if os.path.exists(os.path.join(hf_dir, name)):
        config.data.tokenizer_path = os.path.join(hf_dir, name)
        break
    else:
      raise FileNotFoundError(f"{hf_dir} has neither tokenizer.json nor vocab.txt; set "
                              "config.data.tokenizer_path to the model's tokenizer")
  return config


def hf_params(config, c: Components):
  """The parameters of `config.init_from_hf`, placed on the mesh like a fresh model's."""
  from mlmjax.convert import hf
  hf_cfg = hf.config_from_hf(config.init_from_hf)
  if hf_cfg.vocab_size != c.model_cfg.vocab_size:
    raise ValueError(f"{config.init_from_hf} has a vocabulary of {hf_cfg.vocab_size} but its "
                     f"tokenizer ({config.data.tokenizer_path}) has {c.model_cfg.vocab_size} "
                     "tokens; point config.data.tokenizer_path at the model's own tokenizer.")
  _, imported = hf.import_params(hf.read_hf_tensors(config.init_from_hf), c.model_cfg)
  flat = hf.flatten_params(imported)

  def place(path, like):  # the value at this parameter path, on this parameter's sharding
    name = "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))
    return jax.device_put(flat[name], like.sharding)

  return jax.tree_util.tree_map_with_path(place, c.abstract_state.params)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains per `config`, resuming from `workdir` if it holds checkpoints; returns final eval."""
  workdir = os.path.abspath(workdir)
  is_main = jax.process_index() == 0
  if config.get("init_from_hf"):
    config = with_hf_architecture(config)

  # Data: prepared once into shards in the workdir, reused by later runs. One process writes;
  # the others wait for it and then read the same files (the workdir is shared storage).
  if is_main:
    prepare.prepare(config.data, workdir)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("mlmjax: data prepared")
  manifest = prepare.prepare(config.data, workdir)
  tokenizer = tokenizer_lib.get_tokenizer(config.data, workdir)
  tables = data_stats.vocab_tables(tokenizer, manifest)  # with corpus frequency and IDF
  pad_id = manifest["tokenizer"]["roles"]["pad"]

  # Model, optimizer and masking, sharded on the mesh.
  c = build(config, tables, tokenizer.get_vocab_size(), pad_id)
  with partition.mesh_context(c.mesh, config.mesh.axis_rules):
    return _train(config, workdir, c, manifest, tokenizer, is_main)


def _train(config, workdir, c, manifest, tokenizer, is_main) -> dict:
  data_dir = os.path.join(workdir, "data")
  train_fn = jit_train_step(config, c)
  train_rows = np.load(os.path.join(data_dir, "train.npy"), mmap_mode="r")
  baseline_token = most_frequent_token(train_rows, c.tables)
  eval_fn = jit_eval_step(c, baseline_token)
  eval_batches = pipeline.eval_batches(data_dir, "validation", config.train.batch_size,
                                       config.train.eval_batches or None)
  loader = pipeline.make_loader(data_dir, "train", config.train.batch_size, seed=config.seed)
  data_iter = iter(loader)

  # State: resume from the latest checkpoint, or initialise.
  manager = checkpoint.make_manager(workdir, save_every=config.train.checkpoint_every,
                                    keep=config.train.keep_checkpoints)
  meta = {"config": json.loads(config.to_json_best_effort()),
          "tokenizer_hash": manifest["tokenizer"]["sha256"],
          "model": dataclasses.asdict(c.model_cfg)}
  def check_saved(saved: dict) -> bool:
    check_compatible(saved, meta)
    check_same_experiment(saved["config"], meta["config"], config.train.allow_config_change)
    same_data = saved["config"]["data"] == meta["config"]["data"]
    if not same_data:  # a new phase (e.g. seq 128 -> 512): the model goes on, the data restarts
      logging.warning("The data config changed since the checkpoint: continuing the model on "
                      "the new data from its first batch.")
    return same_data

  state, _ = checkpoint.restore_latest_good(manager, c.abstract_state, data_iter, check_saved)
  if state is None:
    state = c.init_state(jax.random.key(config.seed))
    if config.get("init_from_hf"):  # continued pretraining: HF weights, fresh optimizer
      state = state.replace(params=hf_params(config, c))
  start = int(jax.device_get(state.step))

  writer = metrics_lib.MetricWriter(os.path.join(workdir, "tensorboard"), enabled=is_main)
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
      f.write(config.to_json_best_effort(indent=2))
  logging.info("Training from step %d to %d on mesh %s", start, config.train.steps,
               dict(c.mesh.shape))

  rows, seq_len = config.train.batch_size, config.data.seq_len
  flops_per_token = metrics_lib.flops_per_token(c.model_cfg, seq_len,
                                                config.masking.max_predictions)
  peak_flops = metrics_lib.peak_flops_per_device()
  train_key = jax.random.key(config.seed)
  compiled = None
  bar = tqdm.tqdm(total=config.train.steps, initial=start, disable=not is_main,
                  desc="train", dynamic_ncols=True)
  window_start, window_steps = time.perf_counter(), 0
  last = config.train.stop_after or config.train.steps
  preemption = checkpoint.PreemptionNotice()
  for step in range(start + 1, last + 1):
    batch = partition.global_batch(next(data_iter), c.mesh)
    if compiled is None:  # compiled once, ahead of time: a changed shape fails, never recompiles
      compile_start = time.perf_counter()
      compiled = train_fn.lower(state, batch, train_key).compile()
      writer.write_scalars(step, {"compile_seconds": time.perf_counter() - compile_start})
      window_start = time.perf_counter()
    # Dispatched, not waited for: the host runs ahead of the device and only blocks where it
    # reads a result (logging, evaluation, a checkpoint), so host time never adds to the step.
    state, step_metrics = compiled(state, batch, train_key)
    window_steps += 1
    bar.update(1)

    if step % config.train.log_every == 0 or step == last:
      scalars = jax.device_get(step_metrics)
      check_consecutive_skips(int(scalars["consecutive_skips"]), step, config)
      elapsed = time.perf_counter() - window_start
      scalars["tokens_per_second"] = window_steps * rows * seq_len / elapsed
      scalars["step_seconds"] = elapsed / window_steps
      scalars["model_tflops_per_device"] = (
          flops_per_token * scalars["tokens_per_second"] / jax.device_count() / 1e12)
      if peak_flops:
        scalars["mfu"] = scalars["model_tflops_per_device"] * 1e12 / peak_flops
      window_start, window_steps = time.perf_counter(), 0
      writer.write_scalars(step, scalars)
      bar.set_postfix(loss=f"{scalars['loss']:.3f}", acc=f"{scalars['accuracy']:.3f}",
                      tok_s=f"{scalars['tokens_per_second']:,.0f}")

    eval_metrics = None
    if config.train.eval_every and step % config.train.eval_every == 0 and step < last:
      eval_metrics = evaluate(eval_fn, state, eval_batches, config.seed, c.mesh)
      writer.write_scalars(step, eval_metrics)
      window_start = time.perf_counter()
    if preemption.reached(step):
      checkpoint.save(manager, step, state, data_iter, meta, force=True)
      manager.wait_until_finished()
      logging.warning("Preempted: saved step %d; rerun the same command to resume.", step)
      bar.close()
      writer.close()
      preemption.close()
      return {"step": step, "preempted": True}
    # Evaluated steps are always saved, with their loss, so the best one can be kept.
    checkpoint.save(manager, step, state, data_iter, meta, force=eval_metrics is not None,
                    metrics=eval_metrics)
  bar.close()
  preemption.close()

  results = evaluate(eval_fn, state, eval_batches, config.seed, c.mesh)
  final_step = int(jax.device_get(state.step))
  if final_step not in manager.all_steps():
    checkpoint.save(manager, final_step, state, data_iter, meta, force=True, metrics=results)
  manager.wait_until_finished()
  writer.write_scalars(final_step, results)
  writer.close()
  results["step"] = final_step
  results["baseline_token"] = tokenizer.id_to_token(baseline_token)
  if is_main:
    with open(os.path.join(workdir, "eval_results.json"), "w", encoding="utf-8") as f:
      json.dump(results, f, indent=2)
  return results


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


# Keys that may differ between a checkpoint's config and the resuming run's: run length,
# logging, the hardware layout and settings that leave the parameters' meaning alone. `data`
# may change too (a new training phase). Anything else means another experiment.
RESUMABLE_CHANGES = ("train.steps", "train.stop_after", "train.log_every", "train.eval_every",
                     "train.eval_batches", "train.checkpoint_every", "train.keep_checkpoints",
                     "train.grad_accum_steps", "train.allow_config_change",
                     "train.max_consecutive_skips", "train.init_on", "model.dtype",
                     "model.attention", "model.dropout_impl", "model.scan_layers",
                     "model.remat", "model.remat_policy", "mesh.", "data.", "init_from_hf")


def _flatten(tree: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def check_same_experiment(saved: dict, current: dict, allow_change: bool) -> None:
  """Refuses to resume a workdir written by another experiment's config (unless allowed)."""
  old, new = _flatten(saved), _flatten(current)
  changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)
                   and not any(k == r or (r.endswith(".") and k.startswith(r))
                               for r in RESUMABLE_CHANGES))
  if changed and not allow_change:
    details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:8])
    raise ValueError(f"This workdir holds a run of another config ({details}). Use a new "
                     "--workdir, or pass --config.train.allow_config_change=True to continue "
                     "this run with the new settings.")
