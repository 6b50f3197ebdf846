"""The host-side quantization stages: GPTQ per matrix and the whole artifact export.

Weights are the config's model at its width, every leaf drawn from N(0, 0.02²) (a
trained-like scale), Hessians random SPD XᵀX/n with n = 2·cols (what
the record-shaped GPTQ timings in docs/perf.md used); no calibration forward is run.

* gptq: gptq.gptq_quantize with the config's export settings on every Muon kernel
  (W = kernelᵀ, [out, in]), also those the export would pass through as fp16 at a
  small width (unit: matrix);
* export: export.export_artifact with those weights and Hessians: quantization, LQER,
  pruning toward the budget and compression, written to a temporary dir (unit: artifact).

Both run numpy on the host: no device FLOPs, so no MFU; no XLA memory analysis.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import jax
import numpy as np

from golf_jax.submission import codebytes
from golf_jax import model as model_lib
from golf_jax.bench.measure import Bench
from golf_jax.core.errors import UserError
from golf_jax.quant import export, gptq, hessian, rowquant

HOST = "host numpy (BLAS): no device FLOPs, no MFU"


def _weights(cfg):
    model = model_lib.build_model(cfg.model)
    abstract = jax.eval_shape(lambda r: model.init(r, np.zeros((1, 8), np.int32))["params"], jax.random.PRNGKey(0))
    rng = np.random.default_rng(cfg.seed)
    params = jax.tree.map(lambda a: (0.02 * rng.standard_normal(a.shape)).astype(np.float32), abstract)
    labels = export.flat_labels(model_lib.param_labels(cfg.model, params, cfg.compat))
    arrays = {n: a for n, a in export.named_arrays(params).items() if not n.startswith(export.NOT_EXPORTED_PREFIXES)}
    return params, labels, arrays


def random_hessian(cols: int, rng: np.random.Generator) -> np.ndarray:
    X = rng.standard_normal((2 * cols, cols), dtype=np.float32)
    return X.T @ X / np.float32(2 * cols)


def build_gptq(cfg, mesh) -> Bench:
    del mesh  # host only
    _, labels, arrays = _weights(cfg)
    ex = cfg.export
    export.check_config(ex)
    mats = {n: a for n, a in arrays.items() if labels.get(n) == "muon" and a.ndim == 2}
    if not mats:
        raise UserError(f"config {cfg.name}: the model has no Muon matrices to quantize")
    rng = np.random.default_rng(cfg.seed)
    hs = {n: random_hessian(a.shape[1], rng) for n, a in mats.items()}

    def call():
        for n, W in mats.items():
            settings = gptq.GPTQSettings(clip_range=rowquant.INT6_CLIP, block_size=int(ex.gptq_block),
                                         damp=float(ex.gptq_damp), clip=ex.gptq_clip, sdclip_k=export.sdclip_k_for(n, ex))
            gptq.gptq_quantize(W, hs[n], settings)

    params = sum(a.size for a in mats.values())
    shapes = sorted({f"{a.shape[0]}x{a.shape[1]}" for a in mats.values()})
    return Bench("gptq", "matrix", len(mats), call, HOST, calls=1, warmup=0,
                 settings={"matrices": len(mats), "params": int(params), "shapes": shapes, "clip": ex.gptq_clip,
                           "gptq_in_export": sum(a.size > export.PASSTHROUGH_MAX_NUMEL for a in mats.values())},
                 extra=lambda: {"params_per_matrix": params / len(mats)})


def build_export(cfg, mesh) -> Bench:
    del mesh
    params, labels, arrays = _weights(cfg)
    ex = cfg.export
    export.check_config(ex)
    calib = None
    if ex.format == "gptq_int6":
        rng = np.random.default_rng(cfg.seed)
        need = [n for n, a in arrays.items() if export.classify(n, a, labels.get(n, "")) == "int6"]
        if ex.embed_quant == "gptq" and export.TIED_EMBED in arrays:
            need.append(export.TIED_EMBED)
        calib = hessian.Calibration({n: random_hessian(arrays[n].shape[1], rng) for n in need}, "bench", 0, 0, 0.0)
    code = codebytes.code_bytes(cfg)
    out_dir = Path(tempfile.mkdtemp(prefix="golf_jax_bench_export_"))
    info: dict = {}
    model_labels = model_lib.param_labels(cfg.model, params, cfg.compat)

    def call():
        info["artifact"] = export.export_artifact(params, model_labels, cfg, out_dir, code, calib=calib)

    def sizes() -> dict:
        a = info["artifact"]
        return {"weight_bytes": a.weight_bytes, "code_bytes": a.code_bytes, "artifact_bytes": a.total_bytes,
                "gptq_seconds": a.report.get("gptq_seconds"), "pruned": a.report.get("pruned")}

    n_params = sum(a.size for a in arrays.values())
    return Bench("export", "artifact", 1, call, HOST, calls=1, warmup=0,
                 settings={"format": ex.format, "compressor": ex.compressor or "default", "params": int(n_params)},
                 extra=sizes)
