"""The 1-D data mesh, its shardings, and host→device batch assembly.

Pure data parallelism: params and optimizer state are replicated, batches are
split along their leading axis over every device of every host. Axis types are
Auto (jax.make_mesh defaults to Explicit, which rejects `emb[tokens]` gathers).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def local_data_ranks(mesh: Mesh) -> list[int]:
    """Positions along the data axis whose device belongs to this process."""
    me = jax.process_index()
    return [i for i, d in enumerate(mesh.devices.flat) if d.process_index == me]


def put_local_batch(mesh: Mesh, local_rows: np.ndarray) -> jax.Array:
    """Assemble a global batch from this process's rows (ordered by its data ranks)."""
    sharding = data_sharded(mesh)
    global_rows = local_rows.shape[0] * mesh.devices.size // len(local_data_ranks(mesh))
    global_shape = (global_rows, *local_rows.shape[1:])
    return jax.make_array_from_process_local_data(sharding, local_rows, global_shape)


def put_global_batch(mesh: Mesh, global_rows: np.ndarray) -> jax.Array:
    """Shard an array every process holds in full; each process uploads only its shards."""
    sharding = data_sharded(mesh)
    return jax.make_array_from_callback(global_rows.shape, sharding, lambda idx: global_rows[idx])
