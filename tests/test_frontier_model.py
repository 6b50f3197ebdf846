"""The #1855 frontier features of the one GPT: parameter count, the two-lane decoder,
the sparse attention gate, the BOS-masked window SmearGate, document isolation through
segment ids, and the LoRA hooks of phased TTT."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import frontier
from golf_jax import model as model_lib
from golf_jax.model import gpt, layers, reference
from golf_jax.model.blocks import MLP, Attention, Block
from golf_jax.model.embeddings import WindowSmearGate

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import make_frontier_logits  # noqa: E402


def tiny_cfg():
    """The frontier stack at 6 layers × 32: layers 2–3 loop, lanes from layer 4."""
    m = frontier.get_config().model
    m.vocab_size, m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = 48, 6, 32, 4, 2
    m.rope_dims, m.loop_start, m.loop_end, m.parallel_residual_start, m.xsa_last_n = 4, 2, 3, 4, 6
    m.gate_window, m.compute_dtype, m.attention_impl = 6, "float32", "xla"
    return m


def noisy(tree, seed, std=0.1):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(treedef, [x + std * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def test_full_size_param_count():
    model = model_lib.build_model(frontier.get_config().model)
    shapes = jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, 8), jnp.int32)), jax.random.PRNGKey(0))
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == 35_945_671  # #1855 log: model_params


def test_two_lane_block_and_sparse_gate_equal_their_formulas():
    cfg = tiny_cfg()
    rng = np.random.default_rng(0)
    x, lane1, x0 = (jnp.asarray(rng.standard_normal((2, 7, 32)), jnp.float32) for _ in range(3))
    resid, post = jnp.asarray([1.1, 0.9]), jnp.asarray([[1.0, 0.3], [0.7, 1.2]])
    block = Block(cfg, 4, use_xsa=True)
    p = noisy(block.init(jax.random.PRNGKey(0), x, x0, None)["params"], 1)
    lane0_out, lane1_out = block.apply({"params": p}, x, x0, None, lane1=lane1, lane_resid=resid, lane_post=post)
    s = 1 / np.sqrt(5)
    h = layers.rms_norm(p["resid_mix"][0] * x + p["resid_mix"][1] * x0) * s
    # the sparse gate by hand: the attention without it, times σ(0.5 · W h[:6]) per head
    ungated = cfg.copy_and_resolve_references()
    ungated.attn_gate = "off"
    attn_p = {k: v for k, v in p["attn"].items() if k != "attn_gate_w"}
    y_proj = Attention(ungated, True).apply({"params": {**attn_p, "proj": {"kernel": jnp.eye(32)}}}, h, None)
    g = jax.nn.sigmoid(0.5 * h[..., :6] @ p["attn"]["attn_gate_w"].T)
    gated = (y_proj.reshape(2, 7, 4, 8) * g[..., None]).reshape(2, 7, 32)
    attn = Attention(cfg, True).apply({"params": p["attn"]}, h, None)
    np.testing.assert_allclose(np.asarray(attn), np.asarray(gated @ p["attn"]["proj"]["kernel"]), rtol=1e-5, atol=1e-5)
    a = p["attn_scale"] * attn
    m = p["mlp_scale"] * MLP(cfg).apply({"params": p["mlp"]}, layers.rms_norm(lane1) * s)
    np.testing.assert_allclose(np.asarray(lane0_out), np.asarray(1.1 * x + 1.0 * a + 0.7 * m), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(lane1_out), np.asarray(0.9 * lane1 + 0.3 * a + 1.2 * m), rtol=1e-5, atol=1e-5)


def test_window_smear_gate_formula_and_bos_mask():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((1, 5, 8)), jnp.float32)
    tokens = jnp.asarray([[1, 7, 9, 1, 4]])  # a BOS at position 3 starts a new document
    smear = WindowSmearGate(3)
    p = {"gate": jnp.asarray([0.5, -1.0, 2.0]), "lam": jnp.asarray(0.7)}
    out = np.asarray(smear.apply({"params": p}, x, tokens))
    xs = np.asarray(x, np.float64)
    want = xs.copy()
    for t in (1, 2, 4):  # not position 0, not the BOS at 3
        g = 0.7 / (1 + np.exp(-(xs[0, t, :3] @ np.asarray([0.5, -1.0, 2.0]))))
        want[0, t] = xs[0, t] + g * xs[0, t - 1]
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)


def test_packed_documents_score_as_if_alone():
    cfg = tiny_cfg()
    model = model_lib.build_model(cfg)
    params = noisy(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16), jnp.int32))["params"], 2, 0.05)
    doc_a = np.asarray([1, 5, 9, 3, 22, 7, 30], np.int32)
    doc_b = np.asarray([1, 11, 4, 4, 17, 40, 2, 8, 19], np.int32)
    packed = np.concatenate([doc_a, doc_b])[None]
    seg = np.cumsum(packed == 1, axis=1)
    fwd = jax.jit(lambda t, s: model.apply({"params": params}, t, segment_ids_BxT=s))
    both = np.asarray(fwd(packed, seg))
    alone_a = np.asarray(jax.jit(model.apply)({"params": params}, doc_a[None]))
    alone_b = np.asarray(jax.jit(model.apply)({"params": params}, doc_b[None]))
    np.testing.assert_allclose(both[:, : len(doc_a)], alone_a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(both[:, len(doc_a):], alone_b, rtol=1e-5, atol=1e-5)
    # model.doc_isolation takes the segments from the tokens (a new one at every BOS) ...
    np.testing.assert_allclose(np.asarray(jax.jit(model.apply)({"params": params}, packed)), both, rtol=1e-5, atol=1e-5)
    # ... and without it doc b sees doc a.
    cfg.doc_isolation = False
    mixed = np.asarray(jax.jit(model_lib.build_model(cfg).apply)({"params": params}, packed))
    assert not np.allclose(mixed[:, len(doc_a):], alone_b, atol=1e-3)


def test_lora_hooks():
    cfg = tiny_cfg()
    model = model_lib.build_model(cfg)
    params = noisy(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16), jnp.int32))["params"], 3, 0.05)
    S, r, D, KH, V = gpt.lora_slots(cfg), 2, 32, 16, 48
    assert S == 10  # [0,1,2,3,2,3,2,3,4,5]
    rng = np.random.default_rng(2)
    shapes = {"q": (D, D), "k": (KH, D), "v": (KH, D), "o": (D, D), "mlp": (D, D)}
    B = 2  # rows (documents), each with its own adapters
    lora = {f"{n}_A": jnp.asarray(rng.standard_normal((B, S, r, i)), jnp.float32) for n, (o, i) in shapes.items()}
    lora.update({f"{n}_B": jnp.zeros((B, S, o, r)) for n, (o, i) in shapes.items()})
    lora.update(head_A=jnp.asarray(rng.standard_normal((B, r, D)), jnp.float32), head_B=jnp.zeros((B, V, r)),
                scale=jnp.asarray(72.0))
    tokens = jnp.asarray(rng.integers(0, V, (B, 9)), jnp.int32)
    fwd = jax.jit(lambda lo: model.apply({"params": params}, tokens, lora=lo))
    base = np.asarray(jax.jit(model.apply)({"params": params}, tokens))
    # B = 0: the model unchanged (another compiled graph: fp32 roundoff only)
    np.testing.assert_allclose(np.asarray(fwd(lora)), base, rtol=1e-5, atol=1e-5)
    head_b = jnp.asarray(rng.standard_normal((B, V, r)) * 1e-3, jnp.float32)
    h = np.asarray(model.apply({"params": params}, tokens, method=model.hidden), np.float64)
    emb, head_a = np.asarray(params["tok_emb"]["embedding"], np.float64), np.asarray(lora["head_A"], np.float64)
    raw = np.stack([h[b] @ emb.T + 72.0 * (h[b] @ head_a[b].T) @ np.asarray(head_b[b], np.float64).T
                    for b in range(B)])  # row b with its own adapter, in float64
    np.testing.assert_allclose(np.asarray(fwd({**lora, "head_B": head_b})), 30.0 * np.tanh(raw / 30.0),
                               rtol=1e-5, atol=1e-5)
    for name in shapes:  # every adapter reaches the logits, of its own row only
        b = lora[f"{name}_B"].at[1, 1].set(jnp.asarray(rng.standard_normal(lora[f"{name}_B"].shape[2:]), jnp.float32))
        got = np.asarray(fwd({**lora, f"{name}_B": b}))
        assert not np.allclose(got[1], base[1], atol=1e-4), name
        np.testing.assert_allclose(got[0], base[0], rtol=1e-5, atol=1e-5)


def test_rope_is_never_rescaled():
    """#1855 runs with ROPE_YARN=0: its RoPE base is the same at every length. The frontier config's
    logits at T=128 equal those of a model whose rescale starts only above 128, and differ from one
    that rescales above 64 (the config it inherited rescaled above 2,048)."""
    cfg = tiny_cfg()
    assert cfg.rope_train_seq_len == 0
    x = jnp.asarray(np.random.default_rng(1).integers(0, 48, (1, 128)), jnp.int32)
    model = model_lib.build_model(cfg)
    params = noisy(model.init(jax.random.PRNGKey(0), x)["params"], 2)

    def logits(train_len):
        c = cfg.copy_and_resolve_references()
        c.rope_train_seq_len = train_len
        return np.asarray(model_lib.build_model(c).apply({"params": params}, x))

    ours = np.asarray(model.apply({"params": params}, x))
    np.testing.assert_array_equal(ours, logits(128))
    assert np.max(np.abs(ours - logits(64))) > 1e-2 * np.max(np.abs(ours))


@pytest.fixture(scope="module")
def upstream():
    """tests/fixtures/frontier_logits.npz: #1855's forward_logits on the tiny frontier (tests/fixtures/README.md)."""
    with np.load(FIXTURES / "frontier_logits.npz") as f:
        fx = {k: f[k] for k in f.files}
    names = [str(n) for n in fx["large_names"]]
    shapes = [tuple(int(d) for d in str(s).split(",")) for s in fx["large_shapes"]]
    sd = {**{k[2:]: v for k, v in fx.items() if k.startswith("w/")}, **make_frontier_logits.weights(names, shapes)}
    return fx, jax.tree.map(jnp.asarray, reference.params_from_reference(sd))


@pytest.mark.parametrize("case", ["logits_loop0", "logits_loop1", "logits_docs"])
def test_logits_match_the_upstream_code(upstream, case):
    """Loop off and on, and packed documents (BOS-cut varlen attention, the BOS-masked smear): fp32."""
    fx, params = upstream
    x, docs = make_frontier_logits.inputs()
    model = model_lib.build_model(tiny_cfg()).clone(looping=case != "logits_loop0")
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(docs if case == "logits_docs" else x, jnp.int32)))
    want = fx[case]
    assert np.max(np.abs(ours - want)) <= 2e-5 * np.max(np.abs(want)), np.max(np.abs(ours - want))


def test_lora_forward_matches_the_upstream_code(upstream):
    """#1855's forward_ttt (loop on): per-row adapters on q, k, v, o, mlp and the head, each row its own;
    the per-token NLL of our batched LoRA forward (golf_jax/eval/phased/lora.py) agrees in fp32."""
    from golf_jax.eval.phased import lora as lora_lib

    fx, params = upstream
    shapes = {k: tuple(int(d) for d in v.split(",")) for k, v in (str(e).split(":") for e in fx["lora_shapes"])}
    adapters = jax.tree.map(jnp.asarray, make_frontier_logits.lora_weights(shapes))
    x, _ = make_frontier_logits.inputs()
    rows = np.concatenate([x, make_frontier_logits.inputs(make_frontier_logits.SEED + 7)[0]])
    targets = np.roll(rows, -1, axis=1)
    model = model_lib.build_model(tiny_cfg())
    scale = make_frontier_logits.ENV["TTT_LORA_ALPHA"] / make_frontier_logits.LORA_RANK
    pos = jnp.broadcast_to(jnp.arange(rows.shape[1]), rows.shape)
    logits = lora_lib.forward(model, params, adapters, jnp.float32(scale), jnp.asarray(rows, jnp.int32), pos)
    nll = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits, axis=-1)), targets[..., None], axis=-1)[..., 0]
    want = fx["lora_nll"]
    assert np.max(np.abs(nll - want)) <= 2e-5 * np.max(np.abs(want)), np.max(np.abs(nll - want))
