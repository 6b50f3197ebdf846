"""The artifact: quantize the params pytree, serialize, compress, count, and load back.

Names are the '/'-joined pytree paths. Matmul kernels are stored transposed to
`(out, in)` so that per-row scales are per output channel, as in the reference.

Artifact bytes = compressed weights + code bytes, where code bytes are the UTF-8
bytes of every golf_jax/**/*.py source file (the code a submission needs to
train and evaluate; configs and tests are not counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flax import traverse_util

from golf_jax.quant import container, rowquant
from golf_jax.quant.prune import ArtifactBudgetError

PASSTHROUGH_MAX_NUMEL = 65_536
CONTROL_PATTERNS = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weights")


@dataclass(frozen=True)
class ArtifactInfo:
    path: Path
    weight_bytes: int
    code_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.code_bytes


def code_bytes() -> int:
    from golf_jax.train.rundir import package_sources

    return sum(len(p.read_bytes()) for p in package_sources())


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


def export_artifact(params, cfg, out_dir: Path) -> ArtifactInfo:
    """Write `model.golfjax` into out_dir; raise ArtifactBudgetError over the budget."""
    fmt = cfg.export.format
    if fmt == "int8_zlib":
        tensors, compressor = quantize_int8(named_arrays(params)), "zlib"
    else:
        raise ValueError(f"export.format={fmt!r}: known formats are 'int8_zlib'")
    blob = container.serialize(tensors, compressor=compressor)
    info = ArtifactInfo(Path(out_dir) / "model.golfjax", len(blob), code_bytes())
    Path(info.path).write_bytes(blob)  # written before the check: never lose a run's output
    if info.total_bytes > cfg.export.budget_bytes:
        raise ArtifactBudgetError(
            f"artifact {info.path} is {info.total_bytes:,} bytes (weights {info.weight_bytes:,} + code "
            f"{info.code_bytes:,}), over export.budget_bytes={cfg.export.budget_bytes:,} by "
            f"{info.total_bytes - cfg.export.budget_bytes:,}; use a smaller model or a stronger export"
        )
    return info


def load_artifact(path: Path, like_params) -> dict:
    """Rebuild a params pytree (structure and dtypes of `like_params`) from an artifact alone."""
    arrays = container.dequantize_all(container.deserialize(Path(path).read_bytes()))
    flat_like = traverse_util.flatten_dict(like_params)
    flat = {}
    for key, like in flat_like.items():
        name = "/".join(key)
        if name not in arrays:
            raise ValueError(f"artifact {path} has no tensor {name!r}: it was written for another model config")
        arr = arrays[name]
        if key[-1] == "kernel" and arr.ndim >= 2:
            arr = np.swapaxes(arr, -1, -2)
        if arr.shape != np.shape(like):
            raise ValueError(f"artifact {path}: {name} has shape {arr.shape}, the model expects {np.shape(like)}")
        flat[key] = arr.astype(np.asarray(like).dtype)
    return traverse_util.unflatten_dict(flat)
