"""The baseline GPT: size, causality, and its layers against float64 numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import baseline as baseline_config
from golf_jax import model as model_lib
from golf_jax.model import layers


def tiny_cfg(**overrides):
    cfg = baseline_config.get_config().model
    cfg.unlock()
    cfg.update(num_layers=3, model_dim=64, num_heads=4, num_kv_heads=2, vocab_size=96, compute_dtype="float32")
    cfg.update(overrides)
    return cfg


def test_baseline_param_count_matches_upstream():
    cfg = baseline_config.get_config().model
    model = model_lib.build_model(cfg)
    shapes = jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, 8), jnp.int32)), jax.random.PRNGKey(0))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    assert count == 17_059_912  # upstream baseline log: model_params:17059912


def test_baseline_is_causal():
    cfg = tiny_cfg()
    model = model_lib.build_model(cfg)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16), jnp.int32))
    # Make the zero-initialised output projections non-zero so every path is live.
    params = jax.tree.map(lambda p: p + 0.02 * jax.random.normal(jax.random.PRNGKey(1), p.shape), params)
    tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 16), 0, cfg.vocab_size)
    t = 9
    changed = tokens.at[:, t + 1 :].set((tokens[:, t + 1 :] + 7) % cfg.vocab_size)
    a, b = model.apply(params, tokens), model.apply(params, changed)
    np.testing.assert_array_equal(np.asarray(a[:, : t + 1]), np.asarray(b[:, : t + 1]))
    assert not np.allclose(np.asarray(a[:, t + 1 :]), np.asarray(b[:, t + 1 :]))


def test_param_labels_route_matrices_to_muon():
    cfg = tiny_cfg()
    model = model_lib.build_model(cfg)
    params = jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, 8), jnp.int32))["params"], jax.random.PRNGKey(0))
    labels = model_lib.param_labels(cfg, params)
    assert labels["tok_emb"]["embedding"] == "embed"
    assert labels["blocks_0"]["attn"]["c_q"]["kernel"] == "muon"
    assert labels["blocks_2"]["mlp"]["proj"]["kernel"] == "muon"
    assert labels["blocks_0"]["attn"]["q_gain"] == "scalar"
    assert labels["skip_weights"] == "scalar"
    assert labels["blocks_1"]["resid_mix"] == "scalar"


def test_rotary_matches_float64_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 5, 2, 8)).astype(np.float32)
    cos, sin = layers.rotary_cos_sin(5, 4, 10000.0, jnp.float32)  # rotate 4 of 8 dims
    out = np.asarray(layers.apply_rotary(jnp.asarray(x), cos, sin))
    inv = 1.0 / 10000.0 ** (np.arange(0, 4, 2) / 4.0)
    theta = np.arange(5)[:, None] * inv[None, :]
    a, b = x[..., :2].astype(np.float64), x[..., 2:4].astype(np.float64)
    c, s = np.cos(theta)[None, :, None, :], np.sin(theta)[None, :, None, :]
    want = np.concatenate([a * c + b * s, -a * s + b * c, x[..., 4:]], axis=-1)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_gqa_attention_matches_float64_numpy():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(2, 6, 4, 8)).astype(np.float32)
    k = rng.normal(size=(2, 6, 2, 8)).astype(np.float32)
    v = rng.normal(size=(2, 6, 2, 8)).astype(np.float32)
    out = np.asarray(layers.causal_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)))
    want = np.zeros_like(out, dtype=np.float64)
    for h in range(4):
        kh, vh = k[:, :, h // 2].astype(np.float64), v[:, :, h // 2].astype(np.float64)
        scores = np.einsum("btd,bsd->bts", q[:, :, h].astype(np.float64), kh) / np.sqrt(8)
        scores = np.where(np.tril(np.ones((6, 6), bool)), scores, -np.inf)
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        want[:, :, h] = np.einsum("bts,bsd->btd", p, vh)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_cross_entropy_matches_float64_numpy():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 3, 11)).astype(np.float32) * 4
    targets = rng.integers(0, 11, size=(2, 3))
    got = np.asarray(layers.cross_entropy_BxT(jnp.asarray(logits), jnp.asarray(targets)))
    l64 = logits.astype(np.float64)
    want = np.log(np.exp(l64).sum(-1)) - np.take_along_axis(l64, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.gpu
def test_cudnn_attention_matches_xla():
    rng = np.random.default_rng(3)
    q, k, v = (jnp.asarray(rng.normal(size=s), jnp.bfloat16) for s in [(2, 128, 8, 64), (2, 128, 4, 64), (2, 128, 4, 64)])
    a = layers.causal_attention(q, k, v, "cudnn").astype(jnp.float32)
    b = layers.causal_attention(q, k, v, "xla").astype(jnp.float32)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-2, rtol=2e-2)
