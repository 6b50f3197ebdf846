"""gptq_int6 / rtn_int6 export: classification, bit-exact round trip, GPTQ vs RTN, budget."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import traverse_util

from golf_jax.submission import codebytes
from golf_jax import model as model_lib
from golf_jax.config import base_config
from golf_jax.data import prepare
from golf_jax.quant import compress, container, export, gptq, hessian, rowquant
from golf_jax.quant.prune import ArtifactBudgetError
from golf_jax.core import mesh as mesh_lib

V, D, T = 128, 64, 32
SMALL = 1024  # a tiny model: lower the fp16 passthrough bound so its block kernels are "large"


def _cfg(**export_kw):
    c = base_config()
    m = c.model
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = 2, D, 4, 2
    m.vocab_size, m.compute_dtype = V, "float32"
    c.train.seq_len = T
    c.export.format = "gptq_int6"
    c.export.calib_seqs = 12
    for k, v in export_kw.items():
        setattr(c.export, k, v)
    return c


@pytest.fixture(scope="module")
def trained():
    """Params with trained-like spread (std-0.1 kernels and a std-0.06 tied table, heavy-ish
    tails) and real Hessians, the tied table's (the LM head's input) included."""
    cfg = _cfg()
    model = model_lib.build_model(cfg.model)
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, T), np.int32))["params"]
    rng = np.random.default_rng(0)

    def perturb(path, a):
        if path[-1].key == "kernel":
            return (0.1 * rng.standard_t(5, a.shape)).astype(np.float32)
        if path[-1].key == "embedding" and path[0].key == "tok_emb":
            return (0.05 * rng.standard_t(5, a.shape)).astype(np.float32)
        return a

    params = jax.device_get(jax.tree_util.tree_map_with_path(perturb, params))
    val = (np.arange(4000) * 7919 % V).astype(np.uint16)
    seqs = val[: 12 * T].astype(np.int32).reshape(12, T)
    hs = hessian.collect_hessians(model, params, seqs, mesh_lib.make_mesh(), tied_embed=True)
    calib = hessian.Calibration(hs, "train", 12, T, 0.0)
    return cfg, model, params, val, calib


@pytest.fixture(autouse=True)
def small_passthrough(monkeypatch):
    monkeypatch.setattr(export, "PASSTHROUGH_MAX_NUMEL", SMALL)


def _labels(cfg, params):
    return export.flat_labels(_tree_labels(cfg, params))


def _tree_labels(cfg, params):
    return model_lib.param_labels(cfg.model, params, cfg.compat)


def _export(params, cfg, out, calib=None):
    return export.export_artifact(params, _tree_labels(cfg, params), cfg, out, codebytes.code_bytes(), calib=calib)


def test_classification_and_bit_exact_round_trip(trained, tmp_path):
    cfg, _, params, _, calib = trained
    info = _export(params, cfg, tmp_path, calib=calib)
    assert info.report["pruned"] == 0 and info.report["compressor"] == "lzma"
    assert info.code_bytes == codebytes.code_bytes() and info.total_bytes <= cfg.export.budget_bytes
    stored = container.deserialize(info.path.read_bytes())
    for name, t in stored.items():
        if name.startswith("blocks_") and name.endswith("/kernel"):
            assert t.kind == "int6", name
        elif name == "tok_emb/embedding":
            assert t.kind == "int8"
        else:
            assert t.kind == "fp16" and t.data.size <= SMALL, name
    assert sum(t.kind == "int6" for t in stored.values()) == 12

    arrays = {n: a for n, a in export.named_arrays(params).items()}
    intended, _ = export.quantize_int6(arrays, _labels(cfg, params), cfg.export, calib.hessians)
    loaded = export.load_artifact(info.path, params)
    flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(loaded).items()}
    for name, t in intended.items():
        if t.kind in ("int6", "int8"):
            want = t.data.astype(np.float32) * t.scale.astype(np.float32)[:, None]
            if name.endswith("kernel"):
                want = want.T
        else:
            want = t.data.astype(np.float32)
        assert flat[name].dtype == np.float32
        np.testing.assert_array_equal(flat[name], want, err_msg=name)


def test_gptq_beats_rtn_on_hessian_weighted_error(trained):
    cfg, _, params, _, calib = trained
    arrays, labels = export.named_arrays(params), _labels(cfg, params)
    g, _ = export.quantize_int6(arrays, labels, cfg.export, calib.hessians)
    r, _ = export.quantize_int6(arrays, labels, cfg.export, None)
    err_g = err_r = 0.0
    wins = 0
    for name, t in g.items():
        if t.kind != "int6":
            continue
        W, H = arrays[name].astype(np.float64), calib.hessians[name].astype(np.float64)

        def werr(q):
            E = W - q[name].data * q[name].scale.astype(np.float64)[:, None]
            return float(np.einsum("ri,ij,rj->", E, H, E))

        eg, er = werr(g), werr(r)
        err_g, err_r, wins = err_g + eg, err_r + er, wins + (eg < er)
    assert err_g < 0.9 * err_r and wins == 12, (err_g, err_r, wins)


def test_pruning_and_budget_overflow(trained, tmp_path):
    cfg, _, params, _, calib = trained
    full = _export(params, cfg, tmp_path, calib=calib)
    cfg.export.budget_bytes = full.total_bytes - 40
    pruned = _export(params, cfg, tmp_path, calib=calib)
    assert pruned.report["pruned"] > 0 and pruned.total_bytes <= cfg.export.budget_bytes
    cfg.export.budget_bytes = full.code_bytes + 1000
    with pytest.raises(ArtifactBudgetError, match="does not fit"):
        _export(params, cfg, tmp_path, calib=calib)
    assert (tmp_path / "model.golfjax").exists()  # the unpruned blob is kept


def test_missing_hessian_is_a_clear_error(trained, tmp_path):
    cfg, _, params, _, calib = trained
    partial = hessian.Calibration({k: v for k, v in calib.hessians.items() if "c_q" not in k}, "train", 1, T, 0.0)
    with pytest.raises(ValueError, match="no Hessian for 2 Muon matrices"):
        _export(params, cfg, tmp_path, calib=partial)


def test_calibration_source_flags_val(trained, tmp_path):
    cfg, model, params, val, _ = trained
    mesh = mesh_lib.make_mesh()
    prepare.write_shard(tmp_path / "fineweb_train_000000.bin", val)
    msgs: list[str] = []
    for src, flag, reserve in (("val", True, 0.0), ("train", False, 1e6)):
        c = _cfg(calib_source=src, calib_seqs=4, compressor="brotli", reserve_seconds=reserve)
        calib = hessian.calibrate(c, model, params, mesh, data_dir=tmp_path, val_tokens=val, log=msgs.append)
        out = tmp_path / src
        out.mkdir()
        rep = _export(params, c, out, calib=calib).report
        assert rep["calibration_on_val"] is flag and rep["calib_source"] == src and rep["compressor"] == "brotli"
        assert rep["calibration_fits_reserve"] is (reserve > 0) and rep["reserve_seconds"] == reserve
        assert hessian.TIED_EMBED_KEY not in calib.hessians  # only with export.embed_quant="gptq"
    assert any("NOT compliant" in m for m in msgs)
    assert any("no reserve (export.reserve_seconds=0)" in m for m in msgs)
    assert any("fits the 1000000.0s reserve" in m for m in msgs)


def _herr(W, t: container.QuantTensor, H) -> float:
    """Hessian-weighted squared error tr(E H Eᵀ) of a row-quantized [rows, in] tensor."""
    E = W.astype(np.float64) - t.data * t.scale.astype(np.float64)[:, None]
    return float(np.einsum("ri,ij,rj->", E, H.astype(np.float64), E))


def test_embed_gptq_round_trip_brotli_and_beats_rowquant(trained, tmp_path):
    """export.embed_quant="gptq" (the SP8192 stack): the tied table is GPTQ int8 with
    SDClip k=20 and its LM-head Hessian, stored and reloaded exactly (brotli, byte
    shuffle stride 2), with a lower Hessian-weighted error than int8 row quantization."""
    _, _, params, _, calib = trained
    key = export.TIED_EMBED
    cfg = _cfg(embed_quant="gptq", gptq_clip="sdclip", gptq_damp=0.01, compressor="brotli", reserve_seconds=12.0)
    slow = hessian.Calibration(calib.hessians, "train", calib.num_seqs, T, 53.0)  # #1735's overrun
    info = _export(params, cfg, tmp_path, calib=slow)
    assert info.report["embed_quant"] == "gptq" and info.report["calibration_fits_reserve"] is False
    blob = info.path.read_bytes()
    assert blob[:2] == bytes([compress.METHODS["brotli"], 2])  # brotli-11 after a stride-2 byte shuffle
    stored = container.deserialize(blob)
    E, H = export.named_arrays(params)[key], calib.hessians[key]
    want = gptq.gptq_quantize(E, H, gptq.GPTQSettings(clip_range=127, clip="sdclip", sdclip_k=20.0, damp=0.01))
    t = stored[key]
    assert t.kind == "int8" and t.shape == E.shape == (V, D)
    np.testing.assert_array_equal(t.data, want.q)
    np.testing.assert_array_equal(t.scale, want.scale)
    loaded = export.load_artifact(info.path, params)
    np.testing.assert_array_equal(loaded["tok_emb"]["embedding"], t.data * t.scale.astype(np.float32)[:, None])
    # The int6 matrices went through SDClip too (k = export.sdclip_k).
    name = "blocks_0/mlp/fc/kernel"
    W = export.named_arrays(params)[name]
    m = gptq.gptq_quantize(W, calib.hessians[name], gptq.GPTQSettings(clip="sdclip", sdclip_k=12.85, damp=0.01))
    assert stored[name].kind == "int6"
    np.testing.assert_array_equal(stored[name].data, m.q)
    # Same bits (int8), Hessian norm: GPTQ < today's row quantization, and < RTN with the same scales.
    row = container.QuantTensor("int8", *rowquant.quantize_rows_int8(E))
    rtn = gptq.rtn_quantize(E, gptq.GPTQSettings(clip_range=127, clip="sdclip", sdclip_k=20.0))
    e_gptq, e_row = _herr(E, t, H), _herr(E, row, H)
    e_rtn = _herr(E, container.QuantTensor("int8", rtn.q, rtn.scale), H)
    assert e_gptq < 0.9 * e_row and e_gptq < 0.7 * e_rtn, (e_gptq, e_row, e_rtn)


def test_embed_gptq_config_errors(trained, tmp_path):
    _, _, params, _, calib = trained
    no_embed = hessian.Calibration({k: v for k, v in calib.hessians.items() if k != export.TIED_EMBED},
                                   "train", 1, T, 0.0)
    with pytest.raises(ValueError, match="export.embed_quant='gptq': no Hessian for tok_emb/embedding"):
        _export(params, _cfg(embed_quant="gptq"), tmp_path, calib=no_embed)
    with pytest.raises(ValueError, match="export.embed_quant='int4'"):
        export.check_config(_cfg(embed_quant="int4").export)
    # rtn_int6 needs no Hessian: the table gets round-to-nearest with the same rule.
    info = _export(params, _cfg(format="rtn_int6", embed_quant="gptq", gptq_clip="sdclip"), tmp_path)
    t = container.deserialize(info.path.read_bytes())[export.TIED_EMBED]
    rtn = gptq.rtn_quantize(export.named_arrays(params)[export.TIED_EMBED],
                            gptq.GPTQSettings(clip_range=127, clip="sdclip", sdclip_k=20.0))
    np.testing.assert_array_equal(t.data, rtn.q)


def test_rtn_and_int8_formats(trained, tmp_path):
    cfg, _, params, _, _ = trained
    for fmt in ("rtn_int6", "int8_zlib"):
        c = _cfg(format=fmt)
        out = tmp_path / fmt
        out.mkdir()
        info = _export(params, c, out)
        loaded = export.load_artifact(info.path, params)
        assert jax.tree.structure(loaded) == jax.tree.structure(params)
        assert info.report["export_format"] == fmt


def _gaussian_code_entropy_bits(k: float, clip: int) -> float:
    """Entropy of clip(round(z / (k/clip)), ±clip) for z ~ N(0, 1), in bits (SDClip on a Gaussian row)."""
    from math import erf, log2, sqrt

    step = k / clip
    cdf = lambda x: 0.5 * (1 + erf(x / sqrt(2)))  # noqa: E731
    edges = [-float("inf")] + [(j + 0.5) * step for j in range(-clip, clip)] + [float("inf")]
    probs = [cdf(b) - cdf(a) for a, b in zip(edges[:-1], edges[1:])]
    return -sum(p * log2(p) for p in probs if p > 0)


def test_size_estimate_is_the_entropy_of_the_codes():
    """The full-size estimate's weight bytes sit just above the entropy of SDClip codes of
    Gaussian weights (a compressor cannot beat it on i.i.d. codes; brotli gets within ~10%)."""
    from configs import sp8192_legal
    from golf_jax.quant import estimate

    cfg = sp8192_legal.get_config()
    m = cfg.model
    m.vocab_size, m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = 1024, 2, 256, 4, 2
    m.loop_start, m.loop_end, m.parallel_residual_start, m.xsa_last_n = 0, 1, 1, 2
    r = estimate.estimate(cfg)
    assert r["total_bytes"] == r["weight_bytes"] + r["code_bytes"] and r["params"] == 1_707_528
    # int6: fc and mlp proj (256×1024) per layer; int8: the 1024×256 tied embedding (k = 20).
    bound = 4 * 256 * 1024 * _gaussian_code_entropy_bits(12.85, 31) / 8
    bound += 1024 * 256 * _gaussian_code_entropy_bits(20.0, 127) / 8
    small = (r["params"] - 5 * 256 * 1024) * 2  # fp16 passthrough, at most 2 bytes each
    assert bound < r["weight_bytes"] < 1.1 * bound + small + 4096, (r, bound)
