"""LQER: a low-rank correction of the quantization error, stored beside the weight.

#1797 / #1855 (docs/reference-notes.md#lqer: "LQER asymmetric rank-4 int4 correction of the quantization
error on the top-3 tensors"; reference `gptq_mixed_quantize`): after quantizing, every
quantized matrix is a candidate with error E = W - q·s (fp32). The top_k candidates by
the Frobenius norm ‖E‖ (not normalised by size, so the largest matrices usually win:
the tied embedding and the MLP kernels) get E ≈ A·B from the rank-r truncated SVD,
A = U_r·diag(S_r) [rows, r], B = V_rᵀ [r, cols], each factor quantized to a few bits
(golf_jax.quant.lowrank). Dequantization then reads W ≈ q·s + Â·B̂.

Asymmetric packing (export.lqer_group > 0, the record: 64): Â int2 with one scale, B̂
int-``bits`` per group of ``group`` values of its flattening. When B's size is not a
multiple of the group, or export.lqer_group = 0, both factors are symmetric
int-``bits`` per row instead (the reference's fallback).

The SVD runs in float64 (numpy's LAPACK; the reference: torch fp32), so the factors
agree with the reference's up to its rounding. Ranking ties keep tensor order.
"""

from __future__ import annotations

import numpy as np

from golf_jax.quant import lowrank
from golf_jax.quant.gptq import blas_threads
from golf_jax.quant.lowrank import Factor

ASYM_A_BITS = 2  # the reference's int2 A (per-matrix scale |A|max / 1.5)


def quant_error(W: np.ndarray, q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """E = W - q·s[row] in fp32, as the reference forms it."""
    return np.asarray(W, np.float32) - q.astype(np.float32) * scale.astype(np.float32)[:, None]


def top_k(errors: dict[str, np.ndarray], k: int) -> list[str]:
    """The k names with the largest ‖E‖_F (float64 norms; ties keep dict order)."""
    names = list(errors)
    norms = np.array([np.linalg.norm(errors[n].astype(np.float64)) for n in names])
    order = np.argsort(-norms, kind="stable")
    return [names[i] for i in order[: max(0, int(k))]]


def factors(E: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(A [rows, r], B [r, cols]) fp32 from the rank-r truncated SVD of E (float64). One BLAS
    thread: 0.7 s for 8192×512, and threaded LAPACK can be 100× slower on a busy CPU."""
    with blas_threads(1):
        U, S, Vt = np.linalg.svd(np.asarray(E, np.float64), full_matrices=False)
    r = min(int(rank), S.size)
    return (U[:, :r] * S[:r]).astype(np.float32), Vt[:r].astype(np.float32)


def pack_factors(A: np.ndarray, B: np.ndarray, bits: int, group: int) -> tuple[Factor, Factor, str]:
    """Quantized (Â, B̂, "asym" | "sym") per the module docstring."""
    if group > 0 and B.size % group == 0:
        return lowrank.quantize_asym(A, ASYM_A_BITS, A.size), lowrank.quantize_asym(B, bits, group), "asym"
    return lowrank.quantize_sym_rows(A, bits), lowrank.quantize_sym_rows(B, bits), "sym"


def correction(a: Factor, b: Factor) -> np.ndarray:
    """Â·B̂ in fp32 as r rank-1 terms added in order (elementwise, no BLAS), so every
    machine dequantizes the artifact to the same bits."""
    A, B = a.dequantize(), b.dequantize()
    out = np.zeros((A.shape[0], B.shape[1]), np.float32)
    for k in range(A.shape[1]):
        out += A[:, k : k + 1] * B[k][None, :]
    return out


def correct(W: np.ndarray, q: np.ndarray, scale: np.ndarray, rank: int, bits: int,
            group: int) -> tuple[Factor, Factor, str]:
    """The stored correction of one quantized matrix: factors of E = W - q·s."""
    A, B = factors(quant_error(W, q, scale), rank)
    return pack_factors(A, B, bits, group)
