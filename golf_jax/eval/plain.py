"""Non-overlapping validation (docs/reference-notes.md#plain-eval): contiguous sequences, every target scored."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh

from golf_jax.data.tokenizer import ByteLUT, target_bytes
from golf_jax.eval.bpb import BpbAccumulator
from golf_jax.model import layers
from golf_jax.core import mesh as mesh_lib
from golf_jax.core.progress import progress


def make_eval_step(model: nn.Module):
    """Sums of NLL (fp32) and scored tokens over a masked batch.

    Bytes are counted on the host (eval_batches), where the val byte sidecar, if any,
    lives: the same target_bytes as the harness, so every stage credits the same bytes.
    """

    def eval_step(params, batch: dict) -> dict:
        logits = model.apply({"params": params}, batch["x"])
        nll_BxT = layers.cross_entropy_BxT(logits, batch["y"])
        mask = batch["mask"]
        return {
            "nll_sum": jnp.sum(jnp.where(mask, nll_BxT, 0.0)),
            "tokens": jnp.sum(mask.astype(jnp.int32)),
        }

    return eval_step


def eval_batches(val_tokens: np.ndarray, seq_len: int, batch_seqs: int, multiple_of: int, lut: ByteLUT):
    """Yield ({x, y, mask}, bytes of its targets) per `batch_seqs` rows; the last batch is
    zero-padded and masked."""
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
        first = start * seq_len  # index of the batch's first target (the target is val[t + 1])
        nbytes = target_bytes(lut, chunk[:-1], chunk[1:], target_index=np.arange(first, first + n * seq_len))
        yield {"x": x, "y": y, "mask": mask}, int(np.sum(nbytes, dtype=np.int64))


def evaluate(eval_step_jit, params, mesh: Mesh, val_tokens: np.ndarray, seq_len: int, batch_seqs: int,
             lut: ByteLUT) -> BpbAccumulator:
    """Score the whole val stream; per-batch sums come back to the host as float64.

    The progress counts a batch once the next one is queued and it has finished (one step
    late: the device stays busy).
    """
    acc = BpbAccumulator()
    pending, nbytes = [], []
    bar = progress("val", "tok", (len(val_tokens) - 1) // seq_len * seq_len)
    for batch, b in eval_batches(val_tokens, seq_len, batch_seqs, mesh.devices.size, lut):
        device_batch = {k: mesh_lib.put_global_batch(mesh, v) for k, v in batch.items()}
        pending.append(eval_step_jit(params, device_batch))
        nbytes.append(b)
        if len(pending) > 1:
            jax.block_until_ready(pending[-2])
            bar.update(batch["mask"].size)  # a full batch: only the last one is padded
    for sums, b in zip(jax.device_get(pending), nbytes):
        acc.add(float(sums["nll_sum"]), int(sums["tokens"]), b)
    return acc


def jit_eval_step(eval_step, mesh: Mesh):
    rep, dat = mesh_lib.replicated(mesh), mesh_lib.data_sharded(mesh)
    return jax.jit(eval_step, in_shardings=(rep, {"x": dat, "y": dat, "mask": dat}), out_shardings=rep)


def make_evaluator(model: nn.Module, lut: ByteLUT, mesh: Mesh, val_tokens: np.ndarray, seq_len: int,
                   val_batch_tokens: int) -> Callable[..., BpbAccumulator]:
    """`params -> BpbAccumulator` over the val stream (one compiled eval step, reused)."""
    eval_step = jit_eval_step(make_eval_step(model), mesh)
    batch_seqs = max(val_batch_tokens // seq_len, 1)
    return lambda params: evaluate(eval_step, params, mesh, val_tokens, seq_len, batch_seqs, lut)
