"""GPTQ int6 quantization (docs/reference-notes.md#gptq), vectorised for numpy on a CPU.

Convention: W is [rows=out, cols=in] (callers transpose our (in, out) kernels),
H is [cols, cols] = X^T X of the layer inputs.

Why it is fast: the error feedback of GPTQ is row-local (every row only ever
sees its own errors; H is shared), so all clip candidates run in one pass with
the candidates stacked along the row axis, rows whose candidate scales coincide
(e.g. every row under the 1/31 floor) are run once, the Cholesky factor and the
permutation are shared, the work runs in the transposed [cols, rows] layout so
each column is contiguous, and inside each 128-column block a second level of
small sub-blocks turns most of the rank-1 updates into BLAS GEMMs. All of these
are exact rewrites of the textbook algorithm (up to float summation order).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import threadpoolctl

from golf_jax.quant.rowquant import (
    INT6_CLIP,
    percentile_scale,
    round_clamp,
    sdclip_scale,
    to_fp16_scale,
)

PERCENTILES = (0.999, 0.9995, 0.9999, 0.99999, 1.0)
ESCALATION = (0.05, 0.1, 0.5, 1.0)


@dataclass
class GPTQResult:
    q: np.ndarray  # int8 [rows, cols], original column order
    scale: np.ndarray  # fp16 [rows]
    clip: float  # chosen percentile, or the SDClip k
    mse: float  # plain mean((W - q*s)^2) of the chosen candidate
    used_fallback: bool  # True: Cholesky failed at every damping, no error feedback
    damping: float  # total absolute amount added to diag(H) (incl. escalation)
    extra_damp_scale: float = 0.0  # escalation factor that succeeded (0 = none)
    perm: np.ndarray | None = None  # act-order permutation (None without act-order)
    candidate_mse: tuple[float, ...] = field(default_factory=tuple)


@contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Temporarily cap the BLAS threads (threadpoolctl); n=None leaves them alone.

    GPTQ issues thousands of small BLAS calls; on a shared or small CPU, thread
    hand-offs cost more than they gain (3-5x slower with 2 threads on a loaded
    2-core box), so gptq_quantize defaults to n=1.
    """
    if n is None:
        yield
        return
    with threadpoolctl.threadpool_limits(limits=int(n), user_api="blas"):
        yield


def _mean_diag(H: np.ndarray, clamp: bool) -> float:
    m = H.diagonal().mean()
    return H.dtype.type(max(m, 1e-6)) if clamp else m


def _add_diag(H: np.ndarray, amount) -> None:
    idx = np.arange(H.shape[0])
    H[idx, idx] += amount


def _chol_inv_lower(M: np.ndarray, base: int = 64) -> np.ndarray:
    """inv(cholesky(M)) by recursive 2x2 blocking, so nearly all flops are GEMMs.

    [[A, B^T], [B, C]] = L L^T with La = chol(A), X = B La^-T, Lc = chol(C - X X^T);
    inv(L) = [[La^-1, 0], [-Lc^-1 X La^-1, Lc^-1]]. Several times faster than
    numpy's potrf + a general solve on one core; raises LinAlgError if M is not PD.
    """
    n = M.shape[0]
    if n <= base:
        chol = np.linalg.cholesky(M)
        return np.tril(np.linalg.solve(chol, np.eye(n, dtype=M.dtype)))
    k = n // 2
    Ai = _chol_inv_lower(M[:k, :k], base)
    X = M[k:, :k] @ Ai.T
    Ci = _chol_inv_lower(M[k:, k:] - X @ X.T, base)
    out = np.zeros_like(M)
    out[:k, :k], out[k:, k:] = Ai, Ci
    out[k:, :k] = -(Ci @ (X @ Ai))
    return out


def upper_inv_cholesky(H: np.ndarray) -> np.ndarray:
    """U upper-triangular with H^-1 = U^T U, from one Cholesky of the reversed H.

    With J the reversal, J H J = L L^T gives H = (J L J)(J L J)^T with J L J upper,
    so H^-1 = (J L J)^-T (J L J)^-1 and U = J L^-1 J. By uniqueness of Cholesky
    (positive diagonal) this is the same U as cholesky(inv(H), upper=True).
    Raises np.linalg.LinAlgError when H is not positive definite.
    """
    Linv = _chol_inv_lower(np.ascontiguousarray(H[::-1, ::-1]))
    U = np.ascontiguousarray(Linv[::-1, ::-1])
    if not np.all(np.isfinite(U)) or np.any(U.diagonal() <= 0):
        raise np.linalg.LinAlgError("non-finite inverse Cholesky factor")
    return U


def _gptq_columns(Wt: np.ndarray, s: np.ndarray, U: np.ndarray, clip: int, block: int, sub: int) -> np.ndarray:
    """Blocked GPTQ on Wt [cols, R] (modified in place) with per-column scales s [R].

    Returns Qt [cols, R] as floats. Within a sub-block the pending updates are
    applied lazily as a GEMV (w_j -= U[j1:j, j]^T E[j1:j]); after each sub-block
    the rest of the block, and after each block all later columns, get GEMMs.
    """
    cols, R = Wt.shape
    Qt = np.empty_like(Wt)
    E = np.empty((block, R), dtype=Wt.dtype)
    tmp = np.empty(R, dtype=Wt.dtype)
    lo, hi = -float(clip), float(clip)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        Wb, Ub, Eb = Wt[i1:i2], U[i1:i2, i1:i2], E[: i2 - i1]
        for j1 in range(0, i2 - i1, sub):
            j2 = min(j1 + sub, i2 - i1)
            for j in range(j1, j2):
                w = Wb[j]
                if j > j1:
                    w -= Ub[j1:j, j] @ Eb[j1:j]
                q = Qt[i1 + j]
                np.divide(w, s, out=q)
                np.rint(q, out=q)
                np.clip(q, lo, hi, out=q)
                np.multiply(q, s, out=tmp)
                np.subtract(w, tmp, out=tmp)
                np.divide(tmp, Ub[j, j], out=Eb[j])
            if j2 < i2 - i1:
                Wb[j2:] -= Ub[j1:j2, j2:].T @ Eb[j1:j2]
        if i2 < cols:
            Wt[i2:] -= U[i1:i2, i2:].T @ Eb
    return Qt


def _candidate_scales(W: np.ndarray, settings: GPTQSettings):
    """([C, rows] fp16 scales, candidate labels). scale_floor None: the 1/clip floor
    for percentile clipping (#1318) and none for SDClip (#1735 has none; with trained
    weights, std ~0.02, a 1/31 floor would replace nearly every SDClip scale)."""
    clip, scale_floor = settings.clip, settings.scale_floor
    if scale_floor is None:
        scale_floor = clip == "percentile"
    if clip == "sdclip":
        s = sdclip_scale(W, settings.clip_range, settings.sdclip_k)
        if scale_floor:
            s = np.maximum(s, s.dtype.type(1.0 / settings.clip_range))
        return to_fp16_scale(s)[None], (float(settings.sdclip_k),)
    if clip != "percentile":
        raise ValueError(f"gptq_quantize: clip must be 'percentile' or 'sdclip', got {clip!r}")
    if not settings.percentiles:
        raise ValueError("gptq_quantize: percentiles must name at least one candidate")
    ps = tuple(float(p) for p in settings.percentiles)
    return to_fp16_scale(percentile_scale(W, settings.clip_range, ps, scale_floor)[1]), ps


def _dedup_rows(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For candidate scales S [C, rows]: index [C, rows] into a stack of unique
    (row, scale) pairs, and the row of each stacked entry."""
    C, rows = S.shape
    index = np.full((C, rows), -1, dtype=np.int64)
    src: list[np.ndarray] = []
    n = 0
    for c in range(C):
        for c2 in range(c):
            same = (index[c] < 0) & (S[c2] == S[c])
            index[c, same] = index[c2, same]
        new = np.flatnonzero(index[c] < 0)
        index[c, new] = n + np.arange(new.size)
        src.append(new)
        n += new.size
    return index, np.concatenate(src)


def _best(errs: list[float]) -> int:
    best = 0
    for k in range(1, len(errs)):
        if errs[k] < errs[best]:  # strict: ties keep the earlier candidate
            best = k
    return best


@dataclass(frozen=True)
class GPTQSettings:
    """How gptq_quantize (and rtn_quantize, which reads the clip fields only) quantizes a matrix.

    The defaults are #1318's. Frozen, so the one default instance that calls without settings
    share stays the default (dataclasses.replace makes a variant).
    """

    clip_range: int = INT6_CLIP  # codes in [-clip_range, clip_range]
    block_size: int = 128  # GPTQ's lazy-update block (columns)
    damp: float = 0.005  # damping: damp * mean(diag H)
    double_damp: bool = False  # the reference's second damping, literally (gptq_quantize's docstring)
    percentiles: tuple[float, ...] = PERCENTILES  # the percentile clip's candidates
    clip: str = "percentile"  # or "sdclip": one scale k*std(row)/clip_range, no search
    sdclip_k: float = 12.85
    scale_floor: bool | None = None  # the 1/clip_range floor on scales; None: on for percentile only
    act_order: bool = True  # columns by descending diag(H)
    sub_block: int = 16  # the second level of blocking inside a block (an exact rewrite; speed only)
    dtype: np.dtype | type = np.float32  # the working precision
    threads: int | None = 1  # BLAS threads during the call (blas_threads; None: leave them alone)


def gptq_quantize(W: np.ndarray, H: np.ndarray, settings: GPTQSettings = GPTQSettings()) -> GPTQResult:
    """GPTQ with per-row fp16 scales, the best of several clip candidates by plain MSE.

    The knobs are `settings`' fields (GPTQSettings), named below without the prefix.
    Damping ``damp * mean(diag H)`` (mean clamped >= 1e-6) is added once. With
    ``double_damp=True`` the reference's second damping is reproduced literally: the
    same damping is applied, then dead columns are handled, then H += damp *
    mean(diag H) * I again (total ~ damp*(2+damp)*mean diag). ``scale_floor``
    applies the reference's 1/clip floor (None: on for percentile, off for SDClip).
    ``clip="sdclip"`` is #1735's GPTQ (docs/reference-notes.md#sdclip): s = fp16(k*std(row, ddof=1)/clip)
    of the original row, no search; with damp=0.01 it matches that reference except
    that a scale rounding to 0 in fp16 becomes the smallest fp16 (the reference
    divides by 0) and the damping's mean(diag H) is clamped >= 1e-6 (never active
    for real inputs).
    Candidate MSEs are accumulated in float64 (the reference: a float32 mean), so
    near-ties may resolve differently. Cholesky failure is judged on H itself (the
    reference also factors H^-1 again, which can fail separately in float32).
    ``threads`` caps OpenBLAS threads during the call (see blas_threads; None:
    leave them alone). The cap is process-global while it lasts.
    """
    with blas_threads(settings.threads):
        return _gptq(W, H, settings)


def _gptq(W, H, settings: GPTQSettings) -> GPTQResult:
    dt = np.dtype(settings.dtype)
    W0 = np.asarray(W, dtype=dt)
    H = np.array(H, dtype=dt, copy=True)
    if W0.ndim != 2 or H.shape != (W0.shape[1], W0.shape[1]):
        raise ValueError(f"gptq_quantize: need W [rows, cols] and H [cols, cols], got {W0.shape} and {H.shape}")
    if not np.all(np.isfinite(W0)):
        raise ValueError("gptq_quantize: W contains NaN or inf; the weights must be finite")
    rows, cols = W0.shape
    S16, labels = _candidate_scales(W0, settings)

    damping = dt.type(0)
    finite = bool(np.all(np.isfinite(H)))
    if settings.double_damp and finite:
        first = dt.type(settings.damp) * _mean_diag(H, clamp=True)
        _add_diag(H, first)
        damping += first
    dead = H.diagonal() == 0
    H[dead, dead] = 1
    if finite:
        d = dt.type(settings.damp) * _mean_diag(H, clamp=not settings.double_damp)
        _add_diag(H, d)
        damping += d
    perm = np.argsort(-H.diagonal(), kind="stable") if settings.act_order else np.arange(cols)
    Hp = H[np.ix_(perm, perm)]

    U, extra_used = None, 0.0
    if finite:
        for extra in (0.0,) + ESCALATION:
            Ht = Hp.copy()
            e_amt = dt.type(0)
            if extra > 0:
                e_amt = dt.type(extra) * Ht.diagonal().mean()
                _add_diag(Ht, e_amt)
            try:
                U = upper_inv_cholesky(Ht)
            except np.linalg.LinAlgError:
                continue
            extra_used, damping = extra, damping + e_amt
            break
    if U is None:
        return _fallback(W0, S16, labels, settings.clip_range, float(damping))

    # Stack the unique (row, candidate-scale) pairs; work transposed: Wt [cols, R].
    index, src = _dedup_rows(S16)
    s_stack = np.empty(src.size, dtype=dt)
    for c in range(S16.shape[0]):
        s_stack[index[c]] = S16[c].astype(dt)
    Wt = np.ascontiguousarray(W0[src].T)[perm]
    Wt[dead[perm]] = 0
    Qt = _gptq_columns(Wt.copy(), s_stack, U, settings.clip_range, settings.block_size, max(1, settings.sub_block))
    Wt -= Qt * s_stack  # error against the permuted original, as the reference
    row_err = np.einsum("ij,ij->j", Wt, Wt, dtype=np.float64)
    errs = [float(row_err[index[c]].sum() / (rows * cols)) for c in range(S16.shape[0])]
    k = _best(errs)
    inv_perm = np.argsort(perm)
    q = Qt[np.ix_(inv_perm, index[k])].T.astype(np.int8)
    return GPTQResult(
        q=np.ascontiguousarray(q), scale=S16[k].copy(), clip=labels[k], mse=errs[k],
        used_fallback=False, damping=float(damping), extra_damp_scale=float(extra_used),
        perm=perm if settings.act_order else None, candidate_mse=tuple(errs),
    )


def _fallback(W: np.ndarray, S16: np.ndarray, labels, clip_range: int, damping: float) -> GPTQResult:
    """The reference's percentile-only search (L1913-1932): RTN, best plain MSE."""
    qs, errs = [], []
    for c in range(S16.shape[0]):
        sf = S16[c].astype(W.dtype)
        q = round_clamp(W, sf, clip_range)
        errs.append(float(np.mean(np.square(W - q * sf[:, None]), dtype=np.float64)))
        qs.append(q)
    k = _best(errs)
    return GPTQResult(q=qs[k], scale=S16[k].copy(), clip=labels[k], mse=errs[k], used_fallback=True,
                      damping=damping, candidate_mse=tuple(errs))


def rtn_quantize(W: np.ndarray, settings: GPTQSettings = GPTQSettings()) -> GPTQResult:
    """Round-to-nearest with the same clip search as gptq_quantize, no Hessian (for comparisons);
    of the settings it reads the clip fields only (not dtype: it works in float32)."""
    W = np.asarray(W, np.float32)
    S16, labels = _candidate_scales(W, settings)
    return _fallback(W, S16, labels, settings.clip_range, 0.0)
