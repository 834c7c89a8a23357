"""Device mesh, logical-axis rules and the shardings of parameters and batches.

One mesh with axes ('data', 'fsdp', 'tensor') is the only code path, even on one device: data
parallel, FSDP and tensor parallel are mesh shapes plus the logical-axis rules in the config.
Parameters carry logical axis names (`mlmjax/model/bert.py`); the rules map them onto mesh axes.
"""

import contextlib
from typing import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

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
