"""A tiny fit through the real train loop, as one process of a multi-host run.

`python tests/multihost_worker.py DATA_DIR RUN_ROOT` joins the run the GOLF_JAX_*
environment describes (golf_jax.core.multihost), then trains 3 steps; tests/test_multihost.py
starts two of these and compares the losses process 0 logs with `fit_tiny` run in
the test process on all 8 devices.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np


def tiny_config():
    from golf_jax.config import base_config

    cfg = base_config()
    m = cfg.model
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads, m.mlp_mult = 2, 32, 2, 1, 2.0
    m.vocab_size, m.compute_dtype = 64, "float32"
    t = cfg.train
    t.seq_len, t.batch_tokens, t.iterations, t.max_wallclock_seconds, t.val_every = 16, 256, 3, 0.0, 0
    cfg.schedule.mode, cfg.schedule.warmdown_iters = "iterations", 2
    cfg.opt.muon_sharded_ns = True  # Parallel Muon's all-gather crosses the hosts too
    return cfg


def write_data(data_dir: Path) -> None:
    """Two train shards of random tokens (the loader crosses from one to the other)."""
    from golf_jax.data.prepare import write_shard

    tokens = np.random.default_rng(0).integers(0, 64, 1200)
    for i in range(2):
        write_shard(Path(data_dir) / f"fineweb_train_{i:06d}.bin", tokens[i * 600 : (i + 1) * 600])


def fit_tiny(data_dir: Path, run_root: Path):
    """3 steps of loop.fit on this process's rows of every batch; returns the RunDir."""
    from golf_jax.core import mesh as mesh_lib
    from golf_jax import model as model_lib
    from golf_jax.core import multihost
    from golf_jax.optim.build import build_optimizer
    from golf_jax.core.rundir import RunDir
    from golf_jax.train import loop, step as step_lib

    multihost.initialize_from_env()
    cfg = tiny_config()
    mesh = mesh_lib.make_mesh()
    run = RunDir(run_root, "multihost", cfg)
    model = model_lib.build_model(cfg.model)
    abstract = jax.eval_shape(lambda r: model.init(r, np.zeros((1, 16), np.int32))["params"], jax.random.PRNGKey(0))
    labels = model_lib.param_labels(cfg.model, abstract)
    tx = build_optimizer(cfg.opt, labels, mesh)
    state = step_lib.init_state(model, tx, jax.random.PRNGKey(cfg.seed), 16, mesh)
    loop.fit(cfg, loop.Trainee(model, tx, step_lib.Recipe(), state), loop.make_loader(cfg, Path(data_dir), mesh), mesh,
             run, lambda params, step: 0.0)
    run.close()
    return run


if __name__ == "__main__":
    fit_tiny(Path(sys.argv[1]), Path(sys.argv[2]))
