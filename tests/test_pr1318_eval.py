"""configs/record.py:pr1318's evaluation against the upstream code run on the same weights and tokens.

The golden values are tests/fixtures/pr1318_eval.npz (tests/fixtures/README.md,
tests/fixtures/make_pr1318_eval.py): #1318's `eval_val_sliding`, `eval_val_sliding_ttt`
and `eval_val_sliding_slot`, in that order on one model, on a tiny record model in fp32.
Everything here is the pr1318 config with the tiny geometry, on the first 2,401 tokens of
FineWeb-200 (SP1024, ../shared/data); the fixture ran in fp32
(no bf16 SLOT addition) with torch 2.13.0's L-BFGS (eval.slot.torch_ls_budget).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs import record as record_config
from golf_jax.core import mesh as mesh_lib
from golf_jax import model as model_lib
from golf_jax.eval import harness, stages
from golf_jax.eval.slot import stage as slot_lib
from golf_jax.eval.slot.stage import window_batches
from golf_jax.eval.windows import gather_batch, sliding_units
from golf_jax.model import reference

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from make_pr1318_eval import BATCH_SEQS, NUM_TOKENS, SEQ_LEN, SLOT, STRIDE, TTT, weights  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "pr1318_eval.npz"


@pytest.fixture(scope="module")
def fx() -> dict:
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


def pr1318_cfg(slot_iters: int, stages_: str = "sliding,ttt,slot"):
    c = record_config.get_config("pr1318")
    m = c.model
    m.vocab_size, m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = 1024, 4, 32, 4, 2
    m.rope_dims, m.bigram_vocab_size, m.bigram_dim, m.ve_dim, m.ve_layers = 4, 48, 16, 8, "2,3"
    m.xsa_last_n, m.mtp_num_heads, m.mtp_loss_weight = 3, 0, 0.0  # the eval_model has no MTP heads
    m.compute_dtype, m.attention_impl = "float32", "chunked"
    c.train.seq_len = SEQ_LEN
    e = c.eval
    e.stages = stages_
    e.sliding.stride, e.sliding.batch_windows = STRIDE, BATCH_SEQS
    e.ttt.chunk_tokens, e.ttt.lr, e.ttt.freeze_blocks = TTT["ttt_chunk_tokens"], TTT["ttt_lr"], TTT["ttt_freeze_blocks"]
    e.ttt.batch_seqs, e.ttt.grad_clip = TTT["ttt_batch_seqs"], TTT["ttt_grad_clip"]
    e.slot.focal, e.slot.max_iter, e.slot.history = SLOT["slot_focal_tokens"], slot_iters, SLOT["slot_lbfgs_history"]
    e.slot.bf16_add, e.slot.torch_ls_budget, e.slot.ranks = False, True, 1  # fp32, torch 2.13, one process
    return c


@pytest.fixture(scope="module")
def setup(fx, fineweb_tokens):
    """The model, the fixture's weights, the first NUM_TOKENS FineWeb-200 tokens (SP1024) and their byte LUT."""
    val = fineweb_tokens[0][:NUM_TOKENS]
    assert int(val.astype(np.int64).sum()) == int(fx["tokens_sum"])  # the stream the reference ran on
    names = [str(n) for n in fx["large_names"]]
    shapes = [tuple(int(d) for d in str(s).split(",")) for s in fx["large_shapes"]]
    sd = {**{k[2:]: v for k, v in fx.items() if k.startswith("w/")}, **weights(names, shapes)}
    mesh = mesh_lib.make_mesh()
    params = jax.device_put(jax.tree.map(jnp.asarray, reference.params_from_reference(sd)), mesh_lib.replicated(mesh))
    model = model_lib.build_model(pr1318_cfg(2).model)
    return model, params, val, fineweb_tokens[1], mesh, sd


def _run(setup, cfg):
    model, params, val, lut, mesh, _ = setup
    return stages.run_stages(cfg, model, params, stages.Val(val, lut), mesh, log=lambda m: None)


@pytest.fixture(scope="module")
def short(setup):
    return _run(setup, pr1318_cfg(2, "sliding,ttt"))


def rel(a, b) -> float:
    return abs(float(a) - float(b)) / abs(float(b))


def test_sliding_and_ttt_match_the_reference(short, fx):
    """The re-scored tail in both stages, TTT without lookahead: fp32 agreement."""
    for name, key in (("sliding", "sliding"), ("ttt", "ttt")):
        assert rel(short[name].val_loss, fx[f"{key}/loss"]) < 2e-6, name
        assert rel(short[name].val_bpb, fx[f"{key}/bpb"]) < 2e-6, name
    assert short["ttt"].extra["train_steps"] == 9  # 10 chunks, the last never trained


def test_ttt_update_matches_the_reference(short, setup, fx):
    """The adapted weights, tensor by tensor: the update agrees to fp32 noise (a lookahead moves it by %)."""
    sd = setup[5]
    delta_ref, stored = {}, {}
    for k, v in sd.items():
        d = fx.get(f"ttt_delta/{k}")
        delta_ref[k] = np.zeros_like(v) if d is None else d
        stored[k] = np.full_like(v, float(d is not None))
    ours = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64),
                        short["ttt"].params, setup[1])
    flat = lambda t: traverse_util.flatten_dict(t)  # noqa: E732
    ref_d, mask, our_d = (flat(reference.params_from_reference(delta_ref)), flat(reference.params_from_reference(stored)),
                          flat(ours))
    # fp32: each weight's own rounding is 2^-24·|w| ≈ 1e-7, i.e. ~1e-5 of an update of ~5e-3
    for k in ref_d:
        if mask[k].any():
            err = np.linalg.norm((our_d[k] - ref_d[k]) * mask[k])
            assert err <= 1e-4 * np.linalg.norm(ref_d[k]) + 1e-9, (k, err, np.linalg.norm(ref_d[k]))
    # the frozen scalars of blocks 0..2 did not move, on either side
    assert all(np.all(our_d[k] == 0) for k in our_d if k[0] in ("blocks_0", "blocks_1", "blocks_2") and len(k) == 2)
    # every tensor's norm, the large ones included
    for name in (str(n) for n in fx["large_names"]):
        ind = {k: np.full_like(v, float(k == name)) for k, v in sd.items()}
        m = flat(reference.params_from_reference(ind))
        norm = np.sqrt(sum(float(np.sum((our_d[k] * m[k]) ** 2)) for k in m))
        assert rel(norm, fx[f"ttt_norm/{name}"]) < 1e-4, name


def test_slot_objective_per_batch_matches_the_reference(short, setup, fx):
    """Each batch's objective at the reference's own start point (its previous δ, clamped): value and
    gradient to fp32. This pins which windows form a batch, the positions [L-F, L-1), the tail's
    unmasked zero padding and the TTT-adapted weights underneath, whatever path L-BFGS takes."""
    model, _, val, _, _, _ = setup
    params, T, F = short["ttt"].params, len(val) - 1, SLOT["slot_focal_tokens"]
    units = sliding_units(T, SEQ_LEN, STRIDE, "reference")
    blocks, _ = window_batches(units, BATCH_SEQS, 1)
    assert len(blocks) == len(fx["slot25/f0"]) == 5
    predict = jax.jit(harness.make_predict(model))
    for k, idx in enumerate(blocks):
        sub = units.take(idx)
        obj = slot_lib.objective("pr1318", sub, len(sub), F)
        tgt = sub.start[:, None] + obj.pos_BxF
        y = jnp.asarray(np.where(tgt < T, val[np.minimum(tgt + 1, T)], 0), jnp.int32)
        logits = predict(params, gather_batch(val, sub, len(sub))["x"], obj.pos_BxF).astype(jnp.float32)
        m = jnp.asarray(obj.mask_BxF, jnp.float32)

        def f(d):
            nll = -jnp.take_along_axis(jax.nn.log_softmax(logits + d, axis=-1), y[..., None], axis=-1)[..., 0]
            return jnp.sum(nll * m) / jnp.sum(m)

        f0, g0 = jax.value_and_grad(f)(jnp.asarray(fx["slot25/start"][k]))
        assert rel(f0, fx["slot25/f0"][k]) < 2e-6, k
        g_ref = fx["slot25/g0"][k]
        assert np.max(np.abs(np.asarray(g0) - g_ref)) < 1e-5 * np.max(np.abs(g_ref)) + 1e-8, k


def test_slot_matches_the_reference_within_its_own_noise(setup, fx):
    """SLOT at the seeds' 25 iterations on the TTT-adapted weights. L-BFGS's path is decided by fp32
    rounding (the first line search's cubic discriminant is ~c², the square of a tiny curvature): the
    fixture records the reference's own spread when every weight moves by ±1 ulp (8 draws: 0.019 in loss
    here; 0.031 at 2 iterations), and ours must lie inside it."""
    r = _run(setup, pr1318_cfg(25, "ttt,slot"))["slot"]
    ref, ulp = float(fx["slot25/loss"]), fx["slot25/ulp_loss"]
    noise = float(np.max(np.abs(ulp - ref)))
    assert 0 < noise < 0.05
    assert abs(r.val_loss - ref) <= noise, (r.val_loss, ref, noise)
    assert r.extra["windows"] == 153 and r.tokens == 2448  # the re-scored tail: 2,400 + 48


def test_window_batches_follow_the_references_ranks():
    """32 whole windows per batch (window 0's units together), each rank's windows batched from its first."""
    u = sliding_units(2400, SEQ_LEN, STRIDE, "reference")
    blocks, first = window_batches(u, 32, 1)
    assert [len(b) for b in blocks] == [35, 32, 32, 32, 22] and first.tolist() == [True] + [False] * 4
    blocks, first = window_batches(u, 32, 2)  # 150 windows: ranks of 75
    assert [len(b) for b in blocks] == [35, 32, 11, 32, 32, 11]
    assert first.tolist() == [True, False, False, True, False, False]
