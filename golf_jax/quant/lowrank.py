"""Low-bit factors with per-group fp16 scales, and their bit packing (LQER's storage).

A `Factor` is an int matrix q (int8 in memory) with one fp16 scale per ``group``
consecutive values of its row-major flattening: X ≈ (q.reshape(-1, g) · s[:, None]).
That single layout covers both packings of #1855's LQER (docs/reference-notes.md#lqer: "LQER asymmetric
rank-4 int4 correction"; reference `_lqer_pack`, `_lqer_pack_asym`):

* asymmetric (LQER_ASYM_ENABLED=1): A as int2 in [-2, 1] with one scale for the whole
  matrix (group = A.size), B as int4 in [-8, 7] per group of 64 values; the scale is
  max|x| / (2^(b-1) - 0.5), so the largest magnitude lands on ±(2^(b-1) - 0.5) and the
  asymmetric range loses nothing on the negative side;
* symmetric (the fallback): int-b in ±(2^(b-1) - 1) per row (group = row length).

Stored values are packed ``8 // w`` to a byte at width w = 2, 4 or 8 (the smallest
that holds ``bits``), value k of a byte in bits w·k .. w·k + w - 1 (two's complement).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from golf_jax.quant.rowquant import to_fp16_scale

SCALE_EPS = 1e-10  # the reference's clamp_min before dividing by the level count


@dataclass
class Factor:
    """q int8 [shape], fp16 scales [q.size // group], values in the signed ``bits`` range."""

    q: np.ndarray
    scale: np.ndarray
    group: int
    bits: int

    def dequantize(self) -> np.ndarray:
        """fp32 values: q · scale of its group."""
        s = self.scale.astype(np.float32)[:, None]
        return (self.q.reshape(-1, self.group).astype(np.float32) * s).reshape(self.q.shape)


def storage_width(bits: int) -> int:
    """Bits per stored value: 2, 4 or 8."""
    if not 2 <= bits <= 8:
        raise ValueError(f"factor bits must be in 2..8, got {bits}")
    return 2 if bits <= 2 else 4 if bits <= 4 else 8


def signed_range(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def pack_bits(values: np.ndarray, width: int) -> bytes:
    """Signed values in the width's range, 8 // width per byte (see the module docstring)."""
    v = np.asarray(values).reshape(-1)
    if width == 8:
        return v.astype(np.int8).tobytes()
    lo, hi = signed_range(width)
    if v.size and (v.min() < lo or v.max() > hi):
        raise ValueError(f"pack_bits: {width}-bit values must lie in [{lo}, {hi}], got [{v.min()}, {v.max()}]")
    per = 8 // width
    u = (v.astype(np.int16) & ((1 << width) - 1)).astype(np.uint8)
    u = np.concatenate([u, np.zeros((-u.size) % per, np.uint8)]).reshape(-1, per)
    out = np.zeros(u.shape[0], np.uint8)
    for k in range(per):
        out |= u[:, k] << np.uint8(width * k)
    return out.tobytes()


def unpack_bits(buf: bytes, width: int, count: int) -> np.ndarray:
    """Inverse of pack_bits: the first ``count`` values as int8."""
    b = np.frombuffer(buf, dtype=np.uint8)
    if width == 8:
        return b.view(np.int8)[:count].copy()
    per, mask = 8 // width, (1 << width) - 1
    u = np.stack([(b >> np.uint8(width * k)) & np.uint8(mask) for k in range(per)], axis=1).reshape(-1)[:count]
    half = 1 << (width - 1)
    return ((u.astype(np.int16) ^ half) - half).astype(np.int8)


def packed_nbytes(count: int, bits: int) -> int:
    w = storage_width(bits)
    return (count * w + 7) // 8


def _quantize(x: np.ndarray, group: int, bits: int, levels: float, lo: int, hi: int) -> Factor:
    x = np.asarray(x, np.float32)
    if group <= 0 or x.size % group:
        raise ValueError(f"factor of {x.size} values does not split into groups of {group}")
    g = x.reshape(-1, group)
    s16 = to_fp16_scale(np.maximum(np.abs(g).max(axis=1), np.float32(SCALE_EPS)) / np.float32(levels))
    q = np.clip(np.rint(g / s16.astype(np.float32)[:, None]), lo, hi).astype(np.int8)
    return Factor(q.reshape(x.shape), s16, group, bits)


def quantize_asym(x: np.ndarray, bits: int, group: int) -> Factor:
    """int-b in [-2^(b-1), 2^(b-1) - 1], scale max|x|/(2^(b-1) - 0.5) per group (q uses the fp16 scale)."""
    lo, hi = signed_range(bits)
    return _quantize(x, group, bits, (1 << (bits - 1)) - 0.5, lo, hi)


def quantize_sym_rows(x: np.ndarray, bits: int) -> Factor:
    """int-b in ±(2^(b-1) - 1), scale max|row|/(2^(b-1) - 1) per row."""
    x = np.asarray(x, np.float32)
    hi = (1 << (bits - 1)) - 1
    return _quantize(x, x.shape[-1], bits, hi, -hi, hi)
