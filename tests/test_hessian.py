"""The on-device Hessian collector vs XᵀX of layer inputs recomputed in float64 numpy.

Independent path: the layer inputs are recomputed by hand in float64 numpy from
the params, following baseline.py's math (rms_norm, RoPE, GQA attention, relu²).

Tolerance: the collector accumulates in fp32 with HIGHEST-precision matmuls over
N·T = 13·16 tokens; the forward itself runs in fp32. Relative error vs float64 is
bounded by a few hundred ulps (~1e-5); the 8-device and 1-device sums differ only
in summation order (~1e-6 relative).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from golf_jax import model as model_lib
from golf_jax.config import base_config
from golf_jax.quant import hessian, selfgen
from golf_jax.core import mesh as mesh_lib

V, D, T, N = 128, 64, 16, 13


def _cfg():
    c = base_config()
    m = c.model
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = 2, D, 4, 2
    m.vocab_size, m.compute_dtype = V, "float32"
    return c


def _rms(x):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.finfo(np.float32).eps)


def _rotary(x, base):
    B, T_, H, hd = x.shape
    inv = 1.0 / base ** (np.arange(0, hd, 2) / hd)
    ang = np.outer(np.arange(T_), inv)
    cos, sin = np.cos(ang)[None, :, None, :], np.sin(ang)[None, :, None, :]
    a, b = x[..., : hd // 2], x[..., hd // 2 :]
    return np.concatenate([a * cos + b * sin, -a * sin + b * cos], -1)


def _numpy_inputs(p, cfg, tokens) -> dict[str, np.ndarray]:
    """{kernel path: [tokens, in]} for the baseline GPT, by hand in float64."""
    m = cfg.model
    g = lambda a: np.asarray(a, np.float64)  # noqa: E731
    hd, H, K = D // m.num_heads, m.num_heads, m.num_kv_heads
    B = tokens.shape[0]
    x = _rms(g(p["tok_emb"]["embedding"])[tokens])
    x0, skips, out = x, [], {}
    n_enc = m.num_layers // 2
    for i in range(m.num_layers):
        bp = p[f"blocks_{i}"]
        if i >= n_enc and skips:
            x = x + g(p["skip_weights"])[i - n_enc] * skips.pop()
        rm = g(bp["resid_mix"])
        x = rm[0] * x + rm[1] * x0
        h = _rms(x)
        a = bp["attn"]
        for n in ("c_q", "c_k", "c_v"):
            out[f"blocks_{i}/attn/{n}/kernel"] = h.reshape(-1, D)
        q = _rms((h @ g(a["c_q"]["kernel"])).reshape(B, T, H, hd))
        k = _rms((h @ g(a["c_k"]["kernel"])).reshape(B, T, K, hd))
        v = (h @ g(a["c_v"]["kernel"])).reshape(B, T, K, hd)
        q = _rotary(q, m.rope_base) * g(a["q_gain"])[None, None, :, None]
        k = _rotary(k, m.rope_base)
        k, v = np.repeat(k, H // K, axis=2), np.repeat(v, H // K, axis=2)
        s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(hd)
        s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
        w = np.exp(s - s.max(-1, keepdims=True))
        y = np.einsum("bhqk,bkhd->bqhd", w / w.sum(-1, keepdims=True), v).reshape(B, T, D)
        out[f"blocks_{i}/attn/proj/kernel"] = y.reshape(-1, D)
        x = x + g(bp["attn_scale"]) * (y @ g(a["proj"]["kernel"]))
        h = _rms(x)
        out[f"blocks_{i}/mlp/fc/kernel"] = h.reshape(-1, D)
        u = np.square(np.maximum(h @ g(bp["mlp"]["fc"]["kernel"]), 0))
        out[f"blocks_{i}/mlp/proj/kernel"] = u.reshape(-1, u.shape[-1])
        x = x + g(bp["mlp_scale"]) * (u @ g(bp["mlp"]["proj"]["kernel"]))
        if i < n_enc:
            skips.append(x)
    return out


@pytest.fixture(scope="module")
def setup():
    cfg = _cfg()
    model = model_lib.build_model(cfg.model)
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, T), np.int32))["params"]
    # Non-zero proj kernels (init is zeros) so later layers see non-trivial inputs.
    rng = np.random.default_rng(1)
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: a + 0.05 * rng.standard_normal(a.shape).astype(np.float32)
        if path[-1].key == "kernel" else a, params)
    tokens = np.random.default_rng(0).integers(0, V, (N, T)).astype(np.int32)
    return cfg, model, params, tokens


def test_collector_matches_float64_numpy_on_8_and_1_devices(setup):
    cfg, model, params, tokens = setup
    assert len(jax.devices()) == 8
    H8 = hessian.collect_hessians(model, params, tokens, mesh_lib.make_mesh(), batch_seqs=8)
    H1 = hessian.collect_hessians(model, params, tokens, mesh_lib.make_mesh(jax.devices()[:1]), batch_seqs=5)
    ref = {k: x.T @ x / N for k, x in _numpy_inputs(jax.device_get(params), cfg, tokens).items()}
    assert sorted(H8) == sorted(ref) and len(ref) == 12
    for k, r in ref.items():
        assert H8[k].dtype == np.float32 and H8[k].shape == r.shape
        scale = np.abs(r).max()
        assert np.abs(H8[k] - r).max() <= 2e-5 * scale, k
        assert np.abs(H8[k] - H1[k]).max() <= 2e-6 * scale, k
        np.testing.assert_array_equal(H8[k], H8[k].T)


def test_tied_embedding_hessian_is_the_lm_head_input(setup):
    """tied_embed=True adds Σ hᵀh / N of the final-normed hidden states under
    "tok_emb/embedding" (#1735 hooks the final norm's output); 5 sequences on 8
    devices, so 3 zero-padded rows must not count."""
    cfg, model, params, tokens = setup
    n, key = 5, hessian.TIED_EMBED_KEY
    Hs = hessian.collect_hessians(model, params, tokens[:n], mesh_lib.make_mesh(), batch_seqs=8, tied_embed=True)
    v = {"params": params}
    h = np.asarray(model.apply(v, tokens[:n], method="hidden"), np.float64)
    # h is what the tied head multiplies (the logits are logits_from_hidden(h)), and it is normed.
    np.testing.assert_allclose(model.apply(v, h.astype(np.float32), method="logits_from_hidden"),
                               model.apply(v, tokens[:n]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.sqrt(np.mean(h * h, axis=-1)), 1.0, rtol=1e-3)
    h2 = h.reshape(-1, D)
    ref = h2.T @ h2 / n
    assert Hs[key].dtype == np.float32 and Hs[key].shape == (D, D)
    assert np.abs(Hs[key] - ref).max() <= 2e-5 * np.abs(ref).max()
    assert len(Hs) == 13 and all(k.endswith("/kernel") for k in Hs if k != key)


def test_calibration_sources(setup):
    cfg, model, params, tokens = setup
    mesh = mesh_lib.make_mesh()
    val = np.arange(1000, dtype=np.int32) % V
    seqs = hessian.calibration_sequences(cfg, "val", 3, T, val_tokens=val)
    np.testing.assert_array_equal(seqs.reshape(-1), val[: 3 * T])
    gen = selfgen.generate(model, params, 3, T, mesh, seed=0, bos_id=1)
    assert gen.shape == (3, T) and (gen[:, 0] == 1).all() and gen.min() >= 0 and gen.max() < V
    np.testing.assert_array_equal(gen, selfgen.generate(model, params, 3, T, mesh, seed=0, bos_id=1))
    with pytest.raises(ValueError, match="calib_source"):
        hessian.calibration_sequences(cfg, "test", 3, T)
