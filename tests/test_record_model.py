"""The record GPT: sizes, inits, labels, compat flags, causality and a CPU smoke train."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from configs import record as record_config
from golf_jax import model as model_lib
from golf_jax.model.blocks import rope_base_for
from golf_jax.model.layers import linear_override_init
from golf_jax.train import qat as qat_lib
from golf_jax.optim.build import build_optimizer, count_by_label
from golf_jax.core import mesh as mesh_lib
from golf_jax.train import step as step_lib


def tiny_cfg(**overrides) -> ml_collections.ConfigDict:
    """The record stack shrunk to CPU size, every feature on (XSA on 3 of 4 layers)."""
    c = record_config.get_config()
    m = c.model
    m.vocab_size, m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = 64, 4, 32, 4, 2
    m.rope_dims, m.rope_train_seq_len = 4, 16
    m.bigram_vocab_size, m.bigram_dim, m.ve_dim, m.ve_layers, m.xsa_last_n = 48, 16, 8, "2,3", 3
    m.compute_dtype, m.attention_impl = "float32", "xla"
    for k, v in overrides.items():
        setattr(m, k, v)
    return c


def abstract_params(model_cfg, seq_len: int = 16):
    model = model_lib.build_model(model_cfg)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, seq_len), jnp.int32))["params"])


def init_params(model_cfg, seed: int = 0) -> dict:
    model = model_lib.build_model(model_cfg)
    return jax.jit(lambda r: model.init(r, jnp.zeros((1, 8), jnp.int32))["params"])(jax.random.key(seed))


@pytest.fixture(scope="module")
def tiny_init() -> dict:
    return jax.device_get(init_params(tiny_cfg().model))


def test_param_counts_at_default_config():
    cfg = record_config.get_config()
    params = abstract_params(cfg.model)
    total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    mtp = sum(int(np.prod(x.shape)) for k, v in params.items() if k.startswith("mtp_heads_") for x in jax.tree.leaves(v))
    assert total == 28_116_060
    assert total - mtp == 27_067_484
    counts = count_by_label(params, model_lib.param_labels(cfg.model, params))
    assert counts == {"muon": 25_952_256, "embed": 999_424, "scalar": 115_804, "head": 1_048_576}


def test_rope_ntk_base():
    assert rope_base_for(2048, 10000.0, 16, 1024) == pytest.approx(22081.79, abs=0.01)
    assert rope_base_for(1024, 10000.0, 16, 1024) == 10000.0
    assert rope_base_for(2048, 10000.0, 16, 2048) == 10000.0


def assert_orthogonal(w) -> None:
    """torch semantics: the shorter side is orthonormal (Gram of the smaller size is I)."""
    w = np.asarray(w)
    gram = w.T @ w if w.shape[1] <= w.shape[0] else w @ w.T
    np.testing.assert_allclose(gram, np.eye(gram.shape[0]), atol=1e-5)


def test_inits(tiny_init):
    """docs/reference-notes.md#record-init: orthogonal q/k/v/up, zero out/down, bigram table and MTP heads, N(0, σ²) tables."""
    p = tiny_init
    b0 = p["blocks_0"]
    for w in (b0["attn"]["c_q"]["kernel"], b0["attn"]["c_k"]["kernel"], b0["attn"]["c_v"]["kernel"], b0["mlp"]["fc"]["kernel"]):
        assert_orthogonal(w)
    for w in (b0["attn"]["proj"]["kernel"], b0["mlp"]["proj"]["kernel"], p["bigram"]["embed"], p["mtp_heads_0"]["kernel"]):
        assert not np.any(np.asarray(w))
    # Below 64 the projections keep their own zero init; from 64 up the override makes them orthogonal.
    assert not np.any(np.asarray(p["bigram"]["proj"]["kernel"]))
    assert_orthogonal(linear_override_init(jax.random.key(0), (64, 128)))
    assert_orthogonal(linear_override_init(jax.random.key(0), (96, 64)))
    assert np.std(np.asarray(p["ve_shared"]["embed"])) == pytest.approx(0.01, rel=0.15)
    assert np.std(np.asarray(p["tok_emb"]["embedding"])) == pytest.approx(0.005, rel=0.1)
    np.testing.assert_array_equal(b0["attn"]["q_gain"], 4.0)
    np.testing.assert_array_equal(b0["resid_mix"], np.stack([np.ones(32), np.zeros(32)]))
    assert float(p["bigram"]["scale"]) == pytest.approx(0.05) and float(p["ve_shared"]["scale"]) == pytest.approx(0.1)
    assert not np.any(np.asarray(p["smear"]["gate"]))


def test_compat_mtp_untrained_flips_only_mtp_labels():
    cfg = record_config.get_config()
    params = abstract_params(cfg.model)
    base = traverse_util.flatten_dict(model_lib.param_labels(cfg.model, params, cfg.compat))
    cfg.compat.mtp_untrained = True
    flipped = traverse_util.flatten_dict(model_lib.param_labels(cfg.model, params, cfg.compat))
    changed = {k for k in base if base[k] != flipped[k]}
    assert changed == {k for k in base if k[0].startswith("mtp_heads_")}
    assert all(base[k] == "head" and flipped[k] == "frozen" for k in changed)


@pytest.mark.parametrize("reference_scope", [False, True])
def test_compat_qat_scope_changes_only_its_kernels(tiny_init, reference_scope):
    params = tiny_init
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: np.asarray(x) + 0.3 * rng.normal(size=x.shape).astype(np.float32), params)
    cfg = tiny_cfg()
    mask = qat_lib.qat_mask(params, model_lib.param_labels(cfg.model, params, cfg.compat), reference_scope)
    alpha = jnp.float32(qat_lib.qat_alpha(0.05, 0.15))
    qat = jax.jit(lambda p: qat_lib.apply_qat(p, mask, alpha))
    out = traverse_util.flatten_dict(qat(params))
    flat = traverse_util.flatten_dict(params)
    changed = {k for k in flat if not np.array_equal(flat[k], out[k])}
    if reference_scope:
        want = {("bigram", "proj", "kernel"), ("ve_shared", "proj", "kernel"), ("mtp_heads_0", "kernel"), ("mtp_heads_1", "kernel")}
    else:
        want = {k for k in flat if k[0].startswith("blocks_") and k[-1] == "kernel"}
    assert changed == want


@pytest.fixture(scope="module")
def tiny_live(tiny_init):
    """A tiny model with every weight perturbed from its init, so every path is live."""
    model = model_lib.build_model(tiny_cfg().model)
    params = tiny_init
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda x: np.asarray(x) + 0.2 * rng.normal(size=x.shape).astype(np.float32), params)
    return model, params


def test_causal_in_the_embedding_stream(tiny_live):
    model, params = tiny_live
    T, t = 24, 10
    tokens = jax.random.randint(jax.random.key(2), (2, T), 0, 64)
    delta = jnp.zeros((2, T, 32))

    @jax.jit
    def grad_at(delta):
        return jax.grad(lambda d: jnp.sum(model.apply({"params": params}, tokens, d)[:, t]))(delta)

    g = np.asarray(grad_at(delta))
    assert np.all(g[:, t + 1 :] == 0.0)
    assert np.all(np.abs(g[:, : t + 1]).sum(-1) > 0)


def test_causal_in_the_tokens(tiny_live):
    """Changing tokens after t leaves logits ≤ t bit-identical (covers bigram and VE paths)."""
    model, params = tiny_live
    T, t = 24, 10
    a = jax.random.randint(jax.random.key(3), (2, T), 0, 64)
    b = a.at[:, t + 1 :].set((a[:, t + 1 :] + 7) % 64)
    fwd = jax.jit(lambda x: model.apply({"params": params}, x))
    la, lb = np.asarray(fwd(a)), np.asarray(fwd(b))
    np.testing.assert_array_equal(la[:, : t + 1], lb[:, : t + 1])
    assert not np.array_equal(la[:, t + 1 :], lb[:, t + 1 :])


def test_smoke_train_loss_decreases():
    cfg = tiny_cfg(num_layers=2, ve_layers="1", xsa_last_n=2)  # 1 encoder + 1 decoder layer, one skip
    cfg.opt.muon_ns_dtype = "float32"
    seq_len = 32
    mesh = mesh_lib.make_mesh(jax.devices()[:1])
    model = model_lib.build_model(cfg.model)
    rng = jax.random.key(0)
    abstract = jax.eval_shape(lambda r: model.init(r, np.zeros((1, 8), np.int32))["params"], rng)
    tx = build_optimizer(cfg.opt, model_lib.param_labels(cfg.model, abstract, cfg.compat))
    state = step_lib.init_state(model, tx, rng, seq_len, mesh)
    train_step = step_lib.jit_train_step(step_lib.make_train_step(model, tx), mesh)
    tokens = np.random.default_rng(0).integers(0, 64, size=(8, seq_len + 1)).astype(np.int32)
    tokens[:, 1::2] = tokens[:, 0:-1:2]  # a learnable pattern: every odd token repeats its predecessor
    batch = {
        "x": mesh_lib.put_global_batch(mesh, tokens[:, :-1]),
        "y": mesh_lib.put_global_batch(mesh, tokens[:, 1:]),
        **step_lib.schedule_inputs(1.0, 0.92),
    }
    losses = []
    for _ in range(8):
        state, metrics = train_step(state, batch)
        losses.append(float(metrics["loss"]))
        assert np.isfinite(losses[-1])
    assert "mtp_loss" in metrics
    assert losses[-1] < losses[0] - 0.1, losses
