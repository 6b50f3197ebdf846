"""SDClip GPTQ (the SP8192 stack, #1735) against a float64 transcription of the
reference, and the calibration-reserve flag.

The transcription follows #1735's `gptq_quantize_weight` step by step (dead columns,
damping 0.01·mean diag, act order by descending diag H, H⁻¹ by an explicit inverse
and its upper Cholesky factor, 128-column blocks with the lazy inter-block update,
s = fp16(k·std(row, unbiased)/clip) of the original rows, q clamped to ±clip), in
float64 numpy; only the fp16 rounding of the scale is shared with the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from golf_jax.quant import hessian
from golf_jax.quant.gptq import GPTQSettings, gptq_quantize, rtn_quantize


def _reference_sdclip_gptq(W, H, clip_sigmas, clip_range, block_size=128):
    """#1735 gptq_quantize_weight, transcribed to float64 numpy. Returns (Q int8, s fp16)."""
    W_orig = np.array(W, np.float64)
    rows, cols = W_orig.shape
    H = np.array(H, np.float64)
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    damp = 0.01 * np.diag(H).mean()
    H[np.diag_indices(cols)] += damp
    perm = np.argsort(-np.diag(H), kind="stable")
    invperm = np.argsort(perm)
    W_perm = W_orig[:, perm].copy()
    W_perm[:, dead[perm]] = 0
    H = H[perm][:, perm]
    Hinv = np.linalg.inv(H)  # cholesky_inverse(cholesky(H))
    Hinv = np.linalg.cholesky(Hinv).T  # cholesky(Hinv, upper=True)
    row_std = W_orig.std(axis=1, ddof=1)  # torch .std() is unbiased
    s = np.maximum(clip_sigmas * row_std / clip_range, 1e-10).astype(np.float16)
    sf = s.astype(np.float64)
    Q = np.zeros((rows, cols), np.int8)
    W_work = W_perm.copy()
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W_block = W_work[:, i1:i2].copy()
        Hinv_block = Hinv[i1:i2, i1:i2]
        Err = np.zeros((rows, i2 - i1))
        for j in range(i2 - i1):
            w_col = W_block[:, j]
            d = Hinv_block[j, j]
            q_col = np.clip(np.rint(w_col / sf), -clip_range, clip_range)
            Q[:, i1 + j] = q_col.astype(np.int8)
            err = (w_col - q_col * sf) / d
            Err[:, j] = err
            W_block[:, j:] -= err[:, None] * Hinv_block[j, j:][None, :]
        if i2 < cols:
            W_work[:, i2:] -= Err @ Hinv[i1:i2, i2:]
    return Q[:, invperm], s


def _problem(seed, rows, cols, std):
    """Trained-like weights (heavy tails, std ~ `std`) and a correlated, rank-deficient H."""
    rng = np.random.default_rng(seed)
    W = std * rng.standard_t(4, (rows, cols)) * rng.uniform(0.5, 2.0, (rows, 1))
    X = rng.standard_normal((cols - 8, cols)) @ rng.standard_normal((cols, cols))
    H = X.T @ X / X.shape[0]
    H[7, :] = H[:, 7] = 0.0  # a dead column
    return W, H


@pytest.mark.parametrize("clip_range,k,block", [(31, 12.85, 32), (127, 20.0, 32), (31, 2.0, 128)])
def test_sdclip_gptq_matches_reference_transcription(clip_range, k, block):
    # std 0.02: k·std/clip is far below the 1/clip floor of the percentile path, so a
    # floor applied to SDClip scales would show; 80 columns span several blocks.
    W, H = _problem(int(k), 24, 80, 0.02)
    want_q, want_s = _reference_sdclip_gptq(W, H, k, clip_range, block)
    res = gptq_quantize(W, H, GPTQSettings(clip="sdclip", sdclip_k=k, clip_range=clip_range, damp=0.01,
                                           block_size=block, dtype=np.float64))
    assert res.scale.dtype == np.float16 and not res.used_fallback and res.clip == k
    np.testing.assert_array_equal(res.scale, want_s)
    np.testing.assert_array_equal(res.q, want_q)
    assert np.all(res.q[:, 7] == 0)  # the dead column
    if k == 2.0:  # a tight clip: q reaches both ends, never beyond ±clip_range
        assert res.q.min() == -clip_range and res.q.max() == clip_range
    # RTN with the same rule uses the same scales (no floor either).
    rtn = rtn_quantize(W, GPTQSettings(clip="sdclip", sdclip_k=k, clip_range=clip_range))
    np.testing.assert_array_equal(rtn.scale, want_s)


def test_sdclip_float32_default_close_to_reference():
    W, H = _problem(5, 32, 160, 0.02)
    want_q, want_s = _reference_sdclip_gptq(W, H, 12.85, 31)
    res = gptq_quantize(W.astype(np.float32), H.astype(np.float32), GPTQSettings(clip="sdclip", damp=0.01))
    assert np.mean(res.scale == want_s) > 0.95 and np.mean(res.q == want_q) > 0.95


def test_fits_reserve_and_log_line():
    assert hessian.fits_reserve(11.9, 12.0) and hessian.fits_reserve(12.0, 12.0)
    assert not hessian.fits_reserve(53.0, 12.0) and not hessian.fits_reserve(1.0, 0.0)
    over = hessian.reserve_line(53.0, 12.0)
    assert over.startswith("WARNING") and "OVER the 12.0s reserve" in over and "by 41.0s" in over
    assert "training data" in over
    assert "fits the 12.0s reserve" in hessian.reserve_line(3.0, 12.0)
    assert "no reserve" in hessian.reserve_line(3.0, 0.0, "selfgen")
