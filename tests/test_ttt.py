"""Score-first TTT through the harness: the ledger, the last-chunk guard, lookahead, freezing."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import numpy as np
import pytest

from golf_jax.core import mesh as mesh_lib
from golf_jax.config import eval_config
from golf_jax.data.tokenizer import target_bytes
from golf_jax.eval import adapt, harness, stages
from golf_jax.eval.harness import Reveal

L, CHUNK = 128, 2048  # 8,192 val targets: 4 chunks


def _cfg(tiny_lm, **ttt):
    cfg = tiny_lm[0].copy_and_resolve_references()
    cfg.eval = eval_config()
    cfg.eval.stages = "sliding,ttt"
    cfg.eval.sliding.stride, cfg.eval.sliding.batch_windows = 64, 16
    t = cfg.eval.ttt
    t.chunk_tokens, t.optimizer, t.lr, t.epochs, t.batch_seqs = CHUNK, "sgd", 0.05, 1, 16
    for k, v in ttt.items():
        setattr(t, k, v)
    return cfg


def _run(tiny_lm, cfg, run=None):
    _, model, params, val, lut = tiny_lm
    mesh = mesh_lib.make_mesh()
    return stages.run_stages(cfg, model, jax.device_put(params, mesh_lib.replicated(mesh)), stages.Val(val, lut),
                             mesh, run=run, log=lambda m: None, inspection=harness.Inspection(record_nll=True))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ttt_run")


@pytest.fixture(scope="module")
def score_first(tiny_lm, run_dir):
    return _run(tiny_lm, _cfg(tiny_lm), SimpleNamespace(is_writer=True, path=run_dir))


def test_score_first_ledger(score_first):
    r = score_first["ttt"]
    assert r.problems == [] and r.ledger.compliant
    events = r.ledger.to_json()["events"]
    # chunk c: scored [2048c, 2048(c+1)), then trained on exactly that range; never the last chunk
    want = []
    for c in range(4):
        want.append({"score": [[CHUNK * c, CHUNK * (c + 1)]]})
        if c < 3:
            want.append({"update": [[CHUNK * c, CHUNK * (c + 1)]], "block": c})
    assert events == want
    assert r.extra["train_steps"] == 3  # 16 sequences per chunk, one step each, 3 trained chunks


def test_score_first_scores_each_chunk_before_training_on_it(score_first):
    slide, ttt = score_first["sliding"].nll, score_first["ttt"].nll
    np.testing.assert_array_equal(ttt[:CHUNK], slide[:CHUNK])  # chunk 0: the untouched artifact weights
    assert np.max(np.abs(ttt[CHUNK:] - slide[CHUNK:])) > 1e-3  # later chunks: adapted weights
    assert score_first["ttt"].val_bpb != score_first["sliding"].val_bpb


def test_each_chunks_figures_are_recorded(score_first, run_dir, tiny_lm):
    """blocks_ttt.npy (golf_jax/report plots it): per chunk, the per-target NLLs and bytes summed."""
    val, lut = tiny_lm[3], tiny_lm[4]
    nll, tokens, nbytes = np.load(run_dir / "blocks_ttt.npy").T
    per_target = score_first["ttt"].nll
    for c in range(4):
        a, b = CHUNK * c, CHUNK * (c + 1)
        assert tokens[c] == CHUNK
        assert nll[c] == pytest.approx(np.sum(per_target[a:b]), rel=1e-6)  # fp32 row sums on the device
        assert nbytes[c] == np.sum(target_bytes(lut, val[a:b], val[a + 1 : b + 1], target_index=np.arange(a, b)))
    assert np.sum(nll) / np.log(2) / np.sum(nbytes) == pytest.approx(score_first["ttt"].val_bpb, rel=1e-12)
    assert np.load(run_dir / "blocks_sliding.npy").shape == (1, 3)  # one block: the report shows no chunks


def test_zero_lr_ttt_is_the_sliding_eval(tiny_lm):
    res = _run(tiny_lm, _cfg(tiny_lm, lr=0.0))
    np.testing.assert_array_equal(res["ttt"].nll, res["sliding"].nll)


def test_lookahead_is_caught_by_the_ledger(tiny_lm):
    val = tiny_lm[3].copy()
    res = _run(tiny_lm, _cfg(tiny_lm, mode="pr1318", optimizer="adamw", lr=1e-3, lookahead=True))
    np.testing.assert_array_equal(tiny_lm[3], val)  # the shifted last sequence is built in a copy, not in val
    r = res["ttt"]
    assert not r.ledger.compliant
    assert any("score before update" in p and f"[0, {CHUNK + 1})" in p for p in r.problems), r.problems
    assert len([p for p in r.problems if "score before update" in p]) == 3  # one per trained chunk
    clean = _run(tiny_lm, _cfg(tiny_lm, mode="pr1318", optimizer="adamw", lr=1e-3))
    assert clean["ttt"].problems == [] and clean["ttt"].ledger.compliant


def test_carry_marks_later_stages_as_a_second_pass(tiny_lm):
    cfg = _cfg(tiny_lm, mode="pr1318", carry=True)
    cfg.eval.stages = "ttt,sliding"
    res = _run(tiny_lm, cfg)
    assert res["ttt"].problems == []
    assert any("second pass" in p for p in res["sliding"].problems)
    assert any("carry" in w for w in stages.noncompliance(cfg))
    with pytest.raises(ValueError, match="eval.ttt.mode=pr1318"):
        stages.check_config(_cfg(tiny_lm, carry=True))


def test_freeze_scopes(tiny_lm):
    _, _, params, _, _ = tiny_lm
    D, H = 64, 4
    per_block_scalars = 2 * D + D + D + H  # resid_mix, attn_scale, mlp_scale, q_gain
    mask = adapt.trainable_mask(params, 1, "scalars")
    _, frozen = adapt.count_trainable(params, mask)
    assert frozen == per_block_scalars
    _, frozen_all = adapt.count_trainable(params, adapt.trainable_mask(params, 1, "blocks"))
    block0 = sum(int(np.prod(np.shape(v))) for v in jax.tree.leaves(params["blocks_0"]))
    assert frozen_all == block0 > per_block_scalars


def test_frozen_blocks_do_not_move(tiny_lm):
    from golf_jax.eval.ttt import score_first as ttt

    _, model, params, val, _ = tiny_lm
    mesh = mesh_lib.make_mesh()
    t = _cfg(tiny_lm, freeze_blocks=1, freeze_scope="blocks").eval.ttt
    predict = harness.jit_predict(harness.make_predict(model), mesh)
    ev = ttt.ScoreFirstTTT(model, predict, jax.device_put(params, mesh_lib.replicated(mesh)), mesh, t, L, 4)

    ev.update(Reveal(val, lambda a, b: True, 0, 4, True))
    new = jax.device_get(ev.params)
    for a, b in zip(jax.tree.leaves(params["blocks_0"]), jax.tree.leaves(new["blocks_0"])):
        np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(new["blocks_1"]["attn"]["c_q"]["kernel"] - params["blocks_1"]["attn"]["c_q"]["kernel"])) > 0
