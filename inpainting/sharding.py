"""The device mesh, the shardings of state and batch, and the global batch.

Two mesh axes:
  data   data parallelism: the batch is split over it, parameters are replicated.
  fsdp   optional parameter sharding: each large parameter (and its optimizer moments)
         is split along one dimension; the batch is split over `data` x `fsdp`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from inpainting.errors import UserError

BATCH_AXES = ("data", "fsdp")
# Parameters smaller than this many elements stay replicated under fsdp.
_MIN_FSDP_SIZE = 2**14


def make_mesh(mesh_config: ml_collections.ConfigDict, global_batch_size: int) -> Mesh:
  """Builds the ('data', 'fsdp') mesh over all devices of all processes.

  Raises:
    UserError: if the axis sizes do not multiply to the device count, or the global batch
      does not divide evenly over the devices.
  """
  devices = jax.devices()
  if mesh_config.num_devices != -1:
    if jax.process_count() > 1:
      raise UserError("mesh.num_devices must be -1 (all devices) when running multi-process")
    if not 1 <= mesh_config.num_devices <= len(devices):
      raise UserError(f"mesh.num_devices={mesh_config.num_devices}: have {len(devices)} devices")
    devices = devices[: mesh_config.num_devices]
  num_devices = len(devices)
  fsdp = mesh_config.fsdp
  data = mesh_config.data if mesh_config.data != -1 else num_devices // max(fsdp, 1)
  if fsdp < 1 or data < 1 or data * fsdp != num_devices:
    raise UserError(
      f"mesh data={mesh_config.data} x fsdp={fsdp} does not match {num_devices} devices"
    )
  if global_batch_size % num_devices:
    raise UserError(
      f"global_batch_size={global_batch_size} must divide by the device count {num_devices}"
    )
  if global_batch_size % jax.process_count():
    raise UserError(
      f"global_batch_size={global_batch_size} must divide by the process count "
      f"{jax.process_count()}"
    )
  # Auto axes: XLA's partitioner propagates shardings from the inputs; models need no
  # sharding annotations of their own.
  auto = (jax.sharding.AxisType.Auto,) * 2
  return jax.make_mesh((data, fsdp), ("data", "fsdp"), axis_types=auto, devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over every device; other axes whole."""
  return NamedSharding(mesh, P(BATCH_AXES))


def _param_spec(shape: tuple[int, ...], fsdp_size: int) -> P:
  """Shards the largest dimension divisible by the fsdp size; small leaves replicate."""
  if fsdp_size == 1 or math.prod(shape) < _MIN_FSDP_SIZE:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def state_shardings(abstract_state, mesh: Mesh):
  """Shardings for a pytree of ShapeDtypeStructs (params, optimizer state, stats)."""
  fsdp_size = mesh.shape["fsdp"]
  return jax.tree.map(
    lambda x: NamedSharding(mesh, _param_spec(tuple(x.shape), fsdp_size)), abstract_state
  )


def global_batch(
  local_batch: Mapping[str, np.ndarray], mesh: Mesh, keys: Sequence[str]
) -> dict[str, jax.Array]:
  """Assembles each process's local batch into one global array per key in `keys` (the
  family's device keys; ids, captions and scenes stay on the host)."""
  sharding = batch_sharding(mesh)
  return {
    key: jax.make_array_from_process_local_data(sharding, np.asarray(local_batch[key]))
    for key in keys
  }
