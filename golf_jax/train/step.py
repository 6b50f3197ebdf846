"""The pure train step `(state, batch) -> (state, metrics)` and the eval step.

`batch` carries the tokens and the two host-side schedule values of the step
(`lr_scale`, `muon_momentum`): they change every step without a recompile.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from jax.sharding import Mesh

from golf_jax.data.tokenizer import target_bytes
from golf_jax.model import layers
from golf_jax.train import mesh as mesh_lib


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def init_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array, seq_len: int, mesh: Mesh):
    """Initialise params and optimizer state directly with replicated shardings."""

    def init(rng):
        params = model.init(rng, jnp.zeros((1, seq_len), jnp.int32))["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    return jax.jit(init, out_shardings=mesh_lib.replicated(mesh))(rng)


def make_train_step(model: nn.Module, tx: optax.GradientTransformationExtraArgs):
    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        def loss_fn(params):
            return model.apply({"params": params}, batch["x"], batch["y"], method=model.loss)

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(
            grads,
            state.opt_state,
            state.params,
            lr_scale=batch["lr_scale"],
            muon_momentum=batch["muon_momentum"],
        )
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def jit_train_step(train_step, mesh: Mesh):
    """jit with pjit semantics: replicated state (donated), batch split over `data`."""
    rep, dat = mesh_lib.replicated(mesh), mesh_lib.data_sharded(mesh)
    batch_shardings = {"x": dat, "y": dat, "lr_scale": rep, "muon_momentum": rep}
    return jax.jit(
        train_step,
        in_shardings=(rep, batch_shardings),
        out_shardings=(rep, rep),
        donate_argnums=(0,),
    )


def make_eval_step(model: nn.Module, lut_arrays: tuple[jax.Array, jax.Array, jax.Array]):
    """Sums of NLL (fp32), scored tokens and LUT bytes over a masked batch."""

    def eval_step(params, batch: dict) -> dict:
        logits = model.apply({"params": params}, batch["x"])
        nll_BxT = layers.cross_entropy_BxT(logits, batch["y"])
        mask = batch["mask"]
        base_bytes, has_space, is_boundary = lut_arrays
        lut = _Lut(base_bytes, has_space, is_boundary)
        bytes_BxT = target_bytes(lut, batch["x"], batch["y"], xp=jnp).astype(jnp.int32)
        return {
            "nll_sum": jnp.sum(jnp.where(mask, nll_BxT, 0.0)),
            "tokens": jnp.sum(mask.astype(jnp.int32)),
            "bytes": jnp.sum(jnp.where(mask, bytes_BxT, 0)),
        }

    return eval_step


@flax.struct.dataclass
class _Lut:
    base_bytes: jax.Array
    has_leading_space: jax.Array
    is_boundary: jax.Array
