"""The generic gradient step `(state, batch) -> (state, metrics)`, shared by training and TTT.

`loss_fn(params, batch) -> (loss, aux)` says what is minimised; `tx` (an optax
chain of golf_jax.optim pieces) how. Host-side schedule values ride in the batch
under `batch["hparams"]` and reach the optimizer as optax extra args
(`lr_scale`, `muon_momentum`, ...), so they change every step without a recompile.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import optax


@flax.struct.dataclass
class StepState:
    """Params and optimizer state: all a plain gradient step carries."""

    params: Any
    opt_state: Any


def gradient_update(loss_fn: Callable, tx: optax.GradientTransformationExtraArgs, params, opt_state, batch: dict):
    """One optimizer update: (new params, new opt_state, loss, aux, grads)."""
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params, **batch.get("hparams", {}))
    return optax.apply_updates(params, updates), opt_state, loss, aux, grads


def make_step(loss_fn: Callable, tx: optax.GradientTransformationExtraArgs):
    """`(StepState, batch) -> (StepState, {loss, grad_norm, **aux})`, pure and jittable."""

    def step(state: StepState, batch: dict) -> tuple[StepState, dict]:
        params, opt_state, loss, aux, grads = gradient_update(loss_fn, tx, state.params, state.opt_state, batch)
        return StepState(params, opt_state), {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}

    return step
