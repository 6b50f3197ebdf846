"""Muon vs an independent float64 NumPy port of docs/reference-notes.md#muon (torch (out, in) layout)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from golf_jax.optim.build import build_optimizer
from golf_jax.optim.muon import newton_schulz5, scale_by_muon

# Our (in, out) shapes; the bank is 3 stacked (64, 32) kernels.
SHAPES = {"sq": (64, 64), "wide": (64, 192), "tall": (192, 64), "bank": (3, 64, 32)}
LR, WD = 0.02, 0.5  # large wd: the decay term is ~25% of the update, so it is tested


# ---- float64 NumPy reference, written from docs/reference-notes.md#muon in the torch layout ----
def ns5_ref(g_rc: np.ndarray) -> np.ndarray:
    """Spec NS5 on one torch (rows=out, cols=in) matrix, in float64."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g_rc.astype(np.float64)
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    x = x / (np.linalg.norm(x) + 1e-7)
    for _ in range(5):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if transposed else x


def muon_ref(w0: np.ndarray, grads: list, mus: list, lr_scales: list, row_normalize: bool = False) -> list:
    """Per-step deltas W_{t+1}-W_t of torch Muon (sum momentum, Nesterov, wd, lr);
    `row_normalize`: MuonEq-R (#1735), each torch row of u divided by max(‖row‖, 1e-7).

    `w0` and `grads` are in OUR (…, in, out) layout; they are transposed to torch's
    (…, out, in) here and the deltas transposed back, so the layout convention of
    the shape scale is checked too.
    """
    w = np.swapaxes(w0.astype(np.float64), -1, -2)
    buf = np.zeros_like(w)
    deltas = []
    for g_ours, mu, s in zip(grads, mus, lr_scales):
        g = np.swapaxes(g_ours.astype(np.float64), -1, -2)
        buf = mu * buf + g
        u = g + mu * buf
        if row_normalize:
            u = u / np.maximum(np.linalg.norm(u, axis=-1, keepdims=True), 1e-7)
        rows, cols = g.shape[-2:]
        scale = max(1.0, rows / cols) ** 0.5
        o = np.stack([ns5_ref(m) for m in u.reshape(-1, rows, cols)]).reshape(u.shape)
        lr = LR * s
        new_w = w * (1.0 - lr * WD)
        new_w = new_w - lr * scale * o
        deltas.append(np.swapaxes(new_w - w, -1, -2))
        w = new_w
    return deltas


def _opt_cfg(ns_dtype: str, momentum: float = 0.95, variant: str = "muon") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        muon_variant=variant,
        matrix_lr=LR, scalar_lr=0.01, tied_embed_lr=0.01, head_lr=0.01, beta1=0.9,
        beta2=0.95, adam_eps=1e-8, muon_momentum=momentum, muon_ns_steps=5,
        muon_nesterov=True, muon_weight_decay=WD, adam_weight_decay=0.0,
        embed_weight_decay=None, grad_clip_norm=0.0, muon_ns_dtype=ns_dtype,
        muon_momentum_dtype="float32",
    ))


def _problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {k: 0.05 * rng.standard_normal(s) for k, s in SHAPES.items()}
    grads = [{k: rng.standard_normal(s) for k, s in SHAPES.items()} for _ in range(3)]
    return params, grads


def _run_ours(ns_dtype: str, params, grads, mus=None, lr_scales=None, variant: str = "muon") -> list:
    """Deltas of our full Muon group (build_optimizer, all leaves labelled muon)."""
    tx = build_optimizer(_opt_cfg(ns_dtype, variant=variant), {k: "muon" for k in params})
    p = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    state = tx.init(p)
    update = jax.jit(tx.update)
    deltas = []
    for t, g in enumerate(grads):
        extra = {}
        if mus is not None:
            extra["muon_momentum"] = jnp.float32(mus[t])
        if lr_scales is not None:
            extra["lr_scale"] = jnp.float32(lr_scales[t])
        g32 = {k: jnp.asarray(v, jnp.float32) for k, v in g.items()}
        u, state = update(g32, state, p, **extra)
        deltas.append({k: np.asarray(v, np.float64) for k, v in u.items()})
        p = optax.apply_updates(p, u)
    return deltas


def _rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


def test_muon_fp32_matches_numpy_float64():
    # Tolerance: fp32 NS5 through 5 iterations measured max|err| <= 3e-6 * max|ref|
    # and Frobenius-relative 1.5e-6 on these shapes (fp32 roundoff 6e-8 amplified by
    # ~25 dependent roundings and |p'(σ)| <= 1.6 per iteration); 1e-4 leaves >30x.
    params, grads = _problem(0)
    ours = _run_ours("float32", params, grads)
    ref = {k: muon_ref(params[k], [g[k] for g in grads], [0.95] * 3, [1.0] * 3)
           for k in SHAPES}
    _assert_fp32_close(ours, ref)


def _assert_fp32_close(ours: list, ref: dict) -> None:
    """Every leaf's delta of every step within the fp32 tolerance argued above."""
    for t in range(len(ours)):
        for k in SHAPES:
            r = ref[k][t]
            np.testing.assert_allclose(ours[t][k], r, rtol=1e-4, atol=1e-4 * np.abs(r).max(),
                                       err_msg=f"{k} step {t + 1}")


def test_muoneq_r_fp32_matches_numpy_float64():
    # The same fp32 tolerance argument as above: row normalisation adds one rounding.
    params, grads = _problem(1)
    grads = [{k: v * np.linspace(0.1, 10.0, v.shape[-1]) for k, v in g.items()} for g in grads]  # uneven rows
    ours = _run_ours("float32", params, grads, variant="muoneq_r")
    plain = _run_ours("float32", params, grads)
    ref = {k: muon_ref(params[k], [g[k] for g in grads], [0.95] * 3, [1.0] * 3, row_normalize=True)
           for k in SHAPES}
    _assert_fp32_close(ours, ref)
    for t in range(3):
        for k in SHAPES:
            assert _rel_err(plain[t][k], ref[k][t]) > 1e-2  # the variant changes the update


def test_unknown_muon_variant_is_rejected():
    with pytest.raises(ValueError, match="opt.muon_variant='muon_x'"):
        build_optimizer(_opt_cfg("float32", variant="muon_x"), {"w": "muon"})


def test_muon_bf16_close_to_numpy_float64():
    # Tolerance: bf16 has unit roundoff 2^-9 ≈ 2e-3 and every element passes ~25
    # bf16 roundings; measured Frobenius-relative error of bf16 NS5 vs float64 is
    # 1.7e-2..3.1e-2 (a NumPy emulation rounding to bf16 after each torch op gives
    # 2.7e-2..3.1e-2, so this is intrinsic). 5e-2 keeps margin; rounding the NS
    # coefficients to bf16 (the naive JAX form) measured 5.1e-2..6.9e-2.
    params, grads = _problem(1)
    ours = _run_ours("bfloat16", params, grads)
    for k in SHAPES:
        ref = muon_ref(params[k], [g[k] for g in grads], [0.95] * 3, [1.0] * 3)
        for t in range(3):
            assert _rel_err(ours[t][k], ref[t]) < 5e-2, (k, t, _rel_err(ours[t][k], ref[t]))


def test_momentum_and_lr_scale_extra_args():
    # A momentum warmup and a changing lr_scale must reach Muon through chain and
    # partition: results equal NumPy with the same per-step values, and differ from
    # the constructor's constant momentum by far more than the tolerance.
    params, grads = _problem(2)
    mus, scales = [0.5, 0.8, 0.99], [1.0, 0.6, 0.3]
    ours = _run_ours("float32", params, grads, mus=mus, lr_scales=scales)
    for k in SHAPES:
        g = [gr[k] for gr in grads]
        ref = muon_ref(params[k], g, mus, scales)
        const = muon_ref(params[k], g, [0.95] * 3, scales)
        for t in range(3):
            np.testing.assert_allclose(ours[t][k], ref[t], rtol=1e-4,
                                       atol=1e-4 * np.abs(ref[t]).max())
        assert _rel_err(const[2], ref[2]) > 1e-2


ns5 = jax.jit(newton_schulz5, static_argnames=("dtype",))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_ns5_singular_values(dtype):
    # Rectangular Gaussian inputs: σ_min/‖G‖_F is bounded away from 0, so 5 quintic
    # steps push every σ into the NS5 band (measured 0.68..1.14 in float64). Square
    # matrices can keep a tiny σ (measured 0.06), so they are not used here.
    # Same shapes as the transpose test below, so the jit cache is shared.
    g = jax.random.normal(jax.random.key(3), (3, 40, 24))
    for x in (g, jnp.swapaxes(g, -1, -2)):
        s = np.linalg.svd(np.asarray(ns5(x, dtype=dtype), np.float64), compute_uv=False)
        assert 0.6 <= s.min() and s.max() <= 1.2, (x.shape, s.min(), s.max())


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 4e-3)])
def test_ns5_transpose_and_batch(dtype, tol):
    # Both orientations iterate on the same wide matrix, so the results agree up to
    # matmul accumulation order (measured 0 or 6.6e-7 in fp32, 0 in bf16); tol is
    # far below the bf16-vs-float64 error (2e-2), 4e-3 = one bf16 ulp at 0.5..1.
    g = jax.random.normal(jax.random.key(4), (3, 40, 24))
    out = np.asarray(ns5(g, dtype=dtype), np.float32)
    out_t = np.asarray(ns5(jnp.swapaxes(g, -1, -2), dtype=dtype), np.float32)
    np.testing.assert_allclose(np.swapaxes(out, -1, -2), out_t, rtol=0, atol=tol)
    for i in range(3):  # a bank is per-matrix NS5
        single = np.asarray(ns5(g[i], dtype=dtype), np.float32)
        np.testing.assert_allclose(out[i], single, rtol=0, atol=tol)


def test_ns5_fp32_matches_reference_directly():
    g = np.random.default_rng(5).standard_normal((96, 32))
    ref = ns5_ref(g.T).T  # our (in, out) = torch (out, in)ᵀ
    ours = np.asarray(ns5(jnp.asarray(g, jnp.float32), dtype=jnp.float32))
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_shape_scale_layout():
    # Our (in, out) = (24, 72) kernel (mlp_up-like) is torch's [72, 24]: scale √3;
    # (72, 24) (mlp_down-like) gets 1.
    g = {"up": jax.random.normal(jax.random.key(0), (24, 72)),
         "down": jax.random.normal(jax.random.key(1), (72, 24))}
    tx = scale_by_muon(momentum=0.0, ns_dtype=jnp.float32)
    u, _ = jax.jit(tx.update)(g, tx.init(g))
    ns_up, ns_down = ns5(g["up"], dtype=jnp.float32), ns5(g["down"], dtype=jnp.float32)
    # jit vs eager fp32 differ by accumulation order only (~1e-7 here).
    np.testing.assert_allclose(np.asarray(u["up"]), math.sqrt(3) * np.asarray(ns_up), atol=1e-5)
    np.testing.assert_allclose(np.asarray(u["down"]), np.asarray(ns_down), atol=1e-5)
    assert np.abs(np.asarray(u["up"])).max() > 0.1


def test_muon_rejects_vectors_and_needs_momentum():
    tx = scale_by_muon()
    with pytest.raises(ValueError, match="ndim >= 2.*scalar"):
        tx.init({"gain": jnp.zeros((8,))})
    tx = scale_by_muon(momentum=None)
    p = {"w": jnp.zeros((4, 4))}
    with pytest.raises(ValueError, match="muon_momentum"):
        tx.update(p, tx.init(p), p)
    u, state = tx.update(p, tx.init(p), p, muon_momentum=0.9)
    assert int(state.count) == 1 and state.momentum_buffer["w"].dtype == jnp.float32


def test_polar_express_ns_matches_numpy_float64():
    """Polar Express (#1787): five (a, b, c) triples, one per iteration, written out here
    from the PR's table in float64; the fp32 run agrees to fp32 roundoff."""
    from golf_jax.optim.muon import POLAR_EXPRESS_COEFFS, newton_schulz5

    table = [(8.156554524902461, -22.48329292557795, 15.878769915207462),
             (4.042929935166739, -2.808917465908714, 0.5000178451051316),
             (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
             (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
             (2.3465413258596377, -1.7097828382687081, 0.42323551169305323)]
    g = np.random.default_rng(5).standard_normal((24, 40))  # wide: no transpose
    x = g / (np.linalg.norm(g) + 1e-7)
    for a, b, c in table:
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    ours = np.asarray(newton_schulz5(jnp.asarray(g, jnp.float32), coeffs=POLAR_EXPRESS_COEFFS,
                                     dtype=jnp.float32), np.float64)
    np.testing.assert_allclose(ours, x, rtol=0, atol=2e-5 * np.abs(x).max())
    standard = np.asarray(newton_schulz5(jnp.asarray(g, jnp.float32), dtype=jnp.float32), np.float64)
    assert np.abs(standard - x).max() > 1e-2  # a different iteration
    # Polar Express lands closer to the orthogonal polar factor than the fixed triple.
    u, _, vt = np.linalg.svd(g, full_matrices=False)
    assert np.linalg.norm(ours - u @ vt) < np.linalg.norm(standard - u @ vt)
