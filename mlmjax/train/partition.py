"""Device mesh, logical-axis rules and the shardings of parameters and batches.

One mesh with axes ('data', 'fsdp', 'tensor') is the only code path, even on one device: data
parallel, FSDP and tensor parallel are mesh shapes plus the logical-axis rules in the config.
Parameters carry logical axis names (`mlmjax/model/layers.py`); the rules map them onto mesh axes.
"""

import contextlib
from typing import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from mlmjax import masking
from mlmjax.model import MODELS, ModelConfig, make_model

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # rows of a batch are split over both data-like axes


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Replaces one -1 in `shape` by the devices left over; checks the product."""
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(MESH_AXES):
    raise ValueError(f"config.mesh.shape needs {len(MESH_AXES)} entries {MESH_AXES}, got {shape}")
  if shape.count(-1) > 1:
    raise ValueError(f"config.mesh.shape may hold at most one -1, got {shape}")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f"config.mesh.shape {shape} does not divide {num_devices} devices")
    shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if int(np.prod(shape)) != num_devices:
    raise ValueError(f"config.mesh.shape {shape} needs {int(np.prod(shape))} devices; "
                     f"{num_devices} are available")
  return shape


def make_mesh(shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over `devices` (all by default) with GSPMD-style (Auto) axes."""
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(shape, len(devices))
  # Auto axis types explicitly: jax.make_mesh defaults to Explicit, which logical rules don't use.
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


@contextlib.contextmanager
def mesh_context(mesh: Mesh, axis_rules):
  """Makes `mesh` current and the logical rules active, for tracing and creating state."""
  rules = tuple((name, tuple(a) if isinstance(a, list) else a) for name, a in axis_rules)
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    yield


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Rows split over the data-like axes, everything else replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Host-local numpy rows -> one global jax.Array per field, sharded by rows."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def sharding_table(model_cfg, mesh_shape: Sequence[int], axis_rules) -> list[dict]:
  """Per parameter: shape, logical axes, PartitionSpec and bytes per device. No device needed.

  Works on an `AbstractMesh`, so a pod's layout can be planned (and tested) from a laptop.
  """
  from flax import linen  # only for its logical -> mesh axis resolution

  mesh = jax.sharding.AbstractMesh(tuple(mesh_shape), MESH_AXES,
                                   axis_types=(AxisType.Auto,) * len(MESH_AXES))
  rules = tuple((name, tuple(a) if isinstance(a, list) else a) for name, a in axis_rules)
  with nnx.use_eager_sharding(False):
    abstract = nnx.eval_shape(lambda: make_model(model_cfg, nnx.Rngs(0)))
  rows = []
  for path, var in nnx.to_flat_state(nnx.state(abstract, nnx.Param)):
    logical = var.get_metadata().get("out_sharding") or (None,) * len(var.shape)
    spec = linen.logical_to_mesh_axes(logical, rules)
    shard = NamedSharding(mesh, spec).shard_shape(var.shape)
    rows.append({"path": "/".join(map(str, path)), "shape": tuple(var.shape),
                 "logical": tuple(logical), "spec": spec,
                 "bytes_per_device": int(np.prod(shard)) * var.dtype.itemsize})
  return rows


def format_plan(config, num_devices: int) -> str:
  """The dry-run report: mesh, every parameter's sharding, per-device state memory."""
  shape = resolve_mesh_shape(config.mesh.shape, num_devices)
  model_cfg = ModelConfig.from_config(
      config.model, vocab_size=config.data.vocab_size,
      span_boundary_head=masking.boundary_objective(config.masking))
  rows = sharding_table(model_cfg, shape, config.mesh.axis_rules)
  params = sum(r["bytes_per_device"] for r in rows)
  total = sum(int(np.prod(r["shape"])) for r in rows)
  lines = [f"mesh {dict(zip(MESH_AXES, shape))} on {num_devices} devices; "
           f"{total / 1e6:.1f} M parameters (vocabulary padded to {model_cfg.padded_vocab_size})",
           f"{'parameter':<58} {'shape':>14} {'spec':<28} {'MiB/device':>10}"]
  for r in rows:
    lines.append(f"{r['path']:<58} {str(r['shape']):>14} {str(tuple(r['spec'])):<28} "
                 f"{r['bytes_per_device'] / 2**20:>10.2f}")
  per_layer = (f"({MODELS[model_cfg.family].STACKED}: the layers stacked on a leading, "
               "unsharded axis)")
  # AdamW keeps two float32 moments per parameter, sharded like it; gradients add one more
  # transiently. Activations are not counted: they depend on batch, remat and the kernel.
  lines += [per_layer,
            f"per device: parameters {params / 2**30:.3f} GiB, AdamW moments "
            f"{2 * params / 2**30:.3f} GiB, gradients {params / 2**30:.3f} GiB; "
            f"state total {4 * params / 2**30:.3f} GiB (activations not included)"]
  return "\n".join(lines)
