"""The train step (golf_jax/train/step.py) as the fit loop compiles it, on random tokens.

One unit is one optimizer step over the global batch. With delayed depth recurrence
the looped graph is timed (the one most of training runs). FLOPs: bench/flops.py.
"""

from __future__ import annotations

import jax
import numpy as np

from golf_jax.core import mesh as mesh_lib
from golf_jax import model as model_lib
from golf_jax.bench import flops
from golf_jax.bench.measure import Bench, compile_aot
from golf_jax.core.errors import UserError
from golf_jax.optim.build import build_optimizer
from golf_jax.train import step as step_lib


def build(cfg, mesh, per_device_seqs: int = 0) -> Bench:
    """`per_device_seqs` overrides the config's batch (sequences per device; 0: train.batch_tokens)."""
    n_dev = mesh.devices.size
    T = int(cfg.train.seq_len)
    per_device = per_device_seqs or int(cfg.train.batch_tokens) // (n_dev * T)
    if per_device < 1:
        raise UserError(f"train.batch_tokens={cfg.train.batch_tokens} is less than one sequence of {T} per device "
                        f"on {n_dev} devices; raise it or pass --per_device_seqs")
    rows = per_device * n_dev
    model = model_lib.build_model(cfg.model)
    rng = jax.random.PRNGKey(cfg.seed)
    abstract = jax.eval_shape(lambda r: model.init(r, np.zeros((1, T), np.int32))["params"], rng)
    labels = model_lib.param_labels(cfg.model, abstract, cfg.compat)
    tx = build_optimizer(cfg.opt, labels, mesh)
    recipe = step_lib.build_recipe(cfg, abstract, labels)
    state = step_lib.init_state(model, tx, rng, T, mesh, recipe)
    tokens = np.random.default_rng(cfg.seed).integers(0, cfg.model.vocab_size, (rows, T + 1), dtype=np.int32)
    batch = {"x": mesh_lib.put_global_batch(mesh, tokens[:, :-1]), "y": mesh_lib.put_global_batch(mesh, tokens[:, 1:]),
             **step_lib.schedule_inputs(1.0, cfg.opt.muon_momentum)}
    jitted = step_lib.jit_train_step(step_lib.make_train_step(model, tx, recipe), mesh)
    compiled, compile_s = compile_aot(jitted, state, batch)
    holder = {"state": state}

    def call():
        holder["state"], metrics = compiled(holder["state"], batch)
        return metrics["loss"]

    return Bench("train", "step", 1, call, "6·N_matmul + 6·L·T·D per token (bench/flops.py)",
                 flops_per_unit=rows * T * flops.train_per_token(cfg, abstract, T), tokens_per_unit=rows * T,
                 compiled={"train_step": compiled}, compile_s=compile_s,
                 settings={"batch": f"{per_device} x {T} tokens per device", "tokens_per_step": rows * T,
                           "n_matmul": flops.matmul_params(cfg, abstract)})
