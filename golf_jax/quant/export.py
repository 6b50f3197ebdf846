"""The artifact: quantize the params pytree, serialize, compress, count, and load back.

Names are the '/'-joined pytree paths. Matmul kernels are stored transposed to
`(out, in)` so that per-row scales are per output channel, as in the reference.

Formats (export.format):

* "int8_zlib": the upstream baseline (int8 per-row for large tensors, zlib).
* "gptq_int6": the record (spec 5.3). In order: non-matrices and tensors with
  <= 65,536 elements -> fp16; every kernel labelled "muon" (the block matrices)
  -> int6 GPTQ with the Hessian from golf_jax.quant.hessian (W = kernel^T, [out, in]);
  every other large tensor (tok_emb, bigram/VE embed, an untied head) -> int8
  per-row (int7 with export.embed_bits=7). With export.embed_quant="gptq" the tied
  table tok_emb/embedding [V, D] is GPTQ-quantized instead (int8/int7 rows; with
  export.gptq_clip="sdclip" the k is export.embed_sdclip_k), with the Hessian of the
  LM head's input, as in the SP8192 reference (#1735). MTP heads are not exported (5.1).
  Then selective +-1 pruning toward the budget; lzma by default.
* "rtn_int6": as gptq_int6 but round-to-nearest with the same per-row clip rule
  (percentile search or SDClip; no Hessian), for comparisons.

Artifact bytes = compressed weights + code bytes, in DECIMAL bytes against
export.budget_bytes (16,000,000). Code bytes are passed in: the byte length of the
single self-extracting submission script (golf_jax/codebytes.py), the one file a
submission needs to train and evaluate.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flax import traverse_util

from golf_jax.quant import container, gptq, hessian, prune, rowquant
from golf_jax.quant.prune import ArtifactBudgetError

PASSTHROUGH_MAX_NUMEL = 65_536
CONTROL_PATTERNS = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weights")


@dataclass(frozen=True)
class ArtifactInfo:
    path: Path
    weight_bytes: int
    code_bytes: int
    report: dict = field(default_factory=dict)  # format, compressor, calibration, GPTQ time, pruning

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.code_bytes


def named_arrays(params) -> dict[str, np.ndarray]:
    """Flat {name: array}, kernels as (out, in)."""
    out = {}
    for path, leaf in traverse_util.flatten_dict(params).items():
        arr = np.asarray(leaf)
        if path[-1] == "kernel" and arr.ndim >= 2:
            arr = np.swapaxes(arr, -1, -2)
        out["/".join(path)] = arr
    return out


def quantize_int8(arrays: dict[str, np.ndarray]) -> dict[str, container.QuantTensor]:
    """The upstream baseline export: int8 per-row for large matrices, fp16 for the rest."""
    tensors = {}
    for name, arr in arrays.items():
        if arr.ndim < 2 or arr.size <= PASSTHROUGH_MAX_NUMEL:
            kind = "fp32" if any(p in name for p in CONTROL_PATTERNS) else "fp16"
            tensors[name] = container.passthrough(arr, kind)
            continue
        w_2d = arr.reshape(-1, arr.shape[-1]).astype(np.float32)
        q, scale = rowquant.quantize_rows_int8(w_2d)
        tensors[name] = container.QuantTensor("int8", q.reshape(arr.shape), scale, arr.dtype.name)
    return tensors


INT6_FORMATS = ("gptq_int6", "rtn_int6")
EMBED_QUANTS = ("rowquant", "gptq")
GPTQ_CLIPS = ("percentile", "sdclip")
TIED_EMBED = hessian.TIED_EMBED_KEY  # "tok_emb/embedding": the tied table, [V, D] as stored


def check_config(ex) -> None:
    """The export.* choices, before anything is trained (one line naming the key)."""
    if ex.format not in ("int8_zlib", *INT6_FORMATS):
        raise ValueError(f"export.format={ex.format!r}: known formats are 'int8_zlib', "
                         f"{', '.join(repr(f) for f in INT6_FORMATS)}")
    if int(ex.embed_bits) not in (7, 8):
        raise ValueError(f"export.embed_bits={ex.embed_bits}: use 8 or 7")
    if ex.embed_quant not in EMBED_QUANTS:
        raise ValueError(f"export.embed_quant={ex.embed_quant!r}: use one of {EMBED_QUANTS}")
    if ex.gptq_clip not in GPTQ_CLIPS:
        raise ValueError(f"export.gptq_clip={ex.gptq_clip!r}: use one of {GPTQ_CLIPS}")


NOT_EXPORTED_PREFIXES = ("mtp_heads_",)  # training-only heads (spec 5.1)


def flat_labels(labels) -> dict[str, str]:
    """{'/'-joined path: optimizer label} of a labels pytree (the model's param_labels)."""
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(labels).items()}


def classify(name: str, arr: np.ndarray, label: str) -> str:
    """'fp16' | 'int6' | 'embed' per spec 5.3 (small first, then Muon matrices)."""
    if arr.ndim < 2 or arr.size <= PASSTHROUGH_MAX_NUMEL or not np.issubdtype(arr.dtype, np.floating):
        return "fp16"
    if label == "muon":
        if arr.ndim != 2:
            raise ValueError(f"export: Muon matrix {name} has shape {arr.shape}; int6 GPTQ needs 2-D kernels")
        return "int6"
    return "embed"


def quantize_int6(arrays: dict[str, np.ndarray], labels: dict[str, str], ex, hessians: dict | None,
                  double_damp: bool = False) -> tuple[dict[str, container.QuantTensor], dict]:
    """gptq_int6 (hessians given) or rtn_int6 (hessians None) tensors, plus stats."""
    check_config(ex)
    tensors, stats = {}, {"int6": 0, "embed": 0, "fp16": 0, "gptq_fallbacks": 0, "gptq_seconds": 0.0,
                          "embed_quant": ex.embed_quant}
    embed_clip = {8: rowquant.INT8_CLIP, 7: rowquant.INT7_CLIP}[int(ex.embed_bits)]
    embed_kind = "int8" if embed_clip == rowquant.INT8_CLIP else "int7"
    embed_gptq = ex.embed_quant == "gptq"
    if (embed_gptq and hessians is not None and TIED_EMBED not in hessians and TIED_EMBED in arrays
            and classify(TIED_EMBED, arrays[TIED_EMBED], labels.get(TIED_EMBED, "")) == "embed"):
        raise ValueError(f"export.embed_quant='gptq': no Hessian for {TIED_EMBED}; calibrate with "
                         "golf_jax.quant.hessian.calibrate under this config (it collects the LM head's input), "
                         "or set export.embed_quant='rowquant'")
    missing = [n for n, a in arrays.items() if classify(n, a, labels.get(n, "")) == "int6"
               and hessians is not None and n not in hessians]
    if missing:
        raise ValueError(
            f"export.format=gptq_int6: no Hessian for {len(missing)} Muon matrices, e.g. {missing[:3]}. "
            "Hessians come from intercepting golf_jax.model.layers.Linear; a model that stores these "
            "matrices another way (e.g. stacked banks) must route them through layers.Linear, or use "
            "export.format=rtn_int6")
    for name, arr in arrays.items():
        kind = classify(name, arr, labels.get(name, ""))
        stats[kind] += 1
        if kind == "fp16":
            tensors[name] = container.passthrough(arr, "fp16")
        elif kind == "embed" and not (embed_gptq and name == TIED_EMBED):
            q, s = rowquant.quantize_rows_int8(arr.astype(np.float32), clip_range=embed_clip)
            tensors[name] = container.QuantTensor(embed_kind, q, s, arr.dtype.name)
        else:
            int6 = kind == "int6"
            t0 = time.perf_counter()
            res = _gptq_or_rtn(arr.astype(np.float32), None if hessians is None else hessians[name], ex,
                               clip_range=rowquant.INT6_CLIP if int6 else embed_clip,
                               sdclip_k=float(ex.sdclip_k if int6 else ex.embed_sdclip_k), double_damp=double_damp)
            stats["gptq_fallbacks"] += int(res.used_fallback and hessians is not None)
            stats["gptq_seconds"] += time.perf_counter() - t0
            tensors[name] = container.QuantTensor("int6" if int6 else embed_kind, res.q, res.scale, arr.dtype.name)
    return tensors, stats


def _gptq_or_rtn(W: np.ndarray, H: np.ndarray | None, ex, *, clip_range: int, sdclip_k: float,
                 double_damp: bool) -> gptq.GPTQResult:
    """GPTQ with H, else round-to-nearest with the same per-row clip rule (rtn_int6)."""
    if H is None:
        return gptq.rtn_quantize(W, clip_range=clip_range, clip=ex.gptq_clip, sdclip_k=sdclip_k)
    return gptq.gptq_quantize(W, H, clip_range=clip_range, block_size=int(ex.gptq_block), damp=float(ex.gptq_damp),
                              double_damp=double_damp, clip=ex.gptq_clip, sdclip_k=sdclip_k)


def export_artifact(params, labels, cfg, out_dir: Path, code_bytes: int, calib=None) -> ArtifactInfo:
    """Write `model.golfjax` into out_dir; raise ArtifactBudgetError over the budget.

    `labels` is the model's optimizer-label pytree (which kernels are Muon matrices,
    hence int6); `code_bytes` the counted code (golf_jax.codebytes.code_bytes()).
    `calib` (a hessian.Calibration) is required for gptq_int6.
    """
    ex, fmt = cfg.export, cfg.export.format
    path = Path(out_dir) / "model.golfjax"
    report: dict = {"export_format": fmt}
    if fmt == "int8_zlib":
        tensors, compressor = quantize_int8(named_arrays(params)), "zlib"
        blob = container.serialize(tensors, compressor=compressor)
    elif fmt in INT6_FORMATS:
        if fmt == "gptq_int6" and calib is None:
            raise ValueError("export.format=gptq_int6 needs calibration Hessians (golf_jax.quant.hessian.calibrate)")
        compressor = ex.compressor or "lzma"
        labels = flat_labels(labels)
        arrays = {n: a for n, a in named_arrays(params).items() if not n.startswith(NOT_EXPORTED_PREFIXES)}
        tensors, stats = quantize_int6(arrays, labels, ex, calib.hessians if fmt == "gptq_int6" else None,
                                       bool(cfg.compat.gptq_double_damp))
        report.update(stats)
        if calib is not None:
            report.update(calib_source=calib.source, calibration_on_val=calib.on_val, calib_seqs=calib.num_seqs,
                          calib_seq_len=calib.seq_len, calib_seconds=calib.seconds,
                          reserve_seconds=float(ex.reserve_seconds),
                          calibration_fits_reserve=hessian.fits_reserve(calib.seconds, float(ex.reserve_seconds)))
        unpruned = container.serialize(tensors, ex.int6_storage, compressor)
        storage = container.int6_storage_of(unpruned)  # "auto" decides once, not at every pruning probe
        ser = functools.partial(container.serialize, int6_storage=storage, compressor=compressor)
        try:
            tensors, pr = prune.prune_to_budget(tensors, ex.budget_bytes, code_bytes, ser, log=print, unpruned_blob=unpruned)
        except ArtifactBudgetError:
            path.write_bytes(unpruned)  # never lose a run's output
            raise
        blob = pr.blob
        report.update(int6_storage=storage, pruned=pr.n_pruned, prune_candidates=pr.n_candidates, unpruned_weight_bytes=pr.unpruned_bytes)
    else:
        raise ValueError(f"export.format={fmt!r}: known formats are 'int8_zlib', 'gptq_int6', 'rtn_int6'")
    report["compressor"] = compressor
    info = ArtifactInfo(path, len(blob), code_bytes, report)
    path.write_bytes(blob)  # written before the check: never lose a run's output
    if info.total_bytes > ex.budget_bytes:
        raise ArtifactBudgetError(
            f"artifact {info.path} is {info.total_bytes:,} bytes (weights {info.weight_bytes:,} + code "
            f"{info.code_bytes:,}), over export.budget_bytes={ex.budget_bytes:,} by "
            f"{info.total_bytes - ex.budget_bytes:,}; use a smaller model or a stronger export"
        )
    return info


def load_artifact(path: Path, like_params) -> dict:
    """Rebuild a params pytree (structure and dtypes of `like_params`) from an artifact alone."""
    arrays = container.dequantize_all(container.deserialize(Path(path).read_bytes()))
    flat_like = traverse_util.flatten_dict(like_params)
    flat = {}
    for key, like in flat_like.items():
        name = "/".join(key)
        if name not in arrays and name.startswith(NOT_EXPORTED_PREFIXES):
            flat[key] = np.zeros(np.shape(like), _dtype(like))  # training-only, not exported
            continue
        if name not in arrays:
            raise ValueError(f"artifact {path} has no tensor {name!r}: it was written for another model config")
        arr = arrays[name]
        if key[-1] == "kernel" and arr.ndim >= 2:
            arr = np.swapaxes(arr, -1, -2)
        if arr.shape != np.shape(like):
            raise ValueError(f"artifact {path}: {name} has shape {arr.shape}, the model expects {np.shape(like)}")
        flat[key] = arr.astype(_dtype(like))
    return traverse_util.unflatten_dict(flat)


def _dtype(like) -> np.dtype:
    """dtype of an array or a jax.ShapeDtypeStruct (abstract params from eval_shape)."""
    return np.dtype(like.dtype) if hasattr(like, "dtype") else np.asarray(like).dtype
