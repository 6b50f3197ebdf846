"""Phased score-first TTT (#1855) through the harness: order, isolation, score-before-update.

A tiny random model with the frontier's features that matter here (depth recurrence, so
LoRA slots per virtual layer; the BOS-masked window SmearGate; two-lane decoder; sparse
attention gate) on eight real FineWeb-200 documents: 3 rounds of 3 documents, chunks of
20 targets, windows of 32, global phases after rounds 1 and 2.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from golf_jax.core import mesh as mesh_lib
from golf_jax import model as model_lib
from golf_jax.audit import checks
from golf_jax.config import base_config
from golf_jax.eval.phased import lora as lora_lib
from golf_jax.eval import harness, stages
from golf_jax.eval.phased import plan as phased_plan, ttt as phased_ttt
from golf_jax.eval.harness import ComplianceError
from golf_jax.eval.ledger import Ledger
from golf_jax.model.embeddings import BOS_ID

L, CHUNK = 32, 20  # every window (20 or 32 inputs) runs at one width, 32: one compile of each step
LENGTHS = (150, 40, 97, 25, 130, 61, 200, 33)  # tokens per document (with its BOS)


def _cfg():
    cfg = base_config()
    m = cfg.model
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads, m.compute_dtype = 2, 32, 4, 2, "float32"
    m.num_loops, m.loop_start, m.loop_end = 1, 1, 1  # virtual order [0, 1, 1]: 3 LoRA slots
    m.smear_gate, m.gate_window = "window", 8
    m.parallel_residual_start, m.parallel_mode = 1, "two_lane"
    m.attn_gate, m.attn_gate_scale = "sparse", 0.5
    cfg.train.seq_len = L
    e = cfg.eval
    e.stages, e.ttt.mode, e.sliding.stride = "ttt", "phased", 16
    p = e.phased
    p.chunk_size, p.batch_docs, p.lora_rank, p.lora_lr = CHUNK, 3, 4, 1e-3
    p.prefix_docs, p.num_phases, p.global_chunk_tokens, p.global_batch_seqs, p.global_lr = 6, 3, 128, 4, 1e-2
    return cfg


@pytest.fixture(scope="module")
def setup(fineweb_tokens):
    """(cfg, model, params on host, val, lut, mesh): a random model (init + N(0, 0.05²))."""
    stream, lut = fineweb_tokens
    starts = np.flatnonzero(stream == 1)
    docs = [stream[s : s + n] for s, n in zip(starts, LENGTHS)]  # document prefixes, each from its BOS
    val = np.concatenate(docs).astype(np.int32)
    cfg = _cfg()
    model = model_lib.build_model(cfg.model)
    params = jax.device_get(jax.jit(model.init)(jax.random.PRNGKey(0), np.zeros((1, L), np.int32))["params"])
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: (x + 0.05 * rng.standard_normal(x.shape)).astype(x.dtype), params)
    return cfg, model, params, val, lut, mesh_lib.make_mesh()


def _run(setup, cfg=None, tokens=None, enforce=True, documents=None):
    c, model, params, val, lut, mesh = setup
    params = jax.device_put(params, mesh_lib.replicated(mesh))
    inspection = harness.Inspection(record_nll=True, enforce=enforce, documents=documents)
    return stages.run_stages(cfg or c, model, params, stages.Val(val if tokens is None else tokens, lut), mesh,
                             log=lambda m: None, inspection=inspection)["ttt"]


@pytest.fixture(scope="module")
def result(setup):
    return _run(setup)


def _plan(setup):
    cfg, *_, val, _, mesh = setup
    p = cfg.eval.phased
    rows = harness.batch_rows(p.batch_docs, mesh)
    return phased_plan.build(phased_plan.find_documents(val), rows, p.batch_docs, CHUNK, L, p.prefix_docs,
                             p.num_phases)


def _nll(logits, y):
    return -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits, -1)), np.asarray(y)[..., None], -1)[..., 0]


def test_plan_order_windows_and_phases(setup):
    plan = _plan(setup)
    docs, val = plan.docs, setup[3]
    assert docs.targets.tolist() == [*LENGTHS[:-1], LENGTHS[-1] - 1]  # its tokens after BOS and the next BOS
    order = np.concatenate(plan.rounds)
    assert order.tolist() == [6, 0, 4, 2, 5, 1, 7, 3]  # longest first, rounds of 3
    u = plan.units
    live = u.count > 0
    doc = np.searchsorted(docs.start, u.start, side="right") - 1
    end = docs.start[doc] + docs.targets[doc]
    assert (u.start[live] >= docs.start[doc][live]).all() and (u.start + u.wlen <= end)[live].all()  # inside the doc
    assert (u.wlen[live] <= L).all() and (u.pos + u.count <= u.wlen)[live].all()
    # every target once; a document's last chunk is never trained
    led = Ledger("x", len(val) - 1)
    for first, count in zip(plan.first, plan.count):
        led.score([(a, a + n) for a, n in zip(first, count)])
    assert led.verify() == []
    last = plan.first + plan.count == (docs.start + docs.targets)[np.maximum(plan.row_doc[plan.block_round], 0)]
    assert not (plan.train & last).any() and plan.train[plan.count > 0].any()
    # phases after rounds 1 and 2 (boundaries 2, 4, 6; none after the last round) on scored documents only
    assert [(ph.after_round, len(ph.docs)) for ph in plan.phases] == [(0, 2), (1, 4)]
    for ph in plan.phases:
        assert set(ph.docs) <= set(np.concatenate(plan.rounds[: ph.after_round + 1]).tolist())


def test_first_chunk_before_any_step_is_the_plain_document_score(setup, result):
    _, model, params, val, _, _ = setup
    plan = _plan(setup)
    docs = np.concatenate(plan.rounds[: plan.phases[0].after_round + 1])  # before the first global phase
    s = plan.docs.start[docs][:, None]
    apply = jax.jit(lambda x: model.apply({"params": params}, x))
    first = _nll(apply(val[s + np.arange(CHUNK)]), val[s + 1 + np.arange(CHUNK)])
    np.testing.assert_allclose(result.nll[s + np.arange(CHUNK)], first, atol=2e-5)
    # the second chunk (window [8, 40) of the document) is scored after one LoRA step: not the plain score
    x = s + 2 * CHUNK - L + np.arange(L)
    second = _nll(apply(val[x]), val[x + 1])[:, L - CHUNK :]
    assert np.min(np.max(np.abs(result.nll[s + CHUNK + np.arange(CHUNK)] - second), axis=1)) > 1e-4


def test_no_step_reads_an_unscored_target(setup, result):
    assert result.problems == [] and result.ledger.compliant
    plan = _plan(setup)
    got = [(ph["after_round"], ph["documents"], ph["tokens"]) for ph in result.extra["phases"]]
    assert got == [(ph.after_round, len(ph.docs), int(np.sum(plan.docs.targets[ph.docs] + 1))) for ph in plan.phases]
    assert all(ph["steps"] >= 1 for ph in result.extra["phases"])
    scored: list = []
    last_chunks = [(int(a), int(a + n)) for a, n, t in zip(plan.first.ravel(), plan.count.ravel(), plan.train.ravel())
                   if n and not t]
    phase_blocks = {int(np.flatnonzero(plan.block_round == ph.after_round)[-1]) for ph in plan.phases}
    for e in result.ledger.events:
        if "score" in e:
            scored = [*scored, *e["score"]]
            continue
        led = Ledger("x", len(setup[3]) - 1)
        led.score(scored)
        assert all(led.scored(a, b) for a, b in e["update"]), e
        if e["block"] not in phase_blocks:  # a LoRA step never reads its document's last chunk
            assert not any(a < y and x < b for a, b in e["update"] for x, y in last_chunks), e


def test_order_and_scores_are_reproducible(setup, result):
    again = _run(setup)
    np.testing.assert_array_equal(again.nll, result.nll)
    assert again.ledger.events == result.ledger.events
    assert not np.isnan(result.nll).any()


def _block_inputs(setup, plan, b):
    u = plan.units.take(plan.blocks[b])
    x = np.zeros((plan.rows, L), np.int32)
    for r in range(plan.rows):
        x[r, : u.wlen[r]] = setup[3][u.start[r] : u.start[r] + u.wlen[r]]
    pos = (u.pos[:, None] + np.arange(CHUNK)).astype(np.int32)
    return u, x, pos


def test_document_window_equals_the_document_alone(setup):
    """A document chunk through the batched, padded, vmap'd LoRA forward of the stage = the
    document's window alone; a row of documents packed with segment ids (the global
    phases' rows) = each document alone."""
    cfg, model, params, val, _, mesh = setup
    plan = _plan(setup)
    fwd = phased_ttt._lora_fns(model, mesh, cfg.eval.phased)[0]  # the stage's compiled forward
    lora = lora_lib.init(jax.random.PRNGKey(3), cfg.model, 4, lora_lib.MODULES, plan.rows)
    lora = {k: v + 0.02 * jax.random.normal(jax.random.PRNGKey(4), v.shape) for k, v in lora.items()}  # B ≠ 0
    scale = jnp.float32(cfg.eval.phased.lora_alpha / cfg.eval.phased.lora_rank)
    alone = jax.jit(lambda lo, x, pos: lora_lib.forward(model, params, lo, scale, x, pos))
    put = functools.partial(mesh_lib.put_global_batch, mesh)
    for b in (0, 4):  # windows of 20 (padded to 32) and of 32 (the chunk and 12 tokens before it)
        u, x, pos = _block_inputs(setup, plan, b)
        batched, _ = fwd(jax.device_put(params, mesh_lib.replicated(mesh)),
                         jax.device_put(lora, mesh_lib.data_sharded(mesh)), scale, put(x), put(pos))
        for r in np.flatnonzero(u.count):
            one = alone({k: v[r : r + 1] for k, v in lora.items()}, x[r : r + 1, : u.wlen[r]], pos[r : r + 1])
            np.testing.assert_allclose(np.asarray(batched[r]), np.asarray(one[0]), atol=2e-5)
    a, c = (int(plan.docs.start[i]) for i in (1, 5))
    d1, d2 = val[a : a + 14], val[c : c + 18]  # each from its BOS, inside its document
    apply = jax.jit(lambda x, seg: model.apply({"params": params}, x[None], segment_ids_BxT=seg[None])[0])
    row = np.concatenate([d1, d2])
    packed = np.asarray(apply(row, np.cumsum(row == 1)))
    for d, got in ((d1, packed[:14]), (d2, packed[14:])):
        padded = np.zeros(32, np.int32)
        padded[: len(d)] = d
        np.testing.assert_allclose(got, np.asarray(apply(padded, np.zeros(32, np.int32)))[: len(d)], atol=2e-5)


def test_vmapped_lora_step_equals_a_loop_over_documents(setup):
    """The stage's sharded step over a block's rows = one document at a time (two steps)."""
    cfg, model, params, val, _, mesh = setup
    p = cfg.eval.phased
    plan = _plan(setup)
    fwd, step = phased_ttt._lora_fns(model, mesh, p)
    scale = jnp.float32(p.lora_alpha / p.lora_rank)
    lora = lora_lib.init(jax.random.PRNGKey(5), cfg.model, 4, lora_lib.MODULES, plan.rows)
    put = functools.partial(mesh_lib.put_global_batch, mesh)
    rep = jax.device_put(params, mesh_lib.replicated(mesh))
    blocks = (4, 5)  # round 0, chunks 4 and 5: every row trains
    y = {b: val[plan.first[b][:, None] + 1 + np.arange(CHUNK)].astype(np.int32) for b in blocks}
    w = np.where(plan.train[blocks[0]][:, None], 1.0 / CHUNK, 0.0).astype(np.float32) * np.ones((1, CHUNK), np.float32)
    state = (jax.device_put(lora, mesh_lib.data_sharded(mesh)), None)
    state = (state[0], jax.device_put(lora_lib.adamw_init(lora), mesh_lib.data_sharded(mesh)))
    for t, b in enumerate(blocks, 1):
        _, x, pos = _block_inputs(setup, plan, b)
        logits, pullback = fwd(rep, state[0], scale, put(x), put(pos))
        state = step(state[0], state[1], pullback, logits, put(y[b]), put(w), jnp.int32(t))
    batched = jax.device_get(state[0])
    hp = lora_lib.AdamW(p.lora_lr, p.beta1, p.beta2, p.eps, p.weight_decay)

    @jax.jit
    def one_doc(lo, opt, x, pos, y, w, t):
        logits, pullback = jax.vjp(lambda l: lora_lib.forward(model, params, l, scale, x, pos), lo)
        (g,) = pullback(lora_lib.chunk_cotangent(logits, y, w))
        return lora_lib.adamw(lo, g, opt, t, hp)

    for r in np.flatnonzero(plan.train[blocks[0]]):
        lo = {k: v[r : r + 1] for k, v in lora.items()}
        opt = lora_lib.adamw_init(lo)
        for t, b in enumerate(blocks, 1):
            _, x, pos = _block_inputs(setup, plan, b)
            lo, opt = one_doc(lo, opt, x[r : r + 1], pos[r : r + 1], y[b][r : r + 1], w[r : r + 1], t)
        for k in lora:
            np.testing.assert_allclose(batched[k][r], np.asarray(lo[k][0]), atol=1e-6, err_msg=k)
    assert all(np.max(np.abs(batched[k] - np.asarray(lora[k]))) > 0 for k in lora)  # A and B both trained


class _Peeking(phased_ttt.PhasedTTT):
    """Broken on purpose: each LoRA step trains on the document's *next* chunk, not yet scored."""

    def _chunk_reads(self, b):
        rows, first, count = super()._chunk_reads(b)
        return (rows, first + count, self._plan.count[b + 1, rows]) if rows.size else (rows, first, count)


def test_training_before_scoring_is_caught(setup, result, monkeypatch):
    monkeypatch.setattr(phased_ttt, "PhasedTTT", _Peeking)
    with pytest.raises(ComplianceError, match="before they were scored"):
        _run(setup)
    broken = _run(setup, enforce=False)
    assert any("score before update" in q for q in broken.problems), broken.problems
    # and the flip test sees it: the tokens after target t feed the step that scores t's chunk
    val = setup[3]
    s = int(phased_plan.find_documents(val).start[6])
    t = s + CHUNK + 5  # inside document 6's second chunk
    declared = phased_plan.find_documents(val).start

    def proc(tokens, probe_targets=None):
        return {"ttt": _run(setup, tokens=tokens, enforce=False, documents=declared)}

    def flip(base):  # the tokens after t in the stage's document order (golf_jax/audit/checks.py)
        places = {"ttt": checks.stream_order(base.ledger.score_rank(), declared, len(val))}
        return checks.flip_test(proc, checks.Stream(val, 1024, BOS_ID), {"ttt": base}, [checks.Flip(t, "ttt")],
                                {"ttt": np.zeros(len(base.nll))}, np.random.default_rng(0), places)

    check = flip(broken)
    assert check.status == checks.FAIL and "ttt" in check.evidence, check.evidence
    monkeypatch.undo()  # the legal evaluator: the same flip moves no earlier score
    check = flip(result)
    assert check.status == checks.PASS, check.evidence


def test_check_config_names_the_key():
    cfg = _cfg()
    stages.check_config(cfg)
    for key, value, match in (("lora_modules", "q,x", "lora_modules"), ("prefix_docs", 2, "num_phases"),
                              ("chunk_size", 65, "chunk_size"), ("beta2", 1.0, "beta2")):
        bad = _cfg()
        bad.eval.phased[key] = value
        with pytest.raises(ValueError, match=f"eval.phased.{key}|{match}"):
            stages.check_config(bad)
    bad = _cfg()
    bad.eval.ttt.lookahead = True
    with pytest.raises(ValueError, match="mode=pr1318"):
        stages.check_config(bad)
