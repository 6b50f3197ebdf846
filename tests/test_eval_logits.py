"""Evaluation forms logits only at the positions it scores (issue 12): the sliding / TTT
predict and phased TTT's LoRA forward gather hidden states before the LM head, so no
[.., L, V] logits tensor exists in their programs (traced, not compiled)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core

from configs import smoke
from golf_jax import model as model_lib
from golf_jax.eval import harness
from golf_jax.eval.phased import lora

L, S, V = 48, 8, 80  # unlike every other width: model 32, MLP 64


def _shapes(jaxpr) -> list[tuple[int, ...]]:
    """Shapes of every value the program computes, sub-programs (pjit, vmap, scan) included."""
    out = []
    for eqn in jaxpr.eqns:
        out += [tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape")]
        for p in eqn.params.values():
            for sub in p if isinstance(p, (tuple, list)) else (p,):
                if isinstance(sub, core.ClosedJaxpr):
                    out += _shapes(sub.jaxpr)
                elif isinstance(sub, core.Jaxpr):
                    out += _shapes(sub)
    return out


def test_scored_positions_only():
    m = smoke.get_config().model
    m.vocab_size, m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = V, 2, 32, 4, 2
    model = model_lib.build_model(m)
    x = jnp.zeros((2, L), jnp.int32)
    pos = jnp.tile(jnp.arange(L - S, L, dtype=jnp.int32), (2, 1))
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), x)["params"])
    full = _shapes(jax.make_jaxpr(lambda p: model.apply({"params": p}, x))(params).jaxpr)
    assert (2, L, V) in full  # the check can see a full logits tensor
    shapes = _shapes(jax.make_jaxpr(harness.make_predict(model))(params, x, pos).jaxpr)
    assert (2, S, V) in shapes and not [s for s in shapes if s[-2:] == (L, V)]
    adapters = jax.eval_shape(lambda: lora.init(jax.random.key(1), m, 2, lora.MODULES, 2))
    forward = lambda p, a: lora.forward(model, p, a, np.float32(1.0), x, pos)  # noqa: E731
    shapes = _shapes(jax.make_jaxpr(forward)(params, adapters).jaxpr)
    assert (2, S, V) in shapes and not [s for s in shapes if s[-2:] == (L, V)]
