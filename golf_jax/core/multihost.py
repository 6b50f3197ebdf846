"""Multi-host runs: joining the job that the environment describes, and one run directory.

Never packed (golf_jax/submission/modules.py NOT_PACKED): a submission trains on one host. The entry
points (`python -m golf_jax.train`, `python -m golf_jax.eval`) call
`initialize_from_env()` before any device is touched; RunDir calls `shared_run_dir` when
there are several processes. Everything else is the same program on every process: the
loaders read only this process's data ranks (golf_jax/train/loop.py `make_loader`) and
golf_jax/core/mesh.py `put_local_batch` assembles the global batch from every process's rows.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

# (ours, JAX's name) for the coordinator's host:port, the number of processes and this one's id.
EXPLICIT = (("GOLF_JAX_COORDINATOR", "JAX_COORDINATOR_ADDRESS"), ("GOLF_JAX_NUM_PROCESSES", "JAX_NUM_PROCESSES"),
            ("GOLF_JAX_PROCESS_ID", "JAX_PROCESS_ID"))


def distributed_args(env) -> dict | None:
    """`jax.distributed.initialize` kwargs that `env` asks for; None for a single process.

    Explicit (launch/multihost.sh): the three EXPLICIT variables; each process then drives
    all its local devices. Else SLURM with several tasks (launch/slurm_multinode.sbatch):
    jax reads the coordinator, the process count and id, and one GPU per task, from SLURM.
    """
    found = [next(((k, env[k]) for k in pair if env.get(k)), None) for pair in EXPLICIT]
    slurm = int(env.get("SLURM_NTASKS") or 1) > 1
    if not any(found):
        return {} if slurm else None
    if slurm and found[0] and not any(found[1:]):
        return {"coordinator_address": found[0][1]}  # SLURM supplies the rest
    missing = [pair[0] for pair, f in zip(EXPLICIT, found) if f is None]
    if missing:
        raise ValueError(f"multi-host run: set {', '.join(missing)} too (or unset {', '.join(f[0] for f in found if f)})")
    (_, coordinator), (n_name, n), (id_name, pid) = found
    if not (n.isdigit() and pid.isdigit()):
        raise ValueError(f"{n_name}={n!r} and {id_name}={pid!r} must be integers")
    if not int(pid) < int(n):
        raise ValueError(f"{id_name}={pid} must be in [0, {n_name}={n})")
    return {"coordinator_address": coordinator, "num_processes": int(n), "process_id": int(pid),
            "cluster_detection_method": "deactivate"}  # no SLURM guesses over what was said


def initialize_from_env() -> None:
    """Join the multi-host run the environment describes (if any), once per process."""
    args = distributed_args(os.environ)
    if args is not None and not jax.distributed.is_initialized():
        jax.distributed.initialize(**args)


def shared_run_dir(path: Path) -> Path:
    """Process 0's run directory (its timestamp), once process 0 has created it.

    Every process calls this after process 0's mkdir: the broadcast is also the barrier.
    """
    name = multihost_utils.broadcast_one_to_all(np.frombuffer(path.name.encode(), np.uint8))
    path = path.parent / bytes(np.asarray(name, np.uint8)).decode()
    if not path.is_dir():
        raise FileNotFoundError(f"process {jax.process_index()} cannot see {path}, made by process 0: "
                                "put train.run_dir on a filesystem that every host shares")
    return path
