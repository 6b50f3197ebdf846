"""gptq_int6 / rtn_int6 export: classification, bit-exact round trip, GPTQ vs RTN, budget."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import traverse_util

from golf_jax import codebytes
from golf_jax import model as model_lib
from golf_jax.config import base_config
from golf_jax.data import shards
from golf_jax.quant import container, export, hessian
from golf_jax.quant.prune import ArtifactBudgetError
from golf_jax import mesh as mesh_lib

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
    """Params with trained-like spread (std-0.1 kernels, heavy-ish tails) and real Hessians."""
    cfg = _cfg()
    model = model_lib.build_model(cfg.model)
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, T), np.int32))["params"]
    rng = np.random.default_rng(0)

    def perturb(path, a):
        if path[-1].key == "kernel":
            return (0.1 * rng.standard_t(5, a.shape)).astype(np.float32)
        return a

    params = jax.device_get(jax.tree_util.tree_map_with_path(perturb, params))
    val = (np.arange(4000) * 7919 % V).astype(np.uint16)
    seqs = val[: 12 * T].astype(np.int32).reshape(12, T)
    calib = hessian.Calibration(hessian.collect_hessians(model, params, seqs, mesh_lib.make_mesh()), "train", 12, T, 0.0)
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
    shards.write_shard(tmp_path / "fineweb_train_000000.bin", val)
    msgs: list[str] = []
    for src, flag in (("val", True), ("train", False)):
        c = _cfg(calib_source=src, calib_seqs=4, compressor="brotli")
        calib = hessian.calibrate(c, model, params, mesh, data_dir=tmp_path, val_tokens=val, log=msgs.append)
        out = tmp_path / src
        out.mkdir()
        rep = _export(params, c, out, calib=calib).report
        assert rep["calibration_on_val"] is flag and rep["calib_source"] == src and rep["compressor"] == "brotli"
    assert any("NOT compliant" in m for m in msgs)


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
