"""The pure train step `(state, batch) -> (state, metrics)`: the generic gradient
update of golf_jax.optim.step plus the training recipe (EMA, SWA, late QAT).

`batch` carries the tokens and the host-side schedule values of the step
(`lr_scale`, `muon_momentum`, `qat_alpha`): they change every step without a recompile.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import Mesh

from golf_jax.core import mesh as mesh_lib
from golf_jax.optim import step as optim_step
from golf_jax.train import recipe as recipe_lib
from golf_jax.train.recipe import Recipe


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    ema: Any = None  # fp32 EMA of params (recipe.ema_decay > 0)
    swa_sum: Any = None  # fp32 sum of SWA snapshots (recipe.swa_enabled)
    swa_count: Any = None


def init_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array, seq_len: int, mesh: Mesh, recipe: Recipe = Recipe()):
    """Initialise params, optimizer state and averages directly with replicated shardings."""

    def init(rng):
        params = model.init(rng, jnp.zeros((1, seq_len), jnp.int32))["params"]
        fp32 = lambda p: jax.tree.map(lambda x: x.astype(jnp.float32), p)  # noqa: E731
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            ema=fp32(params) if recipe.ema_decay > 0 else None,
            swa_sum=jax.tree.map(jnp.zeros_like, fp32(params)) if recipe.swa_enabled else None,
            swa_count=jnp.zeros((), jnp.int32) if recipe.swa_enabled else None,
        )

    return jax.jit(init, out_shardings=mesh_lib.replicated(mesh))(rng)


def make_train_step(model: nn.Module, tx: optax.GradientTransformationExtraArgs, recipe: Recipe = Recipe()):
    """`batch` = {x, y, lr_scale, muon_momentum, qat_alpha}: tokens plus host schedule values."""

    def loss_fn(params, batch: dict):
        if recipe.qat_mask is not None:
            from golf_jax.train import qat  # imported on its branch only: golf_jax/submission/modules.py GATES

            params = qat.apply_qat(params, recipe.qat_mask, batch["qat_alpha"])
        return model.apply({"params": params}, batch["x"], batch["y"], method=model.loss)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        hparams = {"lr_scale": batch["lr_scale"], "muon_momentum": batch["muon_momentum"]}
        params, opt_state, loss, aux, grads = optim_step.gradient_update(
            loss_fn, tx, state.params, state.opt_state, {**batch, "hparams": hparams})
        step = state.step + 1
        new = TrainState(step=step, params=params, opt_state=opt_state)
        if recipe.ema_decay > 0:
            new = new.replace(ema=recipe_lib.ema_update(state.ema, params, recipe.ema_decay))
        if recipe.swa_enabled:
            take = (batch["lr_scale"] < recipe.swa_lr_threshold) & (step % recipe.swa_every == 0)
            new = new.replace(**dict(zip(("swa_sum", "swa_count"), recipe_lib.swa_update(state.swa_sum, state.swa_count, params, take))))
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
        return new, metrics

    return train_step


def schedule_inputs(lr_scale: float, muon_momentum: float, qat_alpha: float = 0.0) -> dict:
    """The host-side values a step takes with its tokens (fixed keys: no recompiles)."""
    return {"lr_scale": np.float32(lr_scale), "muon_momentum": np.float32(muon_momentum), "qat_alpha": np.float32(qat_alpha)}


def build_recipe(cfg, params, labels) -> Recipe:
    t = cfg.train
    mask = None
    if t.late_qat_threshold > 0:
        from golf_jax.train import qat

        mask = qat.qat_mask(params, labels, cfg.compat.qat_reference_scope)
    return Recipe(t.ema_decay, t.swa_enabled, t.swa_every, t.swa_lr_threshold, mask)


def jit_train_step(train_step, mesh: Mesh):
    """jit with pjit semantics: replicated state (donated), batch split over `data`."""
    rep, dat = mesh_lib.replicated(mesh), mesh_lib.data_sharded(mesh)
    batch_shardings = {"x": dat, "y": dat, "lr_scale": rep, "muon_momentum": rep, "qat_alpha": rep}
    return jax.jit(
        train_step,
        in_shardings=(rep, batch_shardings),
        out_shardings=(rep, rep),
        donate_argnums=(0,),
    )
