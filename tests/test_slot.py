"""SLOT through the harness: every mode runs from config, the legal ones pass the flip test
(docs/reference-notes.md#flip-test-1240), the seeds' fail it or the ledger check, and legal SLOT helps."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from golf_jax.core import mesh as mesh_lib
from golf_jax.config import eval_config
from golf_jax.eval import harness, stages
from golf_jax.eval.ledger import Ledger, _expand
from golf_jax.eval.slot.stage import _logit_objective
from golf_jax.core.rundir import RunDir

L, STRIDE = 128, 64
FLIP = 1384  # a target scored by window 20 (unit 21): batch 1 of the 2,048-target slice, mid-window


def _cfg(tiny_lm, stages_="slot", **slot):
    cfg = tiny_lm[0].copy_and_resolve_references()
    cfg.eval = eval_config()
    cfg.eval.stages = stages_
    cfg.eval.sliding.stride, cfg.eval.sliding.batch_windows = STRIDE, 16
    for k, v in slot.items():
        setattr(cfg.eval.slot, k, v)
    return cfg


def _run(tiny_lm, cfg, val=None, run=None):
    _, model, params, val0, lut = tiny_lm
    mesh = mesh_lib.make_mesh()
    return stages.run_stages(cfg, model, jax.device_put(params, mesh_lib.replicated(mesh)),
                             stages.Val(val0 if val is None else val, lut), mesh, run=run, log=lambda m: None,
                             inspection=harness.Inspection(record_nll=True))


@pytest.fixture(scope="module")
def context(tiny_lm, tmp_path_factory):
    cfg = _cfg(tiny_lm, "sliding,slot")
    run = RunDir(tmp_path_factory.mktemp("slot"), "slot", cfg)
    return _run(tiny_lm, cfg, run=run), run


def test_context_slot_ledger_shows_no_target_in_its_own_objective(context):
    res, run = context
    r = res["slot"]
    assert r.problems == [] and r.ledger.compliant and r.extra["mode"] == "context"
    events = Ledger.read(run.path / "ledger_slot.json").events
    kinds = [next(iter(e)) for e in events]
    assert kinds == ["fit", "score"] * (len(kinds) // 2) and len(kinds) == 16  # 8 batches of 16 units
    fitted = 0
    for e in events[::2]:
        a, b, first = (_expand(e["fit"][k]) for k in ("a", "b", "first"))
        assert np.all(b <= first)  # every objective ends before the unit's first scored target
        fitted += int(np.sum(b > a))
    assert fitted == 127  # every unit but the very first (no context yet)


def test_context_slot_improves_real_text(context):
    """FineWeb, 8,192 targets: legal SLOT does not hurt (the gain is reported in docs/perf.md)."""
    res, _ = context
    slot, sliding = res["slot"], res["sliding"]
    assert abs(slot.extra["val_bpb_without_slot"] - sliding.val_bpb) < 1e-6  # the same windows, no δ
    assert slot.val_bpb < sliding.val_bpb, (slot.val_bpb, sliding.val_bpb)
    assert slot.tokens == sliding.tokens == 8192


def test_diagnostics_in_the_run_dir(context):
    res, run = context
    d = np.load(run.path / "slot_windows.npz")
    n = res["slot"].extra["windows"]
    assert all(d[k].shape == (n,) for k in ("nll_with", "nll_without", "delta_norm", "iterations", "evaluations"))
    assert d["delta_norm"][0] == 0 and d["iterations"][0] == 0  # the first unit has no context
    assert np.all(d["iterations"][1:] >= 1) and np.all(d["evaluations"] >= d["iterations"])
    assert np.all(d["delta_norm"][1:] > 0)
    np.testing.assert_allclose(d["nll_with"].sum() / np.log(2) / res["slot"].bytes, res["slot"].val_bpb, rtol=1e-9)
    assert res["slot"].extra["mean_evaluations"] > 1


def test_per_window_solve_does_not_depend_on_the_batch(tiny_lm):
    """vmap'd per-window SLOT = each window solved alone: batches of 16 vs batches of 1 (padded)."""
    val = tiny_lm[3][:2049]
    wide = _run(tiny_lm, _cfg(tiny_lm, warm_start=False), val)["slot"].nll
    cfg = _cfg(tiny_lm, warm_start=False)
    cfg.eval.sliding.batch_windows = 1  # rounded up to the 8 devices: 1 unit + 7 padding rows
    alone = _run(tiny_lm, cfg, val)["slot"].nll
    # Different batch shapes round differently (ulps); L-BFGS's line search can amplify that along
    # the objective's flat directions, but the clamp (±0.5) bounds δ, so per-target NLL agrees closely.
    np.testing.assert_allclose(wide, alone, rtol=0, atol=1e-3)
    assert np.max(np.abs(wide - alone)) < 1e-3


def _flipped(val):
    out = val.copy()
    out[FLIP + 1] = (out[FLIP + 1] + 1) % 1024  # the token of target FLIP (and an input of later windows)
    return out


@pytest.mark.parametrize("mode,legal", [("context", True), ("score_first", True), ("pr1318", False),
                                        ("pr1350", False), ("pr675", False)])
def test_flip_test(tiny_lm, mode, legal):
    """Change target FLIP: a legal evaluator's recorded score of every earlier target is bit-identical."""
    extra = {"focal": 96} if mode in ("pr1318", "pr1350") else {}
    if mode == "pr675":
        extra = {"lr": 0.1, "max_iter": 5, "history": 10, "steps": 2, "clamp": 0.0}
    cfg = _cfg(tiny_lm, mode=mode, **extra)
    val = tiny_lm[3][:2049]
    before = _run(tiny_lm, cfg, val)["slot"]
    after = _run(tiny_lm, cfg, _flipped(val))["slot"]
    changed = np.flatnonzero(before.nll[:FLIP] != after.nll[:FLIP])
    assert after.nll[FLIP] != before.nll[FLIP]  # the flipped target itself is scored differently
    if legal:
        assert changed.size == 0, changed[:10]
        assert before.problems == [] and before.ledger.compliant
    else:
        assert changed.size > 0
        assert np.max(np.abs(before.nll[:FLIP] - after.nll[:FLIP])) > 1e-4
        assert not before.ledger.compliant and any("score before fit" in p for p in before.problems)


def test_pr1306_fails_the_ledger_check(tiny_lm):
    r = _run(tiny_lm, _cfg(tiny_lm, mode="pr1306", steps=8), tiny_lm[3][:2049])["slot"]
    assert not r.ledger.compliant
    assert any("score before fit" in p and "their own or later targets" in p for p in r.problems), r.problems
    assert r.extra["mean_iterations"] == 8


@pytest.mark.parametrize("solver", ["jaxopt", "optax"])
def test_context_slot_with_each_backend(tiny_lm, solver):
    r = _run(tiny_lm, _cfg(tiny_lm, solver=solver), tiny_lm[3][:2049])["slot"]
    assert r.problems == [] and r.ledger.compliant and r.extra["solver"] == solver
    assert r.val_bpb < r.extra["val_bpb_without_slot"]


def test_factorised_objective_matches_float64():
    rng = np.random.default_rng(0)
    base = (30 * np.tanh(rng.standard_normal((40, 96)) * 4 / 30)).astype(np.float32)
    y = rng.integers(0, 96, 40)
    mask = rng.random(40) < 0.7
    delta = (rng.standard_normal(96) * 20).astype(np.float32)  # far beyond the clamp: exp(δ) would overflow alone
    fun = _logit_objective(jnp.asarray(base), jnp.asarray(y), jnp.asarray(mask))
    value, grad = jax.value_and_grad(fun)(jnp.asarray(delta))
    z = base.astype(np.float64) + delta
    lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    want = np.sum(mask * (lse - z[np.arange(40), y])) / mask.sum()
    p = np.exp(z - lse[:, None])
    g = (mask[:, None] * p).sum(0)
    np.add.at(g, y, -mask.astype(np.float64))
    np.testing.assert_allclose(float(value), want, rtol=2e-6)
    np.testing.assert_allclose(np.asarray(grad), g / mask.sum(), rtol=0, atol=2e-6)


def test_bad_slot_keys_are_one_clear_error(tiny_lm):
    for key, value, match in [("mode", "pr9999", "eval.slot.mode='pr9999'"), ("solver", "bfgs", "eval.slot.solver"),
                              ("max_iter", 0, "eval.slot.max_iter"), ("clamp", -1.0, "eval.slot.lr must be > 0 and "
                                                                                      "eval.slot.clamp")]:
        cfg = _cfg(tiny_lm, **{key: value})
        with pytest.raises(ValueError, match=match):
            stages.check_config(cfg)


def test_noncompliance_names_the_slot_mode(tiny_lm):
    assert stages.noncompliance(_cfg(tiny_lm)) == []
    assert stages.noncompliance(_cfg(tiny_lm, mode="score_first")) == []
    for mode in ("pr1318", "pr1350", "pr675", "pr1306"):
        why = stages.noncompliance(_cfg(tiny_lm, mode=mode))
        assert len(why) == 1 and why[0].startswith(f"eval.slot.mode={mode}")
