"""The state factory: model, masker, optimizer and the sharded train state, and the jitted steps.

Everything the training loop, the benchmarks, the comparison and inference build from a config,
once, before any step runs: `build(config, tables, vocab_size, pad_id)` returns the
`Components`; `jit_train_step` / `jit_eval_step` compile the pure steps of `step.py` with
their shardings. The loop (`loop.py`) only runs them.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mlmjax import masking
from mlmjax.model import ModelConfig, make_model
from mlmjax.train import optim, partition
from mlmjax.train import step as step_lib
from mlmjax.train.step import TrainState, eval_step, train_step_in_window


@dataclasses.dataclass(frozen=True)
class Components:
  """Everything that is built from the config once, before the loop."""
  model_cfg: ModelConfig
  graphdef: nnx.GraphDef
  mesh: jax.sharding.Mesh
  tables: masking.VocabTables
  mask_config: object  # the masking config the masker was built from (epoch length set)
  masker: object
  tx: object
  init_state: object  # jitted: key -> TrainState, already sharded
  abstract_state: TrainState  # ShapeDtypeStructs with shardings (restore target)


def build(config, vocab_tables: masking.VocabTables, vocab_size: int, pad_id: int,
          devices=None, train_rows: int = 0) -> Components:
  """Model config, mesh, masker, optimizer and the sharded state initialiser.

  `train_rows`, the rows of one pass over the training data, sets how often static (BERT)
  masks move to their next copy, unless `masking.dynamic.steps_per_epoch` says it.
  """
  model_cfg = ModelConfig.from_config(config.model, vocab_size=vocab_size, pad_token_id=pad_id,
                                     span_boundary_head=masking.boundary_objective(config.masking))
  if config.data.seq_len > model_cfg.max_sequence_length:
    offset = (f" less RoBERTa's position offset {model_cfg.position_offset}"
              if model_cfg.position_offset else "")
    raise ValueError(f"config.data.seq_len={config.data.seq_len} exceeds "
                     f"config.model.max_position_embeddings={model_cfg.max_position_embeddings}"
                     f"{offset}; raise it or shorten the rows")
  needed = masking.schedules.required_predictions(config.masking, config.data.seq_len)
  if needed > config.masking.max_predictions:
    raise ValueError(
        f"config.masking.max_predictions={config.masking.max_predictions} would clip the "
        f"masking budget: at its highest rate ({masking.schedules.max_rate(config.masking):g}) "
        f"the schedule asks for {needed} of a {config.data.seq_len}-token row. Set "
        f"--config.masking.max_predictions={needed}.")
  mesh = partition.make_mesh(config.mesh.shape, devices)
  mask_config = masking.with_epoch_length(config.masking, train_rows / config.train.batch_size)
  masker = masking.make_masker(mask_config, vocab_tables)
  tx = optim.make_optimizer(config.train)
  mask_state = masking.init_state(config.masking, vocab_tables)

  def init(key):
    model = make_model(model_cfg, nnx.Rngs(params=key))
    params = nnx.state(model, nnx.Param)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      mask_state=mask_state, skipped=jnp.zeros((), jnp.int32),
                      consecutive_skips=jnp.zeros((), jnp.int32))

  with partition.mesh_context(mesh, config.mesh.axis_rules):
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: make_model(model_cfg, nnx.Rngs(0))))
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

  where = config.train.init_on
  if where not in ("auto", "host", "device"):
    raise ValueError(f"config.train.init_on must be 'auto', 'host' or 'device', got {where!r}")
  on_host = where == "host" or (where == "auto" and jax.default_backend() == "gpu")
  init_state = init_on_host if on_host else init_on_device

  return Components(model_cfg, graphdef, mesh, vocab_tables, mask_config, masker, tx,
                    init_state, abstract_state)


def jit_train_step(config, c: Components):
  """The compiled step: (state, batch, key, window) -> (new state, window with this step added).

  The window (`step.empty_window`, placed by `empty_window`) carries the logging window's sums
  on the device, so the loop logs means over its steps without reading any step's metrics.
  """
  state_shardings = jax.tree.map(lambda s: s.sharding, c.abstract_state)
  step = functools.partial(
      train_step_in_window, graphdef=c.graphdef, masker=c.masker, tx=c.tx,
      mask_config=c.mask_config, learning_rate=optim.learning_rate_schedule(config.train),
      grad_accum_steps=config.train.grad_accum_steps)
  replicated = partition.replicated(c.mesh)
  return jax.jit(step,
                 in_shardings=(state_shardings, partition.batch_sharding(c.mesh), replicated,
                               replicated),
                 out_shardings=(state_shardings, replicated),
                 donate_argnums=0)


def empty_window(c: Components) -> dict:
  """A logging window with no steps in it, replicated on the mesh as the train step takes it
  (built from host values by every process, as a multi-host step needs its inputs)."""
  sharding = partition.replicated(c.mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_callback((), sharding, lambda _, x=np.asarray(x): x),
      step_lib.empty_window(c.model_cfg.span_boundary_head))


def jit_eval_step(c: Components, baseline_token: int):
  params_shardings = jax.tree.map(lambda s: s.sharding, c.abstract_state.params)
  mask_shardings = jax.tree.map(lambda s: s.sharding, c.abstract_state.mask_state)
  def eval_batch(params, mask_state, batch, key):
    return eval_step(params, batch, key, graphdef=c.graphdef, masker=c.masker,
                     mask_config=c.mask_config, mask_state=mask_state,
                     baseline_token=baseline_token)

  return jax.jit(
      eval_batch,
      in_shardings=(params_shardings, mask_shardings, partition.batch_sharding(c.mesh),
                    partition.replicated(c.mesh)),
      out_shardings=partition.replicated(c.mesh))


def most_frequent_token(tables: masking.VocabTables) -> int:
  """The most frequent non-special token of the training rows (the trivial predictor), from
  the prepared data's token counts (`tables.frequency`)."""
  counts = np.array(tables.frequency, np.float64)
  counts[np.asarray(tables.is_special)[: len(counts)]] = 0
  return int(np.argmax(counts))


def place_params(flat: dict, c: Components):
  """Host parameters {"bert/embeddings/...": array} placed on the mesh like a fresh model's."""

  def place(path, like):
    name = "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))
    if name not in flat:
      raise ValueError(f"The initial parameters have no {name!r}")
    if tuple(np.shape(flat[name])) != tuple(like.shape):
      raise ValueError(f"{name}: shape {np.shape(flat[name])} does not match the model's "
                       f"{tuple(like.shape)}")
    return jax.device_put(flat[name], like.sharding)

  return jax.tree_util.tree_map_with_path(place, c.abstract_state.params)
