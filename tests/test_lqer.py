"""The #1855 quantization additions on a synthetic params dict (no model, no device):
LQER low-rank corrections, per-role SDClip k, int7 GPTQ embeddings, the int8 gate.

Numerics are checked against independent float64 numpy transcriptions of the reference
(`_lqer_pack_asym`, `_lqer_pack`, `_quantize_gate_int8_row`, its top-k ranking)."""

from __future__ import annotations

import numpy as np
import pytest

from golf_jax.config import base_config
from golf_jax.quant import container, export, gptq, lowrank, lqer, prune

SMALL = 1024  # tiny matrices: lower the fp16 passthrough bound so that they are quantized
D, V, H, F = 64, 128, 4, 256


@pytest.fixture(autouse=True)
def small_passthrough(monkeypatch):
    monkeypatch.setattr(export, "PASSTHROUGH_MAX_NUMEL", SMALL)
    with gptq.blas_threads(1):  # the reference SVDs below: threaded LAPACK crawls on a busy 2-core CPU
        yield


def _params(seed: int = 0) -> tuple[dict, dict]:
    """(params, labels) pytrees shaped like a 2-layer GPT with a sparse attention gate."""
    rng = np.random.default_rng(seed)

    def t(*shape, std=0.1):
        return (std * rng.standard_t(5, shape)).astype(np.float32)

    params, labels = {"tok_emb": {"embedding": t(V, D, std=0.05)}}, {"tok_emb": {"embedding": "embed"}}
    for i in range(2):
        attn = {n: {"kernel": t(D, o)} for n, o in (("c_q", D), ("c_k", D // 2), ("c_v", D // 2), ("proj", D))}
        attn["attn_gate_w"] = t(H, 12, std=0.3)
        mlp = {"fc": {"kernel": t(D, F)}, "proj": {"kernel": t(F, D)}}
        params[f"blocks_{i}"] = {"attn": attn, "mlp": mlp, "attn_scale": np.ones(D, np.float32)}
        labels[f"blocks_{i}"] = {"attn": {n: {"kernel": "muon"} for n in ("c_q", "c_k", "c_v", "proj")}
                                 | {"attn_gate_w": "scalar"},
                                 "mlp": {"fc": {"kernel": "muon"}, "proj": {"kernel": "muon"}},
                                 "attn_scale": "scalar"}
    return params, labels


def _hessians(arrays: dict[str, np.ndarray], seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for n, a in arrays.items():
        if a.ndim == 2 and a.size > SMALL and not export.is_gate(n):
            X = rng.standard_normal((4 * a.shape[1], a.shape[1])).astype(np.float32)
            X[:, : a.shape[1] // 4] *= 3.0  # a few strong input directions
            out[n] = X.T @ X / np.float32(X.shape[0])
    return out


def _ex(**kw):
    c = base_config()
    c.export.format = "gptq_int6"
    for k, v in kw.items():
        setattr(c.export, k, v)
    return c


def _setup(**kw):
    cfg = _ex(**kw)
    params, labels = _params()
    arrays = export.named_arrays(params)
    return cfg, params, labels, arrays, _hessians(arrays)


class _Calib:  # what export_artifact reads of a hessian.Calibration
    def __init__(self, hessians):
        self.hessians, self.source, self.on_val, self.num_seqs, self.seq_len, self.seconds = \
            hessians, "train", False, 1, 8, 0.0


# ---------------------------------------------------------------- packing


def test_pack_bits_round_trip_and_layout():
    for width in (2, 4, 8):
        lo, hi = lowrank.signed_range(width)
        v = np.tile(np.arange(lo, hi + 1, dtype=np.int8), 3)[:-1]  # odd count: padding
        buf = lowrank.pack_bits(v, width)
        assert len(buf) == lowrank.packed_nbytes(v.size, width) == -(-v.size * width // 8)
        np.testing.assert_array_equal(lowrank.unpack_bits(buf, width, v.size), v)
    # value k of a byte in bits w*k .. w*k+w-1, two's complement
    assert lowrank.pack_bits(np.array([1, -2, 0, -1]), 2) == bytes([0b11_00_10_01])
    assert lowrank.pack_bits(np.array([7, -8, -1]), 4) == bytes([0x87, 0x0F])
    with pytest.raises(ValueError, match="4-bit values must lie in"):
        lowrank.pack_bits(np.array([8]), 4)


def _ref_asym(A, B, g):
    """Float64 transcription of the reference's _lqer_pack_asym."""
    sA = np.float16(max(np.abs(A).max(), 1e-10) / 1.5)
    qA = np.clip(np.rint(A / np.float64(sA)), -2, 1)
    Bf = B.reshape(-1, g).astype(np.float64)
    sB = (np.maximum(np.abs(Bf).max(1), 1e-10) / 7.5).astype(np.float16)
    qB = np.clip(np.rint(Bf / sB.astype(np.float64)[:, None]), -8, 7).reshape(B.shape)
    return qA, sA, qB, sB


def _ref_sym(X, bits):
    rng_ = 2 ** (bits - 1) - 1
    s = (np.maximum(np.abs(X).max(1), 1e-10) / rng_).astype(np.float16)
    return np.clip(np.rint(X / s.astype(np.float64)[:, None]), -rng_, rng_), s


def test_factor_packing_matches_the_reference():
    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((96, 4)).astype(np.float32), rng.standard_normal((4, 80)).astype(np.float32)
    a, b, mode = lqer.pack_factors(A, B, bits=4, group=64)
    qA, sA, qB, sB = _ref_asym(A.astype(np.float64), B.astype(np.float64), 64)
    assert mode == "asym" and a.bits == 2 and b.bits == 4 and a.group == A.size and b.group == 64
    np.testing.assert_array_equal(a.q, qA)
    np.testing.assert_array_equal(a.scale, [sA])
    np.testing.assert_array_equal(b.q, qB)
    np.testing.assert_array_equal(b.scale, sB)
    want_b = (qB.reshape(-1, 64) * sB.astype(np.float32)[:, None]).reshape(B.shape)
    np.testing.assert_array_equal(b.dequantize(), want_b)
    for group in (0, 48):  # off, or B's 320 values do not split into groups of 48: symmetric per row
        a, b, mode = lqer.pack_factors(A, B, bits=4, group=group)
        assert mode == "sym" and a.group == 4 and b.group == 80
        for f, X in ((a, A), (b, B)):
            q, s = _ref_sym(X.astype(np.float64), 4)
            np.testing.assert_array_equal(f.q, q)
            np.testing.assert_array_equal(f.scale, s)


# ---------------------------------------------------------------- LQER


def test_top_k_matches_an_independent_ranking():
    cfg, _, labels, arrays, _ = _setup(format="rtn_int6", lqer_rank=4, lqer_top_k=3)
    tensors, stats = export.quantize_int6(arrays, export.flat_labels(labels), cfg.export, None)
    norms = {}
    for n, t in tensors.items():
        if t.kind in container.QUANT_KINDS and not export.is_gate(n):
            E = arrays[n].astype(np.float64) - t.data * t.scale.astype(np.float64)[:, None]
            norms[n] = np.sqrt(np.sum(E * E))
    want = sorted(norms, key=lambda n: -norms[n])[:3]
    assert list(stats["lqer"]) == want
    assert {n for n, t in tensors.items() if t.lqer is not None} == set(want)
    assert lqer.top_k({"a": np.ones((2, 2)), "b": np.ones((2, 2)), "c": 2 * np.ones((2, 2))}, 2) == ["c", "a"]


def _dequant64(t: container.QuantTensor) -> np.ndarray:
    W = t.data.astype(np.float64) * t.scale.astype(np.float64)[:, None]
    if t.lqer is not None:
        a, b = t.lqer
        A = (a.q.reshape(-1, a.group) * a.scale.astype(np.float64)[:, None]).reshape(a.q.shape)
        B = (b.q.reshape(-1, b.group) * b.scale.astype(np.float64)[:, None]).reshape(b.q.shape)
        W = W + A @ B
    return W


def test_lqer_lowers_the_error_and_round_trips_bit_exactly(tmp_path):
    cfg, params, labels, arrays, hs = _setup(lqer_rank=4, lqer_top_k=3)
    info = export.export_artifact(params, labels, cfg, tmp_path, 0, calib=_Calib(hs))
    stored = container.deserialize(info.path.read_bytes())
    intended, stats = export.quantize_int6(arrays, export.flat_labels(labels), cfg.export, hs)
    assert info.report["lqer"] == stats["lqer"] and len(stats["lqer"]) == 3
    for name, rep in stats["lqer"].items():
        t = stored[name]
        a, b = t.lqer
        assert rep["mode"] == "asym" and a.q.shape == (t.shape[0], 4) and b.q.shape == (4, t.shape[1])
        W = arrays[name].astype(np.float64)
        E = W - t.data * t.scale.astype(np.float64)[:, None]
        plain, corrected = np.linalg.norm(E), np.linalg.norm(W - _dequant64(t))
        best = np.sum(np.linalg.svd(E, compute_uv=False)[:4] ** 2)  # what an unquantized rank-4 SVD removes
        # int2 A with one scale keeps mostly the leading direction (A = U·S): 35-70% of the optimum here
        assert plain**2 - corrected**2 > 0.25 * best, (name, corrected, plain, best)
        assert rep["err_lqer"] < rep["err"]
    sym, sstats = export.quantize_int6(arrays, export.flat_labels(labels), _ex(lqer_rank=4, lqer_group=0).export, hs)
    for name, rep in sstats["lqer"].items():  # symmetric int4 rows keep ~98% of it
        W = arrays[name].astype(np.float64)
        E = W - sym[name].data * sym[name].scale.astype(np.float64)[:, None]
        best = np.sum(np.linalg.svd(E, compute_uv=False)[:4] ** 2)
        gain = np.linalg.norm(E) ** 2 - np.linalg.norm(W - _dequant64(sym[name])) ** 2
        assert rep["mode"] == "sym" and gain > 0.9 * best, (name, gain, best)
    # artifact -> tensors -> weights equals the in-memory dequantization, bit for bit
    got, want = container.dequantize_all(stored), container.dequantize_all(intended)
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        if intended[name].lqer is not None:  # and the fp32 sum agrees with a float64 reference
            np.testing.assert_allclose(got[name], _dequant64(intended[name]), rtol=0, atol=1e-6)
    loaded = export.load_artifact(info.path, params)
    np.testing.assert_array_equal(loaded["blocks_1"]["mlp"]["fc"]["kernel"], want["blocks_1/mlp/fc/kernel"].T)
    # pruning keeps the corrections
    names, tid, flat = prune.prune_candidates(stored)
    pruned = prune.apply_pruning(stored, names, tid, flat, 10)
    assert all(pruned[n].lqer is stored[n].lqer for n in stats["lqer"])


def test_container_versions_and_config_errors():
    cfg, _, labels, arrays, _ = _setup(format="rtn_int6")
    tensors, stats = export.quantize_int6(arrays, export.flat_labels(labels), cfg.export, None)
    assert "lqer" not in stats and all(t.lqer is None for t in tensors.values())
    assert container.read_header(container.pack(tensors))[0]["version"] == 1  # as before: no LQER, version 1
    with_lqer, _ = export.quantize_int6(arrays, export.flat_labels(labels), _ex(format="rtn_int6", lqer_rank=2).export,
                                        None)
    for storage in ("int8", "packed6"):
        raw = container.pack(with_lqer, storage)
        assert container.read_header(raw)[0]["version"] == 2
        got = container.unpack(raw)
        for n, t in with_lqer.items():
            for fg, fw in zip(got[n].lqer or (), t.lqer or ()):
                assert (fg.bits, fg.group) == (fw.bits, fw.group)
                np.testing.assert_array_equal(fg.q, fw.q)
                np.testing.assert_array_equal(fg.scale, fw.scale)
    name = next(n for n, t in with_lqer.items() if t.lqer is not None)
    a, b = with_lqer[name].lqer
    with_lqer[name].lqer = (a, lowrank.Factor(b.q[:, :-1], b.scale, b.group, b.bits))
    with pytest.raises(ValueError, match="a low-rank correction needs A"):
        container.pack(with_lqer)
    for kw, msg in [(dict(lqer_rank=-1), "export.lqer_rank=-1"),
                    (dict(lqer_rank=4, format="int8_zlib"), "export.lqer_rank=4 needs export.format"),
                    (dict(lqer_rank=4, lqer_bits=9), "export.lqer_bits=9"),
                    (dict(lqer_rank=4, lqer_top_k=0), "export.lqer_top_k=0")]:
        with pytest.raises(ValueError, match=msg):
            export.check_config(_ex(**kw).export)


# ---------------------------------------------------------------- SDClip per role, int7 embedding, gate


def test_sdclip_k_per_role():
    ex = _ex(gptq_clip="sdclip", sdclip_k=12.85, sdclip_k_mlp=11.5, sdclip_k_attn=13.0).export
    assert export.sdclip_k_for("blocks_3/mlp/fc/kernel", ex) == 11.5
    assert export.sdclip_k_for("blocks_3/mlp/proj/kernel", ex) == 11.5
    assert export.sdclip_k_for("blocks_0/attn/c_k/kernel", ex) == 13.0
    assert export.sdclip_k_for("bigram/proj/kernel", ex) == 12.85
    assert export.sdclip_k_for("blocks_0/mlp/fc/kernel", _ex(gptq_clip="sdclip").export) == 12.85
    cfg, _, labels, arrays, _ = _setup(format="rtn_int6", gptq_clip="sdclip", sdclip_k_mlp=11.5, sdclip_k_attn=13.0)
    tensors, _ = export.quantize_int6(arrays, export.flat_labels(labels), cfg.export, None)
    for name, k in (("blocks_0/mlp/fc/kernel", 11.5), ("blocks_1/mlp/proj/kernel", 11.5),
                    ("blocks_0/attn/c_q/kernel", 13.0), ("blocks_1/attn/proj/kernel", 13.0)):
        W = arrays[name].astype(np.float64)
        np.testing.assert_allclose(tensors[name].scale, k * W.std(axis=1, ddof=1) / 31, rtol=1e-3, err_msg=name)
    with pytest.raises(ValueError, match="export.sdclip_k_mlp=11.5 needs export.gptq_clip='sdclip'"):
        export.check_config(_ex(sdclip_k_mlp=11.5).export)


def test_int7_gptq_embedding(tmp_path):
    cfg, params, labels, arrays, hs = _setup(embed_bits=7, embed_quant="gptq", gptq_clip="sdclip",
                                             embed_sdclip_k=14.0, gptq_damp=0.01)
    hs[export.TIED_EMBED] = _hessians({"x": arrays[export.TIED_EMBED]}, seed=5)["x"]
    info = export.export_artifact(params, labels, cfg, tmp_path, 0, calib=_Calib(hs))
    t = container.deserialize(info.path.read_bytes())[export.TIED_EMBED]
    want = gptq.gptq_quantize(arrays[export.TIED_EMBED], hs[export.TIED_EMBED],
                              gptq.GPTQSettings(clip_range=63, clip="sdclip", sdclip_k=14.0, damp=0.01))
    assert t.kind == "int7" and np.abs(t.data).max() <= 63
    np.testing.assert_array_equal(t.data, want.q)
    np.testing.assert_array_equal(t.scale, want.scale)
    loaded = export.load_artifact(info.path, params)
    np.testing.assert_array_equal(loaded["tok_emb"]["embedding"], t.data * t.scale.astype(np.float32)[:, None])


def test_gate_int8_rows(tmp_path):
    cfg, params, labels, arrays, hs = _setup(gate_int8=True)
    gate = "blocks_0/attn/attn_gate_w"
    params["blocks_0"]["attn"]["attn_gate_w"][2] = 0.0  # an all-zero row (the gate's zero init)
    arrays = export.named_arrays(params)
    tensors, stats = export.quantize_int6(arrays, export.flat_labels(labels), cfg.export, hs)
    assert stats["gate_int8"] == 2
    t, W = tensors[gate], arrays[gate].astype(np.float64)
    s = (np.maximum(np.abs(W).max(1), 1e-10) / 127).astype(np.float16)  # the reference's rule
    s[s == 0] = np.float16(2.0**-24)  # ours: an underflowing scale is the smallest fp16, not 0
    assert t.kind == "int8" and t.shape == (H, 12)
    np.testing.assert_array_equal(t.scale, s)
    np.testing.assert_array_equal(t.data, np.clip(np.rint(W / s.astype(np.float64)[:, None]), -127, 127))
    assert not t.data[2].any()
    info = export.export_artifact(params, labels, cfg, tmp_path, 0, calib=_Calib(hs))
    loaded = export.load_artifact(info.path, params)
    want = t.data * t.scale.astype(np.float32)[:, None]
    np.testing.assert_array_equal(loaded["blocks_0"]["attn"]["attn_gate_w"], want)
    off, _ = export.quantize_int6(arrays, export.flat_labels(labels), _ex().export, hs)
    assert off[gate].kind == "fp16"  # the default: fp16 passthrough as before
    with pytest.raises(ValueError, match="export.gate_int8=True needs export.format"):
        export.check_config(_ex(gate_int8=True, format="int8_zlib").export)
    with pytest.raises(ValueError, match="export.gate_int8=True, but the model has no"):
        export.quantize_int6({n: a for n, a in arrays.items() if not export.is_gate(n)},
                             export.flat_labels(labels), cfg.export, hs)
    arrays[gate] = arrays[gate].reshape(-1)
    with pytest.raises(ValueError, match="export.gate_int8: blocks_0/attn/attn_gate_w has shape"):
        export.quantize_int6(arrays, export.flat_labels(labels), cfg.export, hs)
