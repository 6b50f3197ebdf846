"""The artifact: quantize the params pytree, serialize, compress, count, and load back.

Names are the '/'-joined pytree paths. Matmul kernels are stored transposed to
`(out, in)` so that per-row scales are per output channel, as in the reference.

Formats (export.format):

* "int8_zlib": the upstream baseline (int8 per-row for large tensors, zlib).
* "gptq_int6": the record (docs/reference-notes.md#tensor-formats). In order: non-matrices and tensors with
  <= 65,536 elements -> fp16; every kernel labelled "muon" (the block matrices)
  -> int6 GPTQ with the Hessian from golf_jax.quant.hessian (W = kernel^T, [out, in]);
  every other large tensor (tok_emb, bigram/VE embed, an untied head) -> int8
  per-row (int7 with export.embed_bits=7). With export.embed_quant="gptq" the tied
  table tok_emb/embedding [V, D] is GPTQ-quantized instead (int8/int7 rows; with
  export.gptq_clip="sdclip" the k is export.embed_sdclip_k), with the Hessian of the
  LM head's input, as in the SP8192 reference (#1735). MTP heads are not exported (5.1).
  With export.gptq_clip="sdclip", blocks_i/mlp/* and blocks_i/attn/* matrices may have
  their own k (export.sdclip_k_mlp / sdclip_k_attn, #1855's MLP_/ATTN_CLIP_SIGMAS).
  export.gate_int8 stores */attn_gate_w as int8 rows instead of fp16 (#1855). With
  export.lqer_rank > 0 the top_k quantized matrices by error norm carry a low-rank
  correction (golf_jax.quant.lqer, #1797/#1855).
  Then selective +-1 pruning toward the budget; lzma by default, or per-group
  compression (export.compressor="pergroup_*", golf_jax.quant.pergroup, #1855).
* "rtn_int6": as gptq_int6 but round-to-nearest with the same per-row clip rule
  (percentile search or SDClip; no Hessian), for comparisons.

Artifact bytes = compressed weights + code bytes, in DECIMAL bytes against
export.budget_bytes (16,000,000). Code bytes are passed in: the byte length of the
single self-extracting submission script (golf_jax/submission/codebytes.py), the one file a
submission needs to train and evaluate.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np
from flax import traverse_util

from golf_jax.core.errors import UserError
from golf_jax.core.progress import progress
from golf_jax.quant import container, gptq, hessian, prune, rowquant
from golf_jax.quant.prune import ArtifactBudgetError
from golf_jax.core.rundir import write_atomic
from golf_jax.submission.modules import repo_only

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


INT6_FORMATS = ("gptq_int6", "rtn_int6")  # gptq_int6: the records' GPTQ; rtn_int6: round to nearest
FORMATS = ("int8_zlib", *INT6_FORMATS)  # int8_zlib: the upstream baseline's per-row int8 + zlib
# tok_emb in *_int6: "rowquant" (percentile int8/int7 rows, no Hessian) | "gptq" (GPTQ with the
# Hessian of the tied LM head's input, the final-norm output; #1735)
EMBED_QUANTS = ("rowquant", "gptq")
GPTQ_CLIPS = ("percentile", "sdclip")  # percentile: the reference's clip search; sdclip: k·std(row) (#1735)
# pergroup_*: matrices grouped by role, rows L1-sorted, each group compressed on its own (*_int6 only;
# zpaq needs `pip install zpaq`; #1855's COMPRESSOR=pergroup ran lrzip's ZPAQ)
PERGROUP = ("pergroup_brotli", "pergroup_zpaq")
COMPRESSORS = ("lzma", "brotli", "zstd", *PERGROUP)  # "" (not listed): the format's default (lzma for *_int6)
INT6_STORAGES = ("auto", "int8", "packed6")  # auto: the smaller of the two after compression
TIED_EMBED = hessian.TIED_EMBED_KEY  # "tok_emb/embedding": the tied table, [V, D] as stored
GATE_NAME = "attn_gate_w"  # the sparse attention output gate, [num_heads, gate_window]


@repo_only
def check_config(ex) -> None:
    """The export.* choices, before anything is trained (one line naming the key)."""
    if ex.format not in FORMATS:
        raise ValueError(f"export.format={ex.format!r}: known formats are {', '.join(map(repr, FORMATS))}")
    if int(ex.embed_bits) not in (7, 8):
        raise ValueError(f"export.embed_bits={ex.embed_bits}: use 8 or 7")
    if ex.embed_quant not in EMBED_QUANTS:
        raise ValueError(f"export.embed_quant={ex.embed_quant!r}: use one of {EMBED_QUANTS}")
    if ex.gptq_clip not in GPTQ_CLIPS:
        raise ValueError(f"export.gptq_clip={ex.gptq_clip!r}: use one of {GPTQ_CLIPS}")
    int6 = ex.format in INT6_FORMATS
    for key in ("sdclip_k_mlp", "sdclip_k_attn"):
        k = float(getattr(ex, key))
        if not (np.isfinite(k) and k >= 0):
            raise ValueError(f"export.{key}={k}: use a k > 0, or 0 for export.sdclip_k")
        if k > 0 and ex.gptq_clip != "sdclip":
            raise ValueError(f"export.{key}={k} needs export.gptq_clip='sdclip' (or set it to 0)")
    if ex.compressor and ex.compressor not in COMPRESSORS:
        raise ValueError(f"export.compressor={ex.compressor!r}: use '' (the format's default) or one of {COMPRESSORS}")
    if ex.compressor and not int6:
        raise ValueError(f"export.compressor={ex.compressor!r} needs export.format in {INT6_FORMATS} "
                         "(int8_zlib always uses zlib; or set export.compressor='')")
    if ex.int6_storage not in INT6_STORAGES:
        raise ValueError(f"export.int6_storage={ex.int6_storage!r}: use one of {', '.join(map(repr, INT6_STORAGES))}")
    if ex.calib_source not in hessian.CALIB_SOURCES:
        raise ValueError(f"export.calib_source={ex.calib_source!r}: use one of {hessian.CALIB_SOURCES}")
    for key, low in (("calib_seqs", 1), ("calib_seq_len", 0), ("gptq_block", 1), ("reserve_seconds", 0)):
        if ex[key] < low:
            raise ValueError(f"export.{key}={ex[key]}: use a value >= {low}")
    if ex.compressor in PERGROUP:
        if ex.int6_storage == "packed6":
            raise ValueError(f"export.compressor={ex.compressor!r} stores int6 as bytes (rows are reordered); "
                             "set export.int6_storage='auto' or 'int8'")
        if ex.compressor == "pergroup_zpaq":
            try:
                import zpaq  # noqa: F401
            except ImportError as exc:
                raise ValueError("export.compressor='pergroup_zpaq' needs the zpaq package: pip install zpaq, "
                                 "or use 'pergroup_brotli'") from exc
    rank, top, bits, group = int(ex.lqer_rank), int(ex.lqer_top_k), int(ex.lqer_bits), int(ex.lqer_group)
    if rank < 0:
        raise ValueError(f"export.lqer_rank={rank}: use 0 (off) or a rank >= 1 (#1855: 4)")
    if rank > 0:
        if not int6:
            raise ValueError(f"export.lqer_rank={rank} needs export.format in {INT6_FORMATS} (or lqer_rank=0)")
        if top < 1:
            raise ValueError(f"export.lqer_top_k={top}: use >= 1 (#1855: 3)")
        if not 2 <= bits <= 8:
            raise ValueError(f"export.lqer_bits={bits}: use 2..8 (#1855: 4)")
        if group < 0:
            raise ValueError(f"export.lqer_group={group}: use a group size > 0 (#1855: 64) or 0 (symmetric per row)")
    if ex.gate_int8 and not int6:
        raise ValueError(f"export.gate_int8=True needs export.format in {INT6_FORMATS}")


def sdclip_k_for(name: str, ex) -> float:
    """SDClip k of an int6 matrix: per role as #1855's gptq_mixed_quantize (mlp, attn, other)."""
    parts = name.split("/")[:-1]
    if "mlp" in parts and float(ex.sdclip_k_mlp) > 0:
        return float(ex.sdclip_k_mlp)
    if "attn" in parts and float(ex.sdclip_k_attn) > 0:
        return float(ex.sdclip_k_attn)
    return float(ex.sdclip_k)


def is_gate(name: str) -> bool:
    return name.rsplit("/", 1)[-1] == GATE_NAME


NOT_EXPORTED_PREFIXES = ("mtp_heads_",)  # training-only heads (docs/reference-notes.md#tensor-formats)


def flat_labels(labels) -> dict[str, str]:
    """{'/'-joined path: optimizer label} of a labels pytree (the model's param_labels)."""
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(labels).items()}


def classify(name: str, arr: np.ndarray, label: str) -> str:
    """'fp16' | 'int6' | 'embed' per docs/reference-notes.md#tensor-formats (small first, then Muon matrices)."""
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
    tensors, stats = {}, {"int6": 0, "embed": 0, "fp16": 0, "gate_int8": 0, "gptq_fallbacks": 0,
                          "gptq_seconds": 0.0, "embed_quant": ex.embed_quant}
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
    quantized = []  # LQER candidates: the matrices quantized from their float values
    for name, arr in progress("quantize", "tensor", items=arrays.items()):
        if ex.gate_int8 and is_gate(name):
            if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
                raise ValueError(f"export.gate_int8: {name} has shape {arr.shape} ({arr.dtype}); int8 rows need a "
                                 "2-D float [num_heads, gate_window] gate, or set export.gate_int8=False")
            tensors[name] = container.QuantTensor("int8", *rowquant.quantize_rows_absmax(arr), arr.dtype.name)
            stats["gate_int8"] += 1
            continue
        kind = classify(name, arr, labels.get(name, ""))
        stats[kind] += 1
        if kind != "fp16":
            quantized.append(name)
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
                               sdclip_k=sdclip_k_for(name, ex) if int6 else float(ex.embed_sdclip_k),
                               double_damp=double_damp)
            stats["gptq_fallbacks"] += int(res.used_fallback and hessians is not None)
            stats["gptq_seconds"] += time.perf_counter() - t0
            tensors[name] = container.QuantTensor("int6" if int6 else embed_kind, res.q, res.scale, arr.dtype.name)
    if ex.gate_int8 and not stats["gate_int8"]:
        raise ValueError(f"export.gate_int8=True, but the model has no */{GATE_NAME} parameter (the sparse "
                         "attention gate); turn the gate on in model.* or set export.gate_int8=False")
    if int(ex.lqer_rank) > 0:
        stats["lqer"] = add_lqer(tensors, {n: arrays[n] for n in quantized}, ex)
    return tensors, stats


def add_lqer(tensors: dict[str, container.QuantTensor], arrays: dict[str, np.ndarray], ex) -> dict:
    """Attach LQER corrections (in place) to the export.lqer_top_k candidates by ‖W - q·s‖_F;
    returns {name: {mode, rank, err, err_lqer}} (Frobenius norms before / after)."""
    from golf_jax.quant import lqer  # only configs with export.lqer_rank > 0 need it

    errs = {n: lqer.quant_error(a, tensors[n].data, tensors[n].scale) for n, a in arrays.items()
            if a.ndim == 2 and tensors[n].data.ndim == 2}
    report = {}
    for name in lqer.top_k(errs, int(ex.lqer_top_k)):
        t = tensors[name]
        a, b, mode = lqer.pack_factors(*lqer.factors(errs[name], int(ex.lqer_rank)), int(ex.lqer_bits),
                                       int(ex.lqer_group))
        tensors[name] = dataclasses.replace(t, lqer=(a, b))
        after = errs[name] - lqer.correction(a, b)
        report[name] = {"mode": mode, "rank": int(a.q.shape[1]), "err": float(np.linalg.norm(errs[name])),
                        "err_lqer": float(np.linalg.norm(after))}
    return report


def _gptq_or_rtn(W: np.ndarray, H: np.ndarray | None, ex, *, clip_range: int, sdclip_k: float,
                 double_damp: bool) -> gptq.GPTQResult:
    """GPTQ with H, else round-to-nearest with the same per-row clip rule (rtn_int6)."""
    settings = gptq.GPTQSettings(clip_range=clip_range, block_size=int(ex.gptq_block), damp=float(ex.gptq_damp),
                                 double_damp=double_damp, clip=ex.gptq_clip, sdclip_k=sdclip_k)
    return gptq.rtn_quantize(W, settings) if H is None else gptq.gptq_quantize(W, H, settings)


def serializer(tensors: dict[str, container.QuantTensor], ex, compressor: str):
    """(serialize_fn for the pruning probes, int6 storage, the unpruned blob). int6_storage
    "auto" is decided once here, and the per-group row orders are sorted once on the
    unpruned codes (pruning only zeroes ±1 entries; the stored order keeps loads exact)."""
    if compressor in PERGROUP:
        from golf_jax.quant import pergroup  # only configs with export.compressor="pergroup_*" need it

        codec = compressor.split("_", 1)[1]
        raw = container.pack(tensors, "int8")
        orders = pergroup.row_orders(raw)
        return (functools.partial(pergroup.serialize, codec=codec, orders=orders), "int8",
                pergroup.encode(raw, codec, orders))
    unpruned = container.serialize(tensors, ex.int6_storage, compressor)
    storage = container.int6_storage_of(unpruned)
    return functools.partial(container.serialize, int6_storage=storage, compressor=compressor), storage, unpruned


def check_weights(arrays: dict[str, np.ndarray]) -> None:
    """Refuse weights no artifact holds: not finite, or past fp16's range (65504 holds the small
    tensors and every row scale). A run that diverged without a NaN loss, its loss stuck at
    ln V, ends here, before anything is written."""
    peaks = {n: float(np.max(np.abs(a.astype(np.float32)), initial=0)) for n, a in arrays.items()}
    bad = [f"{n} (max |w| {v:.3g})" for n, v in peaks.items() if not v <= 65504]  # NaN too
    if bad:
        raise UserError(f"export: {len(bad)} of {len(arrays)} weight tensors are not finite or past fp16's "
                        f"65504, e.g. {', '.join(bad[:3])}: training diverged; lower opt.*_lr or set "
                        "opt.grad_clip_norm. Nothing was written")


def export_artifact(params, labels, cfg, out_dir: Path, code_bytes: int, calib=None) -> ArtifactInfo:
    """Write `model.golfjax` into out_dir; raise ArtifactBudgetError over the budget.

    `labels` is the model's optimizer-label pytree (which kernels are Muon matrices,
    hence int6); `code_bytes` the counted code (golf_jax.submission.codebytes.code_bytes()).
    `calib` (a hessian.Calibration) is required for gptq_int6.
    """
    check_weights(named_arrays(params))
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
        ser, storage, unpruned = serializer(tensors, ex, compressor)
        try:
            tensors, pr = prune.prune_to_budget(tensors, ex.budget_bytes, code_bytes, ser, log=print, unpruned_blob=unpruned)
        except ArtifactBudgetError:
            if jax.process_index() == 0:  # one writer; the others read it (pipeline)
                write_atomic(path, unpruned)  # never lose a run's output
            raise
        blob = pr.blob
        report.update(int6_storage=storage, pruned=pr.n_pruned, prune_candidates=pr.n_candidates, unpruned_weight_bytes=pr.unpruned_bytes)
        if compressor in PERGROUP:
            from golf_jax.quant import pergroup

            report["pergroup_bytes"] = pergroup.stream_bytes(blob)
    else:
        raise ValueError(f"export.format={fmt!r}: known formats are 'int8_zlib', 'gptq_int6', 'rtn_int6'")
    report["compressor"] = compressor
    info = ArtifactInfo(path, len(blob), code_bytes, report)
    if jax.process_index() == 0:
        write_atomic(path, blob)  # written before the check: never lose a run's output
    if info.total_bytes > ex.budget_bytes:
        raise ArtifactBudgetError(
            f"artifact {info.path} is {info.total_bytes:,} bytes (weights {info.weight_bytes:,} + code "
            f"{info.code_bytes:,}), over export.budget_bytes={ex.budget_bytes:,} by "
            f"{info.total_bytes - ex.budget_bytes:,}; use a smaller model or a stronger export"
        )
    return info


def read_tensors(blob: bytes) -> dict[str, container.QuantTensor]:
    """The tensors of any artifact: a (compressed) GOLFJAX1 container or a per-group blob."""
    if bytes(blob[:8]) == container.PERGROUP_MAGIC:
        from golf_jax.quant import pergroup

        return pergroup.deserialize(blob)
    return container.deserialize(blob)


def load_artifact(path: Path, like_params) -> dict:
    """Rebuild a params pytree (structure and dtypes of `like_params`) from an artifact alone;
    an artifact that cannot be read, or holds another model, is a UserError naming it."""
    try:
        arrays = container.dequantize_all(read_tensors(Path(path).read_bytes()))
    except (ValueError, OSError) as e:
        raise UserError(f"{path}: not a readable artifact ({e})") from None
    flat_like = traverse_util.flatten_dict(like_params)
    flat = {}
    for key, like in flat_like.items():
        name = "/".join(key)
        if name not in arrays and name.startswith(NOT_EXPORTED_PREFIXES):
            flat[key] = np.zeros(np.shape(like), _dtype(like))  # training-only, not exported
            continue
        arr = arrays.get(name, np.zeros(0))
        if key[-1] == "kernel" and arr.ndim >= 2:
            arr = np.swapaxes(arr, -1, -2)
        if arr.shape != np.shape(like):
            raise UserError(f"{path} holds another model ({name}: {arr.shape}, not {np.shape(like)}); pass the "
                            "config of the run that wrote it")
        flat[key] = arr.astype(_dtype(like))
    return traverse_util.unflatten_dict(flat)


def _dtype(like) -> np.dtype:
    """dtype of an array or a jax.ShapeDtypeStruct (abstract params from eval_shape)."""
    return np.dtype(like.dtype) if hasattr(like, "dtype") else np.asarray(like).dtype
