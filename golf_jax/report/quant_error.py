"""The quantization error of each tensor: the run's float weights against its artifact.

Computed here from the files the pipeline leaves (params.msgpack, the weights that were
exported; model.golfjax, the artifact) rather than during export: the submission's code
stays smaller and the evaluation clock does not pay for it. The artifact is dequantized
exactly as a submission loads it (LQER corrections and ±1 pruning included).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flax import serialization

from golf_jax.quant import container
from golf_jax.quant.export import named_arrays, read_tensors


def tensor_errors(params_path: Path, artifact_path: Path) -> list[dict]:
    """Per artifact tensor, in its order: name, kind (int6, int8, fp16, ...), size,
    relative error ‖W − Ŵ‖_F / ‖W‖_F and RMS error."""
    params = serialization.msgpack_restore(Path(params_path).read_bytes())
    weights = named_arrays(params)
    tensors = read_tensors(Path(artifact_path).read_bytes())
    restored = container.dequantize_all(tensors, cast=False)
    rows = []
    for name, t in tensors.items():
        if name not in weights:
            raise ValueError(f"{artifact_path} holds {name!r}, which {params_path} lacks: are they from one run?")
        w = np.asarray(weights[name], np.float64)
        err = w - np.asarray(restored[name], np.float64).reshape(w.shape)
        norm = float(np.linalg.norm(w))
        rows.append({"name": name, "kind": t.kind + ("+lqer" if t.lqer is not None else ""), "size": int(w.size),
                     "rel_error": float(np.linalg.norm(err)) / norm if norm > 0 else float(np.linalg.norm(err)),
                     "rms_error": float(np.sqrt(np.mean(err**2)))})
    return rows
