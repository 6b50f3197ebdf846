"""Selective +-1 pruning to fit the artifact budget (docs/reference-notes.md#prune-target), in DECIMAL bytes.

The limit is 16,000,000 bytes for compressed model + code (upstream README FAQ).
The reference aimed at TARGET_MB=15.9 MiB = 16,672,358 bytes (docs/reference-notes.md#prune-target),
which would not protect the limit; here the budget is plain decimal bytes.

Candidates are the int6 entries with |q| = 1, ordered by increasing scale[row]^2
(the reference's proxy for the damage of zeroing them; ties keep tensor order,
then flat index). The count is the smallest one whose real compressed size fits,
found by binary search on ``serialize_fn`` (assumes size falls with the count;
the returned count is always one that was measured to fit).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from golf_jax.core.errors import UserError
from golf_jax.quant.container import QuantTensor, serialize

ARTIFACT_LIMIT_BYTES = 16_000_000
REFERENCE_TARGET_BYTES = int(15.9 * 1024 * 1024)  # 16,672,358: the reference's MiB target


class ArtifactBudgetError(UserError):
    """The artifact cannot fit the byte budget even with the maximum allowed pruning."""


@dataclass
class PruneReport:
    budget_bytes: int
    code_bytes: int
    unpruned_bytes: int  # compressed model, no pruning
    final_bytes: int  # compressed model after pruning
    n_candidates: int  # int6 entries with |q| == 1
    n_allowed: int
    n_pruned: int
    evaluations: int  # serialize_fn calls
    blob: bytes = field(default=b"", repr=False)  # the final compressed model

    @property
    def total_bytes(self) -> int:
        return self.final_bytes + self.code_bytes


def prune_candidates(tensors: dict[str, QuantTensor]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(int6 tensor names, tensor id [N], flat index [N]) of the |q|==1 entries in
    pruning order: increasing fp32 scale^2 of their row, stable."""
    names, tids, flats, keys = [], [], [], []
    for name, t in tensors.items():
        if t.kind != "int6":
            continue
        q = t.data.reshape(t.shape[0], -1)
        rows, cols = np.nonzero(np.abs(q) == 1)
        names.append(name)
        tids.append(np.full(rows.size, len(names) - 1, dtype=np.int32))
        flats.append(rows.astype(np.int64) * q.shape[1] + cols)
        keys.append(np.square(t.scale.astype(np.float32))[rows])
    if not names:
        return [], np.zeros(0, np.int32), np.zeros(0, np.int64)
    order = np.argsort(np.concatenate(keys), kind="stable")
    return names, np.concatenate(tids)[order], np.concatenate(flats)[order]


def apply_pruning(
    tensors: dict[str, QuantTensor], names: list[str], tid: np.ndarray, flat: np.ndarray, n: int
) -> dict[str, QuantTensor]:
    """A copy of ``tensors`` with the first n candidates set to 0 (inputs untouched)."""
    out = dict(tensors)
    for k, name in enumerate(names):
        idx = flat[:n][tid[:n] == k]
        if idx.size:
            t = tensors[name]
            q = t.data.copy()
            q.reshape(-1)[idx] = 0
            out[name] = dataclasses.replace(t, data=q)  # keeps the scales and any LQER correction
    return out


def prune_to_budget(
    tensors: dict[str, QuantTensor],
    budget_bytes: int = ARTIFACT_LIMIT_BYTES,
    code_bytes: int = 0,
    serialize_fn: Callable[[dict[str, QuantTensor]], bytes] | None = None,
    max_prune_fraction: float = 1.0,
    log: Callable[[str], None] | None = None,
    unpruned_blob: bytes | None = None,
) -> tuple[dict[str, QuantTensor], PruneReport]:
    """Zero the fewest +-1 int6 entries so that len(serialize_fn(t)) + code_bytes
    <= budget_bytes. ``max_prune_fraction`` caps the pruned share of the
    candidates; raises ArtifactBudgetError when even that cap does not fit.
    ``log`` gets a line per measured count (each is a full compression: slow at
    record scale). ``unpruned_blob``: serialize_fn(tensors) if the caller has it."""
    if not 0.0 <= max_prune_fraction <= 1.0:
        raise ValueError(f"max_prune_fraction must be in [0, 1], got {max_prune_fraction}")
    fn = serialize_fn or functools.partial(serialize, int6_storage="auto", compressor="lzma")
    names, tid, flat = prune_candidates(tensors)
    n_allowed = int(np.floor(max_prune_fraction * tid.size))
    limit = budget_bytes - code_bytes
    sizes: dict[int, int] = {}
    fit: list = [None, b""]  # the last measured count that fits, and its blob
    if unpruned_blob is not None:
        sizes[0] = len(unpruned_blob)
        if sizes[0] <= limit:
            fit[:] = [0, unpruned_blob]

    def size(n: int) -> int:
        if n not in sizes:
            b = fn(apply_pruning(tensors, names, tid, flat, n))
            sizes[n] = len(b)
            if log is not None:
                log(f"prune: {n:,} of {tid.size:,} ±1 entries zeroed -> {len(b):,} B (limit {limit:,} B)")
            if len(b) <= limit:
                fit[:] = [n, b]
        return sizes[n]

    def report(n: int) -> PruneReport:
        assert fit[0] == n
        return PruneReport(budget_bytes, code_bytes, sizes[0], sizes[n], int(tid.size), n_allowed, n,
                           len(sizes), fit[1])

    if size(0) <= limit:
        return tensors, report(0)
    if size(n_allowed) > limit:
        worst = sizes[n_allowed] + code_bytes
        raise ArtifactBudgetError(
            f"artifact does not fit: model {sizes[0]:,} B + code {code_bytes:,} B = "
            f"{sizes[0] + code_bytes:,} B > budget {budget_bytes:,} B (decimal bytes). Even pruning "
            f"all {n_allowed:,} allowed of {tid.size:,} +-1 int6 entries (max_prune_fraction="
            f"{max_prune_fraction}) leaves {worst:,} B, {worst - budget_bytes:,} B over. "
            "Fix: a smaller model (fewer/narrower layers, smaller vocab or embeddings), a stronger "
            "compressor (e.g. brotli-11 with byte shuffle, lzma preset 9), less code, or allow more "
            "pruning (raise max_prune_fraction)."
        )
    lo, hi = 0, n_allowed  # invariant: hi was measured to fit, lo - 1 was measured not to
    while lo < hi:
        mid = (lo + hi) // 2
        if size(mid) <= limit:
            hi = mid
        else:
            lo = mid + 1
    return apply_pruning(tensors, names, tid, flat, lo), report(lo)
