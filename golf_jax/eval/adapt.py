"""What every test-time-training variant shares: the LM loss, the frozen set, per-leaf LRs.

Parameter paths come from the model's pytree: `blocks_i/...` are block i's leaves;
kernels (ndim 2) are its matrices, the rest its scalars (resid_mix, attn_scale,
mlp_scale, q_gain). The banked PyTorch references keep every matrix outside the
blocks, so their "freeze blocks" and "per-block LR" reach only those scalars
(docs/reference-notes.md#ttt-freeze-scope, docs/reference-notes.md#prequant-discriminative): scope "scalars"
reproduces that, scope
"blocks" does what was intended.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from golf_jax.core import mesh as mesh_lib
from golf_jax.eval.compiled import cached
from golf_jax.model import layers
from golf_jax.optim import step as optim_step

# freeze_scope / depth_scope: "blocks" acts on whole blocks (the intent); "scalars" reaches only their
# scalars, as in the banked reference (docs/reference-notes.md#ttt-freeze-scope)
SCOPES = ("blocks", "scalars")
_BLOCK = re.compile(r"blocks_(\d+)$")


def lm_loss(model):
    """`(params, batch) -> (mean CE, {})` over batch rows weighted by batch["w"] (0 = padding).

    The eval model's loss: next-token CE only (no MTP heads, as in the reference's eval_model).
    """

    def loss_fn(params, batch):
        logits = model.apply({"params": params}, batch["x"])
        nll_BxT = layers.cross_entropy_BxT(logits, batch["y"])
        w_B = batch["w"].astype(jnp.float32)
        tokens = jnp.maximum(jnp.sum(w_B) * nll_BxT.shape[1], 1.0)
        return jnp.sum(nll_BxT * w_B[:, None]) / tokens, {}

    return loss_fn


def lm_trainer(model, tx, mesh, key):
    """(init, step), jitted once per (model, mesh, key): `init(params)` is the replicated
    StepState an adaptation starts from; `step(state, batch)` the LM gradient step on
    batches {x, y, w, hparams} split over the data mesh (state donated).

    `key` must identify `tx` (its settings; the params' structure is the model's), so that
    every pass with the same settings reuses one compile.
    """

    def build():
        rep, dat = mesh_lib.replicated(mesh), mesh_lib.data_sharded(mesh)
        init = jax.jit(lambda p: optim_step.StepState(p, tx.init(p)), out_shardings=rep)
        step = jax.jit(optim_step.make_step(lm_loss(model), tx),
                       in_shardings=(rep, {"x": dat, "y": dat, "w": dat, "hparams": rep}),
                       out_shardings=(rep, rep), donate_argnums=(0,))
        return init, step

    return cached(model, ("lm_trainer", mesh, key), build)


class InFlight:
    """At most two steps in flight: after dispatching a step, wait for the one before it.

    Reading one step late keeps the device busy; on the CPU it also avoids a deadlock of
    XLA's in-process collectives when many collective executions queue up.
    """

    def __init__(self) -> None:
        self._prev = None

    def push(self, out) -> None:
        prev, self._prev = self._prev, out
        if prev is not None:
            jax.block_until_ready(prev)


def block_of(path: tuple[str, ...]) -> int | None:
    m = _BLOCK.match(path[0]) if path else None
    return int(m.group(1)) if m else None


def num_blocks(params) -> int:
    return 1 + max((block_of(p) for p in traverse_util.flatten_dict(params) if block_of(p) is not None), default=-1)


def _in_scope(path, leaf, scope: str) -> bool:
    if scope not in SCOPES:
        raise ValueError(f"freeze/depth scope {scope!r}: use one of {SCOPES}")
    return scope == "blocks" or not (path[-1] == "kernel" and np.ndim(leaf) == 2)


def trainable_mask(params, freeze_blocks: int, scope: str, freeze_embed: bool = False):
    """Pytree of bools: False for blocks 0..freeze_blocks-1 (in `scope`) and, if asked, tok_emb."""

    def keep(path, leaf) -> bool:
        b = block_of(path)
        if b is not None and b < freeze_blocks and _in_scope(path, leaf, scope):
            return False
        return not (freeze_embed and path[0] == "tok_emb")

    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({p: keep(p, v) for p, v in flat.items()})


def depth_lr_tree(params, lr: float, lr_min_frac: float, freeze_blocks: int, scope: str):
    """#6's discriminative LR: block i gets lr·(m + (1-m)·(i-F)/max(L-F-1, 1)); the rest lr."""
    L, F = num_blocks(params), freeze_blocks

    def lr_of(path, leaf) -> float:
        b = block_of(path)
        if b is None or b < F or not _in_scope(path, leaf, scope):
            return lr
        frac = (b - F) / max(L - F - 1, 1)
        return lr * (lr_min_frac + (1.0 - lr_min_frac) * frac)

    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({p: lr_of(p, v) for p, v in flat.items()})


def count_trainable(params, mask) -> tuple[int, int]:
    """(trainable, frozen) scalar counts."""
    sizes = [int(np.prod(np.shape(p))) for p in jax.tree.leaves(params)]
    keep = jax.tree.leaves(mask)  # the same structure, so the same leaf order
    return sum(n for n, t in zip(sizes, keep) if t), sum(n for n, t in zip(sizes, keep) if not t)


def cosine(i: int, n: int) -> float:
    """½(1 + cos(π·i/n)); 1 at i = 0, 0 at i = n (n ≥ 1)."""
    return 0.5 * (1.0 + math.cos(math.pi * i / max(n, 1)))


def sequences(tokens: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping (x, y) rows from a token span val[a : b+1] (⌊(b-a)/seq_len⌋ rows)."""
    n = (len(tokens) - 1) // seq_len
    span = np.array(tokens[: n * seq_len + 1], np.int32)  # a copy: callers edit rows (TTT's lookahead)
    return span[:-1].reshape(n, seq_len), span[1:].reshape(n, seq_len)


def padded_rows(x: np.ndarray, y: np.ndarray, rows: int) -> dict:
    """{x, y, w}: the first `rows` rows, zero-padded with weight 0."""
    n = x.shape[0]
    out = {"x": np.zeros((rows, x.shape[1]), np.int32), "y": np.zeros((rows, x.shape[1]), np.int32),
           "w": np.zeros((rows,), np.float32)}
    out["x"][:n], out["y"][:n], out["w"][:n] = x, y, 1.0
    return out
