"""Self-generated GPTQ calibration text (export.calib_source="selfgen"; docs/reference-notes.md#hessian-calibration).

Calibration on sequences the trained model samples itself from BOS, so no training or
validation data is read after the training clock. PR #1318's file holds this option but
the record calibrates on val (docs/reference-notes.md#hessian-calibration). Its own module: only
configs that self-generate pack it (golf_jax/submission/modules.py GATES).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh

from golf_jax.core import mesh as mesh_lib


def generate(model: nn.Module, params, num_seqs: int, seq_len: int, mesh: Mesh, seed: int,
             temperature: float = 0.8, bos_id: int = 1) -> np.ndarray:
    """Self-generated calibration text: sample autoregressively from BOS (seeded).

    No KV cache: each of the T-1 steps runs a full forward of the fixed [N, T]
    buffer (causal, so later positions do not affect position t); O(T²) work, fine
    for calibration-sized N.
    """
    ndev = mesh.devices.size
    n_pad = -(-num_seqs // ndev) * ndev
    rep, dat = mesh_lib.replicated(mesh), mesh_lib.data_sharded(mesh)

    def run(p, buf, key):
        def body(t, carry):
            buf, key = carry
            key, sub = jax.random.split(key)
            logits = model.apply({"params": p}, buf)[:, t, :].astype(jnp.float32)
            nxt = jax.random.categorical(sub, logits / temperature, axis=-1).astype(jnp.int32)
            return buf.at[:, t + 1].set(nxt), key

        return jax.lax.fori_loop(0, seq_len - 1, body, (buf, key))[0]

    buf = np.zeros((n_pad, seq_len), np.int32)
    buf[:, 0] = bos_id
    out = jax.jit(run, in_shardings=(rep, dat, rep), out_shardings=dat)(
        params, mesh_lib.put_global_batch(mesh, buf), jax.random.PRNGKey(seed))
    return np.asarray(jax.device_get(out))[:num_seqs]
