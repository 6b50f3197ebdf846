"""Selective +-1 pruning against a decimal byte budget."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from golf_jax.quant.container import QuantTensor, passthrough, serialize
from golf_jax.quant.prune import (
    ARTIFACT_LIMIT_BYTES,
    REFERENCE_TARGET_BYTES,
    ArtifactBudgetError,
    apply_pruning,
    prune_candidates,
    prune_to_budget,
)

SER = functools.partial(serialize, int6_storage="int8", compressor="lzma")


def _model(seed: int = 0) -> dict[str, QuantTensor]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(2):
        q = np.clip(np.rint(rng.normal(0, 2, (96, 256))), -31, 31).astype(np.int8)
        s = (rng.uniform(1, 2, 96) / 31).astype(np.float16)
        out[f"blocks.{i}.mlp.fc.weight"] = QuantTensor("int6", q, s)
    out["tok_emb.weight"] = QuantTensor("int8", rng.integers(-3, 4, (32, 16), dtype=np.int8),
                                        np.full(32, 0.01, np.float16), "bfloat16")
    out["scale"] = passthrough(np.ones(16, np.float32))
    return out


def test_candidate_order_is_scale_squared_then_stable():
    q = np.array([[1, 0, -1], [1, 2, -1]], np.int8)
    t = {"a": QuantTensor("int6", q, np.array([0.5, 0.25], np.float16)),
         "e": QuantTensor("int8", np.ones((2, 2), np.int8), np.ones(2, np.float16)),
         "b": QuantTensor("int6", np.array([[-1, 1]], np.int8), np.array([0.25], np.float16))}
    names, tid, flat = prune_candidates(t)
    assert names == ["a", "b"]
    # row scales^2: a.row1 = b.row0 = 1/16 < a.row0 = 1/4; ties keep tensor, then index order.
    assert list(zip(tid.tolist(), flat.tolist())) == [(0, 3), (0, 5), (1, 0), (1, 1), (0, 0), (0, 2)]
    pruned = apply_pruning(t, names, tid, flat, 3)
    np.testing.assert_array_equal(pruned["a"].data, [[1, 0, -1], [0, 2, 0]])
    np.testing.assert_array_equal(pruned["b"].data, [[0, 1]])
    np.testing.assert_array_equal(t["a"].data, q)  # input untouched


def test_pruning_reaches_a_target_that_needs_it():
    model = _model()
    unpruned = len(SER(model))
    budget, code = unpruned - 1500 + 700, 700
    out, rep = prune_to_budget(model, budget, code, SER)
    assert rep.unpruned_bytes == unpruned and 0 < rep.n_pruned < rep.n_candidates
    assert len(SER(out)) == rep.final_bytes and rep.total_bytes <= budget and rep.blob == SER(out)
    # Minimal: one fewer pruned entry does not fit.
    names, tid, flat = prune_candidates(model)
    assert len(SER(apply_pruning(model, names, tid, flat, rep.n_pruned - 1))) + code > budget
    # Only +-1 int6 entries changed, and they became 0.
    for name, t in model.items():
        diff = t.data != out[name].data
        assert t.kind == "int6" or not diff.any()
        assert np.all(np.abs(t.data[diff]) == 1) and np.all(out[name].data[diff] == 0)


def test_no_pruning_when_it_fits():
    model = _model()
    out, rep = prune_to_budget(model, len(SER(model)) + 10, 10, SER)
    assert out is model and rep.n_pruned == 0 and rep.evaluations == 1


def test_budget_is_decimal_bytes_not_mib():
    assert ARTIFACT_LIMIT_BYTES == 16_000_000 and REFERENCE_TARGET_BYTES == 16_672_358
    model = _model(1)
    size = len(SER(model))
    code = 16_000_000 - size + 1000  # 1,000 B over the decimal limit, far under 15.9 MiB
    _, rep = prune_to_budget(model, ARTIFACT_LIMIT_BYTES, code, SER)
    assert rep.n_pruned > 0 and rep.total_bytes <= 16_000_000
    # The reference's MiB target would have let this over-limit artifact through.
    _, ref = prune_to_budget(model, REFERENCE_TARGET_BYTES, code, SER)
    assert ref.n_pruned == 0 and ref.total_bytes > 16_000_000


def test_impossible_target_raises():
    model = _model()
    size = len(SER(model))
    with pytest.raises(ArtifactBudgetError, match=r"over\. Fix: a smaller model.*stronger compressor.*pruning"):
        prune_to_budget(model, size // 2, 0, SER)
    with pytest.raises(ArtifactBudgetError, match="max_prune_fraction=0.0"):
        prune_to_budget(model, size - 1000, 0, SER, max_prune_fraction=0.0)
    with pytest.raises(ValueError):
        prune_to_budget(model, size, 0, SER, max_prune_fraction=1.5)
