"""GPTQ and per-row quantization: against a textbook float64 loop and hand examples."""

from __future__ import annotations

import numpy as np
import pytest

from golf_jax.quant.gptq import PERCENTILES, GPTQSettings, gptq_quantize, upper_inv_cholesky
from golf_jax.quant.rowquant import (
    quantize_rows_int7,
    quantize_rows_int8,
    quantize_rows_percentile,
    quantize_rows_sdclip,
    round_clamp,
    row_quantiles,
)


def _textbook_gptq(W, H, percentiles=PERCENTILES, clip=31, damp=0.005):
    """Slow, obviously correct GPTQ in float64: one column at a time, no blocking,
    U from an explicit inverse. Returns (q, fp16 scale, chosen p, mse)."""
    W = np.asarray(W, np.float64)
    H = np.array(H, np.float64)
    cols = H.shape[0]
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    H = H + damp * max(np.diag(H).mean(), 1e-6) * np.eye(cols)
    perm = np.argsort(-np.diag(H), kind="stable")
    Wp = W[:, perm].copy()
    Wp[:, dead[perm]] = 0
    U = np.linalg.cholesky(np.linalg.inv(H[np.ix_(perm, perm)])).T  # H^-1 = U^T U
    best = None
    for p in percentiles:
        c = np.quantile(np.abs(W), p, axis=1)
        s16 = np.maximum(c / clip, 1 / clip).astype(np.float16)
        s = s16.astype(np.float64)
        Wk, Q = Wp.copy(), np.zeros_like(Wp)
        for i in range(cols):
            Q[:, i] = np.clip(np.rint(Wk[:, i] / s), -clip, clip)
            e = (Wk[:, i] - Q[:, i] * s) / U[i, i]
            Wk[:, i + 1 :] -= np.outer(e, U[i, i + 1 :])
        mse = np.mean((Wp - Q * s[:, None]) ** 2)
        if best is None or mse < best[3]:
            best = (Q[:, np.argsort(perm)].astype(np.int8), s16, p, mse)
    return best


def _spd(rng, cols, n=None, mix=True):
    n = n or 2 * cols
    X = rng.standard_normal((n, cols))
    if mix:
        X = X @ rng.standard_normal((cols, cols))
    return X.T @ X / n


def _hess_err(W, Wh, H):
    D = W - Wh
    return float(np.trace(D @ H @ D.T))


def test_gptq_beats_rtn_on_correlated_hessian():
    rng = np.random.default_rng(0)
    cols, rows, rho = 128, 64, 0.95
    # AR(1) inputs: strongly correlated neighbouring features.
    Z = rng.standard_normal((4096, cols))
    X = np.empty_like(Z)
    X[:, 0] = Z[:, 0]
    for j in range(1, cols):
        X[:, j] = rho * X[:, j - 1] + np.sqrt(1 - rho**2) * Z[:, j]
    H = X.T @ X / X.shape[0]
    W = rng.standard_normal((rows, cols))
    res = gptq_quantize(W, H, GPTQSettings(percentiles=(1.0,), dtype=np.float64))
    s = res.scale.astype(np.float64)
    rtn = round_clamp(W, s, 31)
    e_gptq = _hess_err(W, res.q * s[:, None], H)
    e_rtn = _hess_err(W, rtn * s[:, None], H)
    assert e_gptq < 0.5 * e_rtn, (e_gptq, e_rtn)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sub_block", [1, 4, 16])
def test_matches_textbook_loop(seed, sub_block):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((8, 48)) * rng.uniform(0.5, 3.0, (8, 1))
    H = _spd(rng, 48, n=40)  # rank-deficient: damping matters
    if seed == 2:
        H[5, :] = H[:, 5] = 0.0  # a dead column
    want_q, want_s, want_p, want_mse = _textbook_gptq(W, H)
    res = gptq_quantize(W, H, GPTQSettings(block_size=16, sub_block=sub_block, dtype=np.float64))
    np.testing.assert_array_equal(res.q, want_q)
    np.testing.assert_array_equal(res.scale, want_s)
    assert res.clip == want_p and not res.used_fallback
    assert res.mse == pytest.approx(want_mse, rel=1e-9)
    if seed == 2:
        assert np.all(res.q[:, 5] == 0)


def test_float32_default_close_to_textbook():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((32, 96)).astype(np.float32)
    H = _spd(rng, 96).astype(np.float32)
    want_q = _textbook_gptq(W, H, percentiles=(1.0,))[0]
    res = gptq_quantize(W, H, GPTQSettings(percentiles=(1.0,), block_size=32))
    assert res.q.dtype == np.int8 and res.scale.dtype == np.float16
    assert np.mean(res.q == want_q) > 0.95


def test_upper_inv_cholesky():
    H = _spd(np.random.default_rng(4), 200, mix=False)  # well conditioned
    U = upper_inv_cholesky(H)
    np.testing.assert_array_equal(np.triu(U), U)
    np.testing.assert_allclose(U.T @ U, np.linalg.inv(H), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(U, np.linalg.cholesky(np.linalg.inv(H)).T, rtol=1e-9, atol=1e-12)
    with pytest.raises(np.linalg.LinAlgError):
        upper_inv_cholesky(-H)


def test_act_order_is_undone():
    rng = np.random.default_rng(5)
    cols = 40
    W = rng.standard_normal((6, cols))
    # Diagonal H: no error feedback, so GPTQ must equal RTN in the ORIGINAL order.
    H = np.diag(rng.uniform(0.1, 10.0, cols))
    res = gptq_quantize(W, H, GPTQSettings(percentiles=(1.0,), block_size=16, dtype=np.float64))
    assert not np.array_equal(res.perm, np.arange(cols))
    np.testing.assert_array_equal(res.perm, np.argsort(-np.diag(H)))
    np.testing.assert_array_equal(res.q, round_clamp(W, res.scale.astype(np.float64), 31))
    # Equivariance with a correlated H: permuting the inputs permutes the output.
    H = _spd(rng, cols)
    pi = rng.permutation(cols)
    a = gptq_quantize(W, H, GPTQSettings(block_size=16, dtype=np.float64))
    b = gptq_quantize(W[:, pi], H[np.ix_(pi, pi)], GPTQSettings(block_size=16, dtype=np.float64))
    np.testing.assert_array_equal(b.q, a.q[:, pi])


def test_cholesky_failure_escalates_damping():
    cols = 16
    W = np.random.default_rng(6).standard_normal((4, cols))
    H = np.eye(cols)
    H[3, 3] = -0.02  # indefinite; 0.005 * mean diag is not enough, 0.05 is
    res = gptq_quantize(W, H, GPTQSettings(dtype=np.float64))
    assert not res.used_fallback and res.extra_damp_scale == 0.05
    d1 = 0.005 * np.diag(H).mean()
    assert res.damping == pytest.approx(d1 + 0.05 * (np.diag(H).mean() + d1), rel=1e-12)
    ok = gptq_quantize(W, _spd(np.random.default_rng(7), cols), GPTQSettings(dtype=np.float64))
    assert ok.extra_damp_scale == 0.0


@pytest.mark.parametrize("H", [-np.eye(16), np.full((16, 16), np.nan)])
def test_cholesky_failure_falls_back_to_percentile_search(H):
    W = np.random.default_rng(8).standard_normal((4, 16))
    res = gptq_quantize(W, H, GPTQSettings(dtype=np.float64))
    assert res.used_fallback
    errs = []
    for p in PERCENTILES:
        q, s = quantize_rows_percentile(W, 31, p)
        errs.append(np.mean((W - q * s.astype(np.float64)[:, None]) ** 2))
    k = int(np.argmin(errs))
    want_q, want_s = quantize_rows_percentile(W, 31, PERCENTILES[k])
    np.testing.assert_array_equal(res.q, want_q)
    np.testing.assert_array_equal(res.scale, want_s)


def test_double_damp_changes_only_the_damping():
    rng = np.random.default_rng(9)
    W, H, d = rng.standard_normal((8, 32)), _spd(rng, 32, n=20), 0.005
    m = H.diagonal().mean()
    single = gptq_quantize(W, H, GPTQSettings(dtype=np.float64))
    double = gptq_quantize(W, H, GPTQSettings(double_damp=True, dtype=np.float64))
    assert single.damping == pytest.approx(d * m, rel=1e-12)
    assert double.damping == pytest.approx(d * m + d * (m + d * m), rel=1e-12)  # ~0.010025 m
    # Literally: the same as damping once by hand, then running the default path.
    H1 = H.copy()
    H1[np.diag_indices(32)] += d * m
    manual = gptq_quantize(W, H1, GPTQSettings(dtype=np.float64))
    np.testing.assert_array_equal(double.q, manual.q)
    np.testing.assert_array_equal(double.scale, manual.scale)
    assert (double.clip, double.mse) == (manual.clip, manual.mse)
    assert double.damping == pytest.approx(d * m + manual.damping, rel=1e-12)


def test_percentile_selection_picks_lowest_mse():
    rng = np.random.default_rng(10)
    W = rng.standard_t(2.0, (16, 256))  # heavy tails: the candidates differ
    H = _spd(rng, 256)
    res = gptq_quantize(W, H, GPTQSettings(dtype=np.float64))
    assert len(set(res.candidate_mse)) == len(PERCENTILES)
    k = int(np.argmin(res.candidate_mse))
    assert res.clip == PERCENTILES[k] and res.mse == min(res.candidate_mse)
    for j, p in enumerate(PERCENTILES):
        one = gptq_quantize(W, H, GPTQSettings(percentiles=(p,), dtype=np.float64))
        assert one.mse == pytest.approx(res.candidate_mse[j], rel=1e-9)
        if j == k:
            np.testing.assert_array_equal(one.q, res.q)
    # Every row under the 1/31 floor: all candidates tie, the first one is kept.
    small = gptq_quantize(W * 1e-3, H, GPTQSettings(dtype=np.float64))
    assert len(set(small.candidate_mse)) == 1 and small.clip == PERCENTILES[0]


def test_sdclip_mode():
    rng = np.random.default_rng(11)
    W = rng.standard_normal((8, 64))
    res = gptq_quantize(W, np.eye(64), GPTQSettings(clip="sdclip", sdclip_k=3.0, dtype=np.float64))
    q, s = quantize_rows_sdclip(W, 31, 3.0)  # identity H: no feedback, = RTN
    np.testing.assert_array_equal(res.scale, s)
    np.testing.assert_array_equal(res.q, q)
    assert res.clip == 3.0


def test_row_quantiles_like_torch():
    a = np.array([[0, 1, 2, 3, 4], [4, 3, 2, 1, 0]], np.float32)
    np.testing.assert_allclose(row_quantiles(a, (0.9, 0.5, 1.0)), [[3.6, 3.6], [2, 2], [4, 4]], rtol=1e-6)


def test_rowquant_int6_hand_example():
    W = np.array([[0.1, -0.2, 0.05, 0.3], [3.1, -1.0, 0.5, 0.0]], np.float32)
    q, s = quantize_rows_percentile(W)  # int6, p = 1 (row max), floor 1/31
    # Row 0: max 0.3 < 1 -> floor: s = fp16(1/31) = 1057/32768 = 0.032257080078125;
    #   0.1/s = 3.10 -> 3, -0.2/s = -6.20 -> -6, 0.05/s = 1.55 -> 2, 0.3/s = 9.30 -> 9.
    # Row 1: s = fp16(3.1/31) = fp16(0.1) = 0.0999755859375;
    #   3.1/s = 31.008 -> 31, -1/s = -10.002 -> -10, 0.5/s = 5.001 -> 5.
    assert s.dtype == np.float16 and q.dtype == np.int8
    np.testing.assert_array_equal(s.astype(np.float64), [1057 / 32768, 0.0999755859375])
    np.testing.assert_array_equal(q, [[3, -6, 2, 9], [31, -10, 5, 0]])
    # Without the floor row 0 gets s = fp16(0.3/31) and a max of exactly 31.
    q2, _ = quantize_rows_percentile(W, scale_floor=False)
    assert q2[0, 3] == 31
    # Clamping: with p = 0.5 the outlier 3.1 is far above the clip value.
    q3, _ = quantize_rows_percentile(W[1:], percentile=0.5)
    assert q3[0, 0] == 31


def test_rowquant_int8_hand_example_and_reference_quirk():
    W = np.array([[1.27, -1.27, 1.0051], [0.5, -0.25, 0.0]], np.float32)
    q, s = quantize_rows_int8(W)  # exact: q uses the stored fp16 scale
    qr, sr = quantize_rows_int8(W, exact_scale=False)  # reference: q uses the fp32 scale
    # Row 0: c = 1.27 (the 0.9999984 quantile of [1.0051, 1.27, 1.27]), s32 = 0.01,
    #   s16 = fp16(0.01) = 1311/131072 = 0.0100021...; 1.0051/s32 = 100.51 -> 101,
    #   1.0051/s16 = 100.489 -> 100.
    # Row 1: c = 0.25 + 0.9999984 * 0.25 ~ 0.4999996 < 1 -> floor s32 = 1/127,
    #   s16 = 1032/131072; W is clipped to +-c first: c/s32 = 63.49995 -> 63,
    #   c/s16 = 63.5036 -> 64; -0.25 -> -31.75 / -31.752 -> -32.
    np.testing.assert_array_equal(s, sr)
    np.testing.assert_array_equal(s.astype(np.float64), [1311 / 131072, 1032 / 131072])
    np.testing.assert_array_equal(q, [[127, -127, 100], [64, -32, 0]])
    np.testing.assert_array_equal(qr, [[127, -127, 101], [63, -32, 0]])
    q7, s7 = quantize_rows_int7(W)
    assert np.abs(q7).max() == 63 and s7[0] == np.float16(1.27 / 63)
