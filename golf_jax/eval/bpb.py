"""bits-per-byte accounting (docs/reference-notes.md#bpb).

Sums are kept as Python floats (float64) on the host: summing ~62M per-token NLLs in
float32 would lose digits that matter at the leaderboard's 1e-4 resolution.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

LN2 = math.log(2.0)


def _scalar(x: Any) -> float:
    """A host float from a Python number, numpy scalar/0-d array or jax array."""
    if isinstance(x, (int, float)):
        return float(x)
    return float(np.asarray(x, dtype=np.float64).reshape(()))


def bits_per_byte(nll_sum: float, byte_sum: float) -> float:
    """ΣNLL (nats) / (ln 2 · Σbytes)."""
    nll, nbytes = _scalar(nll_sum), _scalar(byte_sum)
    if not math.isfinite(nll):
        raise ValueError(f"NLL sum is {nll}, not finite; the model produced NaN/inf losses")
    if nbytes <= 0:
        raise ValueError(f"byte sum is {nbytes}; bpb needs at least one byte of scored text")
    return nll / (LN2 * nbytes)


class BpbAccumulator:
    """Running ΣNLL, Σtokens, Σbytes for one eval stage (merge across shards/ranks).

    `stage` names the evaluation (e.g. "int6_sliding") so a NaN loss is reported
    against the stage that produced it.
    """

    def __init__(self, stage: str = "eval") -> None:
        self.stage = stage
        self.nll_sum = 0.0
        self.token_count = 0.0
        self.byte_count = 0.0

    def add(self, nll_sum: Any, token_count: Any, byte_count: Any) -> None:
        nll = _scalar(nll_sum)
        if not math.isfinite(nll):
            raise ValueError(
                f"{self.stage}: NLL sum {nll} is not finite after {self.token_count:.0f} "
                "tokens; the model diverged or produced NaN/inf logits (check the "
                "checkpoint, learning rate and quantization round trip)"
            )
        self.nll_sum += nll
        self.token_count += _scalar(token_count)
        self.byte_count += _scalar(byte_count)

    def merge(self, other: BpbAccumulator) -> BpbAccumulator:
        """Add another accumulator's sums into this one (e.g. from another process)."""
        self.nll_sum += other.nll_sum
        self.token_count += other.token_count
        self.byte_count += other.byte_count
        return self

    def _need_tokens(self) -> None:
        if self.token_count <= 0:
            raise ValueError(f"{self.stage}: no tokens were scored; the eval set is empty")

    def _need_bytes(self) -> None:
        if self.byte_count <= 0:
            raise ValueError(
                f"{self.stage}: byte count is 0, so bpb is undefined; every scored target "
                "was a boundary token (check the byte LUT and the eval targets)"
            )
        if not math.isfinite(self.nll_sum):
            raise ValueError(f"{self.stage}: NLL sum {self.nll_sum} is not finite")

    @property
    def val_loss(self) -> float:
        """Mean NLL per token in nats."""
        self._need_tokens()
        return self.nll_sum / self.token_count

    @property
    def val_bpb(self) -> float:
        self._need_bytes()
        return bits_per_byte(self.nll_sum, self.byte_count)

    @property
    def tokens_per_byte(self) -> float:
        self._need_bytes()
        return self.token_count / self.byte_count

    def __repr__(self) -> str:
        return (
            f"BpbAccumulator(stage={self.stage!r}, nll_sum={self.nll_sum!r}, "
            f"tokens={self.token_count:.0f}, bytes={self.byte_count:.0f})"
        )
