"""Pre-quant TTT on val (non-compliant reproduction): parallel local SGD and the discriminative LR."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from golf_jax.core import mesh as mesh_lib
from golf_jax.config import eval_config
from golf_jax.eval import adapt
from golf_jax.eval.ttt import prequant as prequant_ttt
from golf_jax.optim import step as optim_step

L = 128


def _p(**kw):
    p = eval_config().prequant_ttt
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def test_parallel_epoch_is_the_average_of_independent_replicas(tiny_lm):
    """8 simulated devices: device r trains chunks r, r+8 with its own AdamW; then the weights are averaged."""
    _, model, params, val, _ = tiny_lm
    val = val[: 12 * 256 + 1]  # 12 chunks of 256 targets (2 sequences each): devices 0–3 get two, 4–7 one
    # eps 1e-6, not 1e-8: Adam's first step lr·g/(|g|+eps) turns fp32 reduction-order noise into
    # visible differences where |g| ≈ eps (per-device vs single-device gradients sum in another order).
    p = _p(mode="parallel", epochs=1, lr=1e-3, lr_floor=1e-4, eps=1e-6, chunk_tokens=256, freeze_blocks=0,
           freeze_embed=True)
    mesh = mesh_lib.make_mesh()
    got, report = prequant_ttt.run(model, jax.device_put(params, mesh_lib.replicated(mesh)), val, L, p, mesh,
                                   log=lambda m: None)
    assert report["steps"] == 2

    tx, _ = prequant_ttt.build_tx(p, params)
    step = jax.jit(optim_step.make_step(adapt.lm_loss(model), tx))
    chunks = prequant_ttt.parallel_chunks(val, L, 256)
    replicas = []
    for r in range(8):
        state = optim_step.StepState(params, tx.init(params))
        for c in range(r, len(chunks), 8):
            x, y = chunks[c]
            state, _ = step(state, {"x": x, "y": y, "w": np.ones(len(x), np.float32),
                                    "hparams": {"lr_scale": np.float32(1.0)}})
        replicas.append(jax.device_get(state.params))
    want = jax.tree.map(lambda *xs: np.mean(np.stack(xs), axis=0), *replicas)
    got = jax.device_get(got)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got)):
        scale = max(float(np.max(np.abs(a))), 1e-6)
        np.testing.assert_allclose(b, a, atol=2e-6 * scale, rtol=0, err_msg=jax.tree_util.keystr(path))
    np.testing.assert_array_equal(got["tok_emb"]["embedding"], params["tok_emb"]["embedding"])  # frozen
    moved = np.abs(got["blocks_0"]["attn"]["c_q"]["kernel"] - params["blocks_0"]["attn"]["c_q"]["kernel"])
    assert moved.max() > 1e-4


@pytest.mark.parametrize("scope", ["blocks", "scalars"])
def test_discriminative_lr_reaches_what_its_scope_says(tiny_lm, scope):
    """One AdamW step (|Δ| ≈ lr where |g| ≫ eps): block 0 moves 0.3× as far as block 1 (L=2) in scope."""
    _, model, params, val, _ = tiny_lm
    p = _p(mode="discriminative", epochs=1, lr=1e-3, lr_floor=0.0, batch_seqs=2, freeze_blocks=0,
           depth_lr_min=0.3, depth_scope=scope)
    mesh = mesh_lib.make_mesh()
    got, report = prequant_ttt.run(model, jax.device_put(params, mesh_lib.replicated(mesh)), val[: 16 * L + 1], L,
                                   p, mesh, log=lambda m: None)
    assert report["steps"] == 1
    got = jax.device_get(got)

    def moved(block, *path):
        a, b = params[block], got[block]
        for k in path:
            a, b = a[k], b[k]
        return float(np.max(np.abs(b - a)))

    ratio_matrix = moved("blocks_0", "mlp", "fc", "kernel") / moved("blocks_1", "mlp", "fc", "kernel")
    ratio_scalar = moved("blocks_0", "attn_scale") / moved("blocks_1", "attn_scale")
    assert ratio_scalar == pytest.approx(0.3, rel=1e-3)
    assert ratio_matrix == pytest.approx(0.3 if scope == "blocks" else 1.0, rel=1e-3)
    lrs = adapt.depth_lr_tree(params, 1e-3, 0.3, 0, scope)
    assert lrs["tok_emb"]["embedding"] == 1e-3


def test_flat_schedule_and_freeze_follow_the_reference(tiny_lm):
    """#1306: lr_e = floor + (lr - floor)·½(1 + cos(π e/E)); freeze 2 (scalars) = only the block scalars."""
    _, _, params, _, _ = tiny_lm
    lr, floor, E = 5e-4, 5e-5, 6
    got = [floor + (lr - floor) * adapt.cosine(e, E) for e in range(E)]
    assert got[0] == lr and abs(got[5] - 8.0e-5) < 2e-6  # docs/reference-notes.md#prequant-flat: "epoch 5 about 8e-5"
    tx, trainable = prequant_ttt.build_tx(_p(mode="flat", freeze_blocks=2, freeze_scope="scalars"), params)
    _, frozen = adapt.count_trainable(params, trainable)
    assert frozen == 2 * (2 * 64 + 64 + 64 + 4)
