"""The SP8192 features of the one GPT: depth recurrence, gated skips, parallel residuals,
the full-size parameter count, and the model-config checks."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import baseline, sp8192_legal
from golf_jax import model as model_lib
from golf_jax.model import gpt, layers, reference
from golf_jax.model.blocks import MLP, Attention, Block

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import make_sp8192_logits  # noqa: E402

VIRTUAL_ORDER = [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]


def tiny_cfg():
    """The SP8192 stack at 6 layers × 32: layers 2–3 loop (×3), parallel from layer 4."""
    m = sp8192_legal.get_config().model
    m.vocab_size, m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = 48, 6, 32, 4, 2
    m.rope_dims, m.loop_start, m.loop_end, m.parallel_residual_start, m.xsa_last_n = 4, 2, 3, 4, 6
    m.compute_dtype, m.attention_impl = "float32", "xla"
    return m


def noisy_params(model, T=12, seed=0):
    """Init + noise so that zero-initialised projections and gates are live."""
    params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, T), jnp.int32))["params"]
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    return jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def test_full_size_order_skips_and_param_count():
    cfg = sp8192_legal.get_config().model
    encoder, decoder = gpt.layer_order(cfg, looping=True)
    assert encoder + decoder == VIRTUAL_ORDER
    assert (len(encoder), len(decoder), gpt.num_skips(cfg)) == (8, 9, 8)
    assert gpt.layer_order(cfg, looping=False) == (list(range(5)), list(range(5, 11)))
    model = model_lib.build_model(cfg)
    shapes = jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, 8), jnp.int32)), jax.random.PRNGKey(0))
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == 35_944_536  # #1758 log: model_params


def unrolled_logits(cfg, params, copies, tokens, looping):
    """An independent transcription of the SP8192 forward (F1735 L740-770) in which each
    virtual use of a block gets its own parameter copy `copies[u]` (u = position in the order)."""
    L = cfg.num_layers
    x = layers.rms_norm(jnp.take(params["tok_emb"]["embedding"], tokens, axis=0))
    x0 = x
    encoder, decoder = gpt.layer_order(cfg, looping)
    skips, u = [], 0
    block = lambda i, p, h: Block(cfg, i, i >= L - cfg.xsa_last_n, i >= cfg.parallel_residual_start).apply(  # noqa: E731
        {"params": p}, h, x0, None)
    for i in encoder:
        x = block(i, copies[u], x)
        skips.append(x)
        u += 1
    for j, i in enumerate(decoder):
        if j < params["skip_weights"].shape[0] and skips:
            s = params["skip_weights"][j] * skips.pop()
            g = jax.nn.sigmoid(params["skip_gates"][j])
            x = g * x + (1 - g) * s  # torch.lerp(s, x, g)
        x = block(i, copies[u], x)
        u += 1
    h = layers.rms_norm(x)
    return layers.softcap(h @ params["tok_emb"]["embedding"].T, cfg.logit_softcap)


@pytest.mark.parametrize("looping", [True, False])
def test_recurrence_shares_weights_and_sums_gradients(looping):
    cfg = tiny_cfg()
    model = model_lib.build_model(cfg, looping=looping)
    params = noisy_params(model)
    tokens = jax.random.randint(jax.random.PRNGKey(3), (2, 12), 0, cfg.vocab_size)
    order = sum(gpt.layer_order(cfg, looping), [])
    copies = [params[f"blocks_{i}"] for i in order]
    ours = jax.jit(model.apply)({"params": params}, tokens)
    ref = jax.jit(lambda p, cs: unrolled_logits(cfg, p, cs, tokens, looping))(params, copies)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-5, atol=1e-5)

    # d loss / d blocks_i of the shared model == Σ over i's uses of d loss / d copy.
    def loss_shared(p):
        return jnp.mean(model.apply({"params": p}, tokens) ** 2)

    def loss_unrolled(cs):
        return jnp.mean(unrolled_logits(cfg, params, cs, tokens, looping) ** 2)

    g_shared = jax.jit(jax.grad(loss_shared))(params)
    g_copies = jax.jit(jax.grad(loss_unrolled))(copies)
    for i in range(cfg.num_layers):
        uses = [u for u, b in enumerate(order) if b == i]
        assert len(uses) == (3 if looping and 2 <= i <= 3 else 1)
        summed = jax.tree.map(lambda *g: sum(g), *[g_copies[u] for u in uses])
        for a, b in zip(jax.tree.leaves(g_shared[f"blocks_{i}"]), jax.tree.leaves(summed)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=1e-6)


def test_parallel_residual_equals_the_formula():
    cfg = tiny_cfg()
    layer = 4
    block = Block(cfg, layer, use_xsa=True, parallel=True)
    rng = np.random.default_rng(0)
    x, x0 = (jnp.asarray(rng.standard_normal((2, 7, 32)), jnp.float32) for _ in range(2))
    p = block.init(jax.random.PRNGKey(0), x, x0, None)["params"]
    p = jax.tree.map(lambda a: a + 0.1 * jnp.asarray(rng.standard_normal(a.shape), jnp.float32), p)
    out = block.apply({"params": p}, x, x0, None)
    x_in = p["resid_mix"][0] * x + p["resid_mix"][1] * x0
    h = layers.rms_norm(x_in) / np.sqrt(layer + 1)
    attn = Attention(cfg, True).apply({"params": p["attn"]}, h, None)
    mlp = MLP(cfg).apply({"params": p["mlp"]}, h)
    np.testing.assert_allclose(np.asarray(out), np.asarray(x_in + p["attn_scale"] * attn + p["mlp_scale"] * mlp),
                               rtol=1e-6, atol=1e-6)
    sequential = Block(cfg, layer, use_xsa=True, parallel=False).apply({"params": p}, x, x0, None)
    assert not np.allclose(np.asarray(out), np.asarray(sequential))


def test_recurrent_model_is_causal():
    cfg = tiny_cfg()
    model = model_lib.build_model(cfg)
    params = noisy_params(model)
    tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 12), 0, cfg.vocab_size)
    changed = tokens.at[:, 7:].set((tokens[:, 7:] + 5) % cfg.vocab_size)
    fwd = jax.jit(model.apply)
    a, b = (np.asarray(fwd({"params": params}, t)) for t in (tokens, changed))
    np.testing.assert_array_equal(a[:, :7], b[:, :7])
    assert not np.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("key,value,match", [
    ("bigram_dim", 64, "model.bigram_dim=64 has no effect.*bigram_vocab_size > 0"),
    ("loop_start", 1, "model.loop_start=1 has no effect.*num_loops > 0"),
    ("mlp_activation", "gelu", "model.mlp_activation='gelu': use one of"),
    ("parallel_residual_start", 11, "model.parallel_residual_start=11"),
])
def test_model_config_rejects_unused_and_out_of_range_keys(key, value, match):
    cfg = baseline.get_config().model if key in ("bigram_dim", "loop_start") else sp8192_legal.get_config().model
    cfg[key] = value
    with pytest.raises(ValueError, match=match):
        model_lib.build_model(cfg)


def test_loop_range_is_checked():
    cfg = tiny_cfg()
    cfg.loop_end = 6
    with pytest.raises(ValueError, match="loop_start <= loop_end < 6"):
        model_lib.check_config(cfg)


@pytest.mark.parametrize("looping", [False, True])
def test_logits_match_the_upstream_code(looping):
    """tests/fixtures/sp8192_logits.npz: #1758's forward_logits (loop off and on) on this tiny model, fp32."""
    with np.load(FIXTURES / "sp8192_logits.npz") as f:
        fx = {k: f[k] for k in f.files}
    names = [str(n) for n in fx["large_names"]]
    shapes = [tuple(int(d) for d in str(s).split(",")) for s in fx["large_shapes"]]
    sd = {**{k[2:]: v for k, v in fx.items() if k.startswith("w/")},
          **make_sp8192_logits.weights(names, shapes, make_sp8192_logits.SEED)}
    params = jax.tree.map(jnp.asarray, reference.params_from_reference(sd))
    model = model_lib.build_model(tiny_cfg()).clone(looping=looping)
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(make_sp8192_logits.inputs(), jnp.int32)))
    want = fx[f"logits_loop{int(looping)}"]
    assert np.max(np.abs(ours - want)) <= 2e-5 * np.max(np.abs(want)), np.max(np.abs(ours - want))
