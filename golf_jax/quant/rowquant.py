"""Per-row symmetric quantization (no Hessian): the scale rules GPTQ and the
embedding export share.

Layout: W is [rows, cols]; every row gets one fp16 scale, q = clamp(round(W/s)).
Rounding is round-half-even (np.rint), like torch.round.

Two scale conventions exist in the reference (PR #1318):

* int6 (GPTQ and its percentile fallback): the scale is rounded to fp16 *first* and
  q is computed with that fp16 scale, so ``q * s16`` is exactly what the quantizer
  aimed for. We always do this for int6.
* int8 embeddings (docs/reference-notes.md#int8-rows): q is computed with the
  fp32 scale and only the stored scale is rounded to fp16, so the dequantized
  value is ``q * fp16(s)``, which is not what was rounded against. This is a
  reference quirk; ``exact_scale=True`` (our default) uses the fp16 scale instead,
  ``exact_scale=False`` reproduces the reference bit for bit.
"""

from __future__ import annotations

import numpy as np

INT6_CLIP = 31
INT7_CLIP = 63
INT8_CLIP = 127
INT8_CLIP_Q = 0.9999984  # the reference's INT8_CLIP_PERCENTILE / 100
FP16_TINY = np.float16(2.0**-24)  # smallest positive fp16: replaces scales that underflow to 0


def _work_dtype(W: np.ndarray) -> np.dtype:
    return np.dtype(np.float64) if W.dtype == np.float64 else np.dtype(np.float32)


def row_quantiles(absW: np.ndarray, ps: float | tuple[float, ...] | list[float]) -> np.ndarray:
    """Row-wise quantiles with linear interpolation, computed like torch.quantile.

    torch forms the rank as ``p * (n - 1)`` in the tensor's dtype and lerps with
    ``a + t(b-a)`` for t < 0.5 and ``b - (1-t)(b-a)`` otherwise; we do the same (in
    the working dtype) so results match the reference to the last bit in the
    common cases. p == 1.0 gives the exact row max. Returns [len(ps), rows].
    """
    scalar = np.isscalar(ps)
    ps_t = (ps,) if scalar else tuple(ps)
    dt = _work_dtype(absW)
    a = np.asarray(absW, dtype=dt)
    rows, n = a.shape
    if n == 0:
        out = np.zeros((len(ps_t), rows), dtype=dt)
        return out[0] if scalar else out
    ranks = [dt.type(p) * dt.type(n - 1) for p in ps_t]
    lo = [int(np.floor(r)) for r in ranks]
    hi = [min(int(np.ceil(r)), n - 1) for r in ranks]
    kth = sorted(set(lo) | set(hi))
    part = np.partition(a, kth, axis=1)
    out = np.empty((len(ps_t), rows), dtype=dt)
    for k, (r, l, h) in enumerate(zip(ranks, lo, hi)):
        va, vb = part[:, l], part[:, h]
        t = dt.type(r - dt.type(l))
        diff = vb - va
        out[k] = va + t * diff if t < 0.5 else vb - diff * (dt.type(1) - t)
    return out[0] if scalar else out


def to_fp16_scale(s: np.ndarray) -> np.ndarray:
    """fp16-round a scale vector (capped at the fp16 max); exact zeros (all-zero
    rows) become the smallest positive fp16 so W/s never divides by zero."""
    s16 = np.minimum(np.asarray(s), 65504.0).astype(np.float16)  # no inf scales
    return np.where(s16 > 0, s16, FP16_TINY).astype(np.float16)


def percentile_scale(
    W: np.ndarray, clip_range: int, percentile, scale_floor: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(clip value c, unrounded scale max(c/clip, 1/clip)) in the working dtype:
    [rows] for one percentile, [P, rows] for a tuple (one partition for all)."""
    dt = _work_dtype(W)
    c = row_quantiles(np.abs(np.asarray(W, dtype=dt)), percentile)
    s = c / dt.type(clip_range)
    if scale_floor:
        s = np.maximum(s, dt.type(1.0 / clip_range))
    return c, s


def sdclip_scale(W: np.ndarray, clip_range: int, k: float, ddof: int = 1) -> np.ndarray:
    """SDClip (#1735 L1368): s = k * std(row) / clip_range, std unbiased like torch."""
    dt = _work_dtype(W)
    std = np.asarray(W, dtype=dt).std(axis=1, ddof=ddof).astype(dt)
    return dt.type(k) * std / dt.type(clip_range)


def round_clamp(W: np.ndarray, s: np.ndarray, clip_range: int) -> np.ndarray:
    """clamp(round_half_even(W / s[:, None]), -clip, clip) as int8."""
    q = np.rint(W / s[:, None])
    np.clip(q, -clip_range, clip_range, out=q)
    return q.astype(np.int8)


def quantize_rows_percentile(
    W: np.ndarray,
    clip_range: int = INT6_CLIP,
    percentile: float = 1.0,
    scale_floor: bool = True,
    *,
    clip_values: bool = False,
    exact_scale: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-clip per-row quantization -> (q int8 [rows, cols], scale fp16 [rows]).

    c = quantile(|row|, p); s = fp16(max(c/clip, 1/clip)) (the floor is optional).
    ``clip_values`` first clips W to +-c (the int8 reference does; the int6 one only
    clamps q). ``exact_scale=False`` divides by the fp32 s instead of the stored fp16
    one (the int8 reference quirk, see the module docstring).
    """
    W = np.asarray(W)
    if W.ndim != 2:
        raise ValueError(f"quantize_rows_percentile needs a 2-D [rows, cols] matrix, got shape {W.shape}")
    dt = _work_dtype(W)
    Wd = W.astype(dt, copy=False)
    c, s = percentile_scale(Wd, clip_range, float(percentile), scale_floor)
    s16 = to_fp16_scale(s)
    if clip_values:
        Wd = np.clip(Wd, -c[:, None], c[:, None])
    div = s16.astype(dt) if exact_scale else np.where(s > 0, s, dt.type(FP16_TINY))
    return round_clamp(Wd, div, clip_range), s16


def quantize_rows_sdclip(
    W: np.ndarray, clip_range: int = INT6_CLIP, k: float = 12.85, scale_floor: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """SDClip per-row quantization (no error feedback); q uses the fp16 scale."""
    W = np.asarray(W)
    if W.ndim != 2:
        raise ValueError(f"quantize_rows_sdclip needs a 2-D [rows, cols] matrix, got shape {W.shape}")
    dt = _work_dtype(W)
    s = sdclip_scale(W, clip_range, k)
    if scale_floor:
        s = np.maximum(s, dt.type(1.0 / clip_range))
    s16 = to_fp16_scale(s)
    return round_clamp(W.astype(dt, copy=False), s16.astype(dt), clip_range), s16


def quantize_rows_int8(
    W: np.ndarray,
    clip_range: int = INT8_CLIP,
    percentile: float = INT8_CLIP_Q,
    *,
    exact_scale: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The embedding export (docs/reference-notes.md#int8-rows): clip to the 0.9999984 row quantile, floor
    the step at 1/clip, store fp16 scales. ``clip_range=63`` gives int7."""
    return quantize_rows_percentile(
        W, clip_range, percentile, scale_floor=True, clip_values=True, exact_scale=exact_scale
    )


def quantize_rows_int7(W: np.ndarray, *, exact_scale: bool = True) -> tuple[np.ndarray, np.ndarray]:
    return quantize_rows_int8(W, clip_range=INT7_CLIP, exact_scale=exact_scale)


def quantize_rows_absmax(W: np.ndarray, clip_range: int = INT8_CLIP) -> tuple[np.ndarray, np.ndarray]:
    """s = fp16(max(|row|, 1e-10) / clip), q = clamp(round(W / s)): the reference's
    _quantize_gate_int8_row for the small attention-gate matrices (#1736/#1855), no
    clipping search. A row whose scale underflows fp16 gets the smallest fp16 (q = 0)."""
    W = np.asarray(W)
    if W.ndim != 2:
        raise ValueError(f"quantize_rows_absmax needs a 2-D [rows, cols] matrix, got shape {W.shape}")
    dt = _work_dtype(W)
    Wd = W.astype(dt, copy=False)
    amax = np.abs(Wd).max(axis=1) if W.shape[1] else np.zeros(W.shape[0], dt)
    s16 = to_fp16_scale(np.maximum(amax, dt.type(1e-10)) / dt.type(clip_range))
    return round_clamp(Wd, s16.astype(dt), clip_range), s16
