"""Sliding-window evaluation through the harness, its window rules and the ledger."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from golf_jax.core import mesh as mesh_lib
from golf_jax.eval import harness, plain, windows
from golf_jax.eval.ledger import Ledger

L = 128


def _sliding(tiny_lm, stride: int, rule: str = "merged", record_nll: bool = False):
    cfg, model, params, val, lut = tiny_lm
    mesh = mesh_lib.make_mesh()
    T = len(val) - 1
    units = windows.sliding_units(T, L, stride, rule)
    predict = harness.jit_predict(harness.make_predict(model), mesh)
    ev = harness.FixedModel(predict, jax.device_put(params, mesh_lib.replicated(mesh)))
    return harness.run(ev, val, lut, harness.Schedule(units, [np.arange(len(units))], 16), mesh, Ledger("sliding", T),
                       harness.Inspection(record_nll=record_nll))


def test_reference_geometry_matches_spec_6_2():
    """N_tot = 62,021,632, stride 64, seq 2048: 969,088 windows, 1,984 targets scored twice."""
    T = 62_021_632
    assert windows.window_starts(T, 2048, 64, "reference").size == 969_088
    ref = windows.sliding_units(T, 2048, 64, "reference")
    assert ref.scored_tokens == T + 1_984
    merged = windows.sliding_units(T, 2048, 64, "merged")
    assert merged.scored_tokens == T and windows.unit_ranges(merged) == [(0, T)]


@pytest.mark.parametrize("T,seq_len,stride", [(4096, 128, 32), (1000, 256, 64), (64 * 37, 512, 64)])
def test_reference_rule_count_formula(T, seq_len, stride):
    """With stride | T and T >= seq_len the reference rule scores T + seq_len - stride targets."""
    units = windows.sliding_units(T, seq_len, stride, "reference")
    if T % stride == 0:
        assert units.scored_tokens == T + seq_len - stride
    ledger = Ledger("s", T)
    ledger.score(windows.unit_ranges(units))
    problems = ledger.verify()
    assert problems and "single pass" in problems[0] and str(units.scored_tokens - T) in problems[0]


@pytest.mark.parametrize("T,seq_len,stride", [(10_000, 2048, 96), (5000, 256, 64), (300, 256, 64), (100, 256, 64)])
def test_merged_rule_covers_every_target_once(T, seq_len, stride):
    units = windows.sliding_units(T, seq_len, stride, "merged")
    assert windows.unit_ranges(units) == [(0, T)] and units.scored_tokens == T
    assert np.all(units.count <= stride) and np.all(units.pos + units.count <= seq_len)
    assert np.all(units.start + units.pos + units.count <= T)


def test_stride_equal_seq_len_is_the_plain_eval(tiny_lm):
    cfg, model, params, val, lut = tiny_lm
    mesh = mesh_lib.make_mesh()
    res = _sliding(tiny_lm, stride=L)
    step = plain.jit_eval_step(plain.make_eval_step(model), mesh)
    want = plain.evaluate(step, jax.device_put(params, mesh_lib.replicated(mesh)), mesh, val, L, 16, lut)
    assert res.acc.token_count == want.token_count == len(val) - 1
    assert res.acc.byte_count == want.byte_count
    np.testing.assert_allclose(res.acc.nll_sum, want.nll_sum, rtol=2e-6)  # fp32 sums of 8k NLLs
    assert res.ledger.verify() == []


def test_merged_rule_scores_every_target_once_and_beats_plain(tiny_lm):
    res = _sliding(tiny_lm, stride=32)
    plain_res = _sliding(tiny_lm, stride=L)
    assert res.ledger.verify() == []
    assert res.ledger.to_json()["events"] == [{"score": [[0, len(tiny_lm[3]) - 1]]}]
    assert res.acc.token_count == len(tiny_lm[3]) - 1
    assert res.acc.val_bpb < plain_res.acc.val_bpb  # more context per scored token, on real text


def test_scored_nll_matches_a_float64_reference(tiny_lm):
    """Per-target NLL from the harness = −log softmax (float64 numpy) of the full-window logits."""
    cfg, model, params, val, lut = tiny_lm
    stride = 32
    res = _sliding(tiny_lm, stride, record_nll=True)
    units = windows.sliding_units(len(val) - 1, L, stride)
    for i in (0, 5, len(units) // 2, len(units) - 1):
        u = units.take(np.array([i]))
        ws, p, n = int(u.start[0]), int(u.pos[0]), int(u.count[0])
        x = val[ws : ws + L][None]
        logits = np.asarray(model.apply({"params": params}, x), np.float64)[0]
        logp = logits - logits.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        targets = val[ws + p + 1 : ws + p + n + 1]
        want = -logp[np.arange(p, p + n), targets]
        np.testing.assert_allclose(res.nll[ws + p : ws + p + n], want, rtol=1e-5, atol=1e-5)


def test_ledger_checks():
    led = Ledger("t", 100)
    led.score([(0, 50)])
    led.update([(0, 50)], block=0)
    led.score([(50, 100)])
    assert led.verify() == []
    led.update([(40, 60)], block=1)
    assert led.verify() == []  # [40, 60) had been scored by then
    bad = Ledger("t", 100)
    bad.score([(0, 50)])
    bad.update([(0, 51)], block=0)
    bad.score([(50, 90)])
    problems = bad.verify()
    assert any("score before update" in p and "[0, 51)" in p for p in problems)
    assert any("10 of 100 targets were never scored" in p for p in problems)
    prior = Ledger("t", 100, prior_reads=[(0, 100)])
    prior.score([(0, 100)])
    assert any("second pass" in p for p in prior.verify())


def test_reveal_refuses_to_read_ahead_for_a_compliant_evaluator():
    val = np.arange(101) % 7
    led = Ledger("t", 100)
    led.score([(0, 40)])
    scored = led.scored
    r = harness.Reveal(val, scored, 0, 2, compliant=True)
    np.testing.assert_array_equal(r.read(0, 40), val[:41])
    with pytest.raises(harness.ComplianceError, match=r"\[30, 41\)"):
        r.read(30, 41)
    loose = harness.Reveal(val, scored, 0, 2, compliant=False)
    loose.read(30, 41)
    assert loose.reads == [(30, 41)]
