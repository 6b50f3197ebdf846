"""build_optimizer: label routing, torch AdamW numerics, clipping, extra args, jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from golf_jax.optim.build import build_optimizer, clip_by_global_norm_torch, count_by_label
from golf_jax.optim.muon import newton_schulz5

SHAPES = {"emb": (16, 8), "w": (8, 12), "bank": (2, 8, 4), "gain": (8,), "s": (),
          "head": (8, 16), "mtp": (8, 16)}
LABELS = {"emb": "embed", "w": "muon", "bank": "muon", "gain": "scalar", "s": "scalar",
          "head": "head", "mtp": "frozen"}
LRS = {"embed": 0.035, "scalar": 0.025, "head": 0.008}
WDS = {"embed": 0.3, "scalar": 0.2, "head": 0.2}  # large, so decay errors show


def _cfg(clip: float = 0.0) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        matrix_lr=0.02, scalar_lr=LRS["scalar"], tied_embed_lr=LRS["embed"],
        head_lr=LRS["head"], beta1=0.9, beta2=0.95, adam_eps=1e-8, muon_momentum=0.95,
        muon_ns_steps=5, muon_nesterov=True, muon_weight_decay=0.04,
        adam_weight_decay=WDS["scalar"], embed_weight_decay=WDS["embed"],
        grad_clip_norm=clip, muon_ns_dtype="float32",
    ))


def _tree(seed: int, scale: float = 1.0) -> dict:
    rng = np.random.default_rng(seed)
    return {k: scale * rng.standard_normal(s) for k, s in SHAPES.items()}


def _f32(tree: dict) -> dict:
    return {k: jnp.asarray(v, jnp.float32) for k, v in tree.items()}


def adamw_ref(p, grads, lr, wd, lr_scales, b1=0.9, b2=0.95, eps=1e-8):
    """torch.optim.AdamW in float64, written as torch's _single_tensor_adamw."""
    p = np.array(p, np.float64)
    m, v, deltas = np.zeros_like(p), np.zeros_like(p), []
    for t, (g, s) in enumerate(zip(grads, lr_scales), start=1):
        lr_t = lr * s
        old = p.copy()
        p = p * (1 - lr_t * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        denom = np.sqrt(v) / np.sqrt(bc2) + eps
        p = p - (lr_t / bc1) * m / denom
        deltas.append(p - old)
    return deltas


def _run(tx, params, grads, **extra_per_step):
    p, state, out = _f32(params), None, []
    state = tx.init(p)
    update = jax.jit(tx.update)
    for t, g in enumerate(grads):
        extra = {k: jnp.float32(v[t]) for k, v in extra_per_step.items()}
        u, state = update(_f32(g), state, p, **extra)
        out.append({k: np.asarray(x, np.float64) for k, x in u.items()})
        p = optax.apply_updates(p, u)
    return out


def _adam_leaves():
    return [k for k, lab in LABELS.items() if lab in LRS]


def test_adamw_matches_torch_semantics_with_changing_lr_scale():
    # fp32 Adam vs float64: measured max |err| <= 2e-7 relative to the update
    # scale (a few fp32 roundings of m, v, sqrt and the divide); tolerance 1e-5.
    params, scales = _tree(0), [1.0, 0.6, 0.25]
    grads = [_tree(10 + t) for t in range(3)]
    ours = _run(build_optimizer(_cfg(), LABELS), params, grads, lr_scale=scales)
    for k in _adam_leaves():
        lab = LABELS[k]
        ref = adamw_ref(params[k], [g[k] for g in grads], LRS[lab], WDS[lab], scales)
        for t in range(3):
            np.testing.assert_allclose(ours[t][k], ref[t], rtol=1e-5,
                                       atol=1e-5 * np.abs(ref[t]).max(), err_msg=f"{k} {t}")


def test_labels_route_leaves():
    params, grads = _tree(1), [_tree(2)]
    tx = build_optimizer(_cfg(), LABELS)
    (u,) = _run(tx, params, grads)
    assert np.all(u["mtp"] == 0.0)  # frozen
    # Embed/head: Adam step 1 is lr·(g/(|g|+eps) + wd·p) with the group's own lr.
    for k in ("emb", "head"):
        lab = LABELS[k]
        g, p = grads[0][k], params[k]
        want = -LRS[lab] * (g / (np.abs(g) + 1e-8) + WDS[lab] * p)
        np.testing.assert_allclose(u[k], want, rtol=1e-5, atol=1e-7)
    # Muon step 1: buf = g, u = (1+μ)g; output -lr·(scale·NS5(u) + wd·p).
    for k in ("w", "bank"):
        g = jnp.asarray(grads[0][k] * 1.95, jnp.float32)
        ns = np.asarray(newton_schulz5(g, dtype=jnp.float32), np.float64)
        scale = np.sqrt(max(1.0, SHAPES[k][-1] / SHAPES[k][-2]))
        want = -0.02 * (scale * ns + 0.04 * params[k])
        np.testing.assert_allclose(u[k], want, rtol=1e-4, atol=1e-6)


def test_frozen_leaf_never_changes_and_counts():
    params = _f32(_tree(3))
    tx = build_optimizer(_cfg(clip=0.3), LABELS)
    state, p, update = tx.init(params), params, jax.jit(tx.update)
    for t in range(3):
        u, state = update(_f32(_tree(20 + t)), state, p, lr_scale=1.0)
        p = optax.apply_updates(p, u)
    np.testing.assert_array_equal(np.asarray(p["mtp"]), np.asarray(params["mtp"]))
    counts = count_by_label(params, LABELS)
    assert counts == {"embed": 128, "muon": 96 + 64, "scalar": 9, "head": 128, "frozen": 128}


def test_global_clip_matches_numpy():
    grads = _tree(4, scale=2.0)
    (out, _) = clip_by_global_norm_torch(0.3).update(_f32(grads), optax.EmptyState())
    norm = np.sqrt(sum(np.sum(g**2) for g in grads.values()))  # frozen leaves count too
    for k, g in grads.items():
        np.testing.assert_allclose(np.asarray(out[k]), g * min(1.0, 0.3 / (norm + 1e-6)),
                                   rtol=1e-6, atol=1e-9)
    small = _tree(5, scale=1e-3)  # norm < 0.3: untouched
    (out, _) = clip_by_global_norm_torch(0.3).update(_f32(small), optax.EmptyState())
    for k in small:
        np.testing.assert_allclose(np.asarray(out[k]), small[k], rtol=1e-6)


def test_clip_inside_optimizer_matches_numpy_adamw():
    # Gradient norms 30x above, below and 3x above the clip: Adam's later steps
    # depend on the relative sizes, so skipping or misplacing the clip fails here.
    params, scales = _tree(6), [1.0, 1.0, 1.0]
    raw = [_tree(30, 10.0), _tree(31, 0.01), _tree(32, 1.0)]
    clipped = []
    for g in raw:
        norm = np.sqrt(sum(np.sum(x**2) for x in g.values()))
        clipped.append({k: x * min(1.0, 0.3 / (norm + 1e-6)) for k, x in g.items()})
    ours = _run(build_optimizer(_cfg(clip=0.3), LABELS), params, raw)
    for k in _adam_leaves():
        lab = LABELS[k]
        ref = adamw_ref(params[k], [g[k] for g in clipped], LRS[lab], WDS[lab], scales)
        for t in range(3):
            np.testing.assert_allclose(ours[t][k], ref[t], rtol=1e-5,
                                       atol=1e-5 * np.abs(ref[t]).max())


def test_extra_args_reach_every_group():
    params, grads = _f32(_tree(7)), _f32(_tree(8))
    tx = build_optimizer(_cfg(), LABELS)
    update = jax.jit(tx.update)
    # Step 1 from a fresh buffer is momentum-independent (NS5(g + μg) = NS5(g)),
    # so compare on step 2.
    _, state = update(_f32(_tree(12)), tx.init(params), params)
    full, _ = update(grads, state, params, lr_scale=1.0, muon_momentum=0.95)
    default, _ = update(grads, state, params)
    half, _ = update(grads, state, params, lr_scale=0.5, muon_momentum=0.95)
    mom, _ = update(grads, state, params, lr_scale=1.0, muon_momentum=0.5)
    for k, lab in LABELS.items():
        np.testing.assert_array_equal(np.asarray(default[k]), np.asarray(full[k]))
        if lab == "frozen":
            continue
        np.testing.assert_allclose(np.asarray(half[k]), 0.5 * np.asarray(full[k]), rtol=1e-6)
        changed = not np.allclose(np.asarray(mom[k]), np.asarray(full[k]), rtol=1e-3)
        assert changed == (lab == "muon"), k


def test_jit_does_not_recompile_when_schedule_values_change():
    params, grads = _f32(_tree(9)), _f32(_tree(11))
    tx = build_optimizer(_cfg(clip=0.3), LABELS)
    traces = []

    @jax.jit
    def step(p, s, g, lr_scale, mu):
        traces.append(1)  # Python side effect: runs once per trace
        u, s = tx.update(g, s, p, lr_scale=lr_scale, muon_momentum=mu)
        return optax.apply_updates(p, u), s

    state, p = tx.init(params), params
    for t, (lr, mu) in enumerate([(1.0, 0.92), (0.7, 0.95), (0.1, 0.99)]):
        p, state = step(p, state, grads, jnp.float32(lr), jnp.float32(mu))
    assert len(traces) == 1
    assert step._cache_size() == 1


def test_bad_config_and_labels():
    with pytest.raises(ValueError, match="unknown labels.*'adam'"):
        build_optimizer(_cfg(), {"w": "adam"})
    cfg = _cfg()
    del cfg["matrix_lr"]
    with pytest.raises(ValueError, match="matrix_lr"):
        build_optimizer(cfg, LABELS)
    cfg = _cfg()
    cfg.embed_weight_decay = None  # falls back to adam_weight_decay
    build_optimizer(cfg, LABELS)
