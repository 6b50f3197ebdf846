"""Non-overlapping validation (reference §6.1): contiguous sequences, every target scored."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh

from golf_jax.eval.bpb import BpbAccumulator
from golf_jax.train import mesh as mesh_lib


def eval_batches(val_tokens: np.ndarray, seq_len: int, batch_seqs: int, multiple_of: int):
    """Yield {x, y, mask} of `batch_seqs` rows; the last batch is zero-padded and masked."""
    num_seqs = (len(val_tokens) - 1) // seq_len
    batch_seqs = max(multiple_of, -(-batch_seqs // multiple_of) * multiple_of)
    for start in range(0, num_seqs, batch_seqs):
        stop = min(start + batch_seqs, num_seqs)
        chunk = np.asarray(val_tokens[start * seq_len : stop * seq_len + 1], dtype=np.int32)
        n = stop - start
        x = np.zeros((batch_seqs, seq_len), np.int32)
        y = np.zeros((batch_seqs, seq_len), np.int32)
        mask = np.zeros((batch_seqs, seq_len), bool)
        x[:n] = chunk[:-1].reshape(n, seq_len)
        y[:n] = chunk[1:].reshape(n, seq_len)
        mask[:n] = True
        yield {"x": x, "y": y, "mask": mask}


def evaluate(eval_step_jit, params, mesh: Mesh, val_tokens: np.ndarray, seq_len: int, batch_seqs: int) -> BpbAccumulator:
    """Score the whole val stream; per-batch sums come back to the host as float64."""
    acc = BpbAccumulator()
    pending = []
    for batch in eval_batches(val_tokens, seq_len, batch_seqs, mesh.devices.size):
        device_batch = {k: mesh_lib.put_global_batch(mesh, v) for k, v in batch.items()}
        pending.append(eval_step_jit(params, device_batch))
    for sums in jax.device_get(pending):
        acc.add(float(sums["nll_sum"]), int(sums["tokens"]), int(sums["bytes"]))
    return acc


def jit_eval_step(eval_step, mesh: Mesh):
    rep, dat = mesh_lib.replicated(mesh), mesh_lib.data_sharded(mesh)
    return jax.jit(eval_step, in_shardings=(rep, {"x": dat, "y": dat, "mask": dat}), out_shardings=rep)
