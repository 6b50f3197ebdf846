"""Parallel Muon (opt.muon_sharded_ns): Newton–Schulz split over the 8 simulated devices
gives the unsharded updates, and the compiled step really splits it (an all-gather)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from golf_jax.core import mesh as mesh_lib
from golf_jax.optim.build import build_optimizer

# 3 and 10 matrices of one shape (padded to 8 and 16), a tall one alone, a stacked bank.
SHAPES = {**{f"a{i}": (16, 24) for i in range(3)}, **{f"b{i}": (8, 8) for i in range(10)},
          "tall": (24, 8), "bank": (3, 8, 16)}


def _cfg(ns_dtype: str, variant: str, sharded: bool) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        muon_variant=variant, matrix_lr=0.02, scalar_lr=0.01, tied_embed_lr=0.01, head_lr=0.01, beta1=0.9,
        beta2=0.95, adam_eps=1e-8, muon_momentum=0.95, muon_ns_steps=5, muon_nesterov=True,
        muon_weight_decay=0.0, adam_weight_decay=0.0, grad_clip_norm=0.0, muon_ns_dtype=ns_dtype,
        muon_sharded_ns=sharded,
    ))


def _updates(ns_dtype: str, variant: str, sharded: bool, grads: list) -> tuple[list, str]:
    """Updates of 3 steps, and the compiled update's HLO."""
    mesh = mesh_lib.make_mesh()
    rep = mesh_lib.replicated(mesh)
    tx = build_optimizer(_cfg(ns_dtype, variant, sharded), {k: "muon" for k in SHAPES}, mesh)
    params = {k: jnp.zeros(s, jnp.float32) for k, s in SHAPES.items()}
    state, out = tx.init(params), []
    update = jax.jit(tx.update, in_shardings=rep, out_shardings=rep).lower(grads[0], state, params).compile()
    for g in grads:
        u, state = update(g, state, params)
        out.append(jax.device_get(u))
    return out, update.as_text()


@pytest.mark.parametrize("ns_dtype, variant, tol", [("bfloat16", "muon", 2**-8), ("float32", "muoneq_r", 1e-5)])
def test_sharded_newton_schulz_equals_unsharded(ns_dtype, variant, tol):
    rng = np.random.default_rng(0)
    grads = [{k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in SHAPES.items()} for _ in range(3)]
    plain, plain_hlo = _updates(ns_dtype, variant, False, grads)
    sharded, sharded_hlo = _updates(ns_dtype, variant, True, grads)
    # Updates are lr (0.02) x NS5 entries of magnitude < 1.2: within one bf16 ulp of 1, or
    # fp32 rounding amplified by 5 iterations (batched and single matmuls may block differently).
    for p, s in zip(plain, sharded):
        for k in SHAPES:
            np.testing.assert_allclose(s[k], p[k], atol=tol * 0.02, rtol=0, err_msg=k)
    assert "all-gather" in sharded_hlo and "all-gather" not in plain_hlo
