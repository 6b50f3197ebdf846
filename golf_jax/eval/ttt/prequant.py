"""Pre-quant TTT on the validation set (NON-COMPLIANT; for reproducing seed PRs only).

It runs after averaging and before calibration, and trains for several epochs on
every val token before any of them is scored: condition 3 ("only train on tokens
already evaluated") fails by design, and the run's score is labelled
"non-compliant (reproduction)". Modes (eval.prequant_ttt.mode):

* "flat" (#1306 / #1350, docs/reference-notes.md#prequant-flat): AdamW, LR cosine per epoch toward lr_floor,
  data-parallel over contiguous per-device sequence ranges, gradient mean, clip.
* "discriminative" (#6, docs/reference-notes.md#prequant-discriminative): as flat, with block i's LR scaled by
  m + (1-m)·i/(L-1). depth_scope "scalars" is the reference (the scale reaches only the
  block scalars; the banked matrices train at the base LR), "blocks" the intended one.
* "parallel" (#1735 / #1758, docs/reference-notes.md#prequant-parallel): local SGD. Device r trains its own replica with its
  own AdamW state on chunks r, r+W, r+2W, … (one step per chunk); after every epoch
  the replicas' weights (not gradients, not moments) are averaged (shard_map + pmean).
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from golf_jax.core import mesh as mesh_lib
from golf_jax.eval import adapt
from golf_jax.eval.compiled import cached, settings_key
from golf_jax.optim import step as optim_step
from golf_jax.optim.build import build_adaptation_optimizer
from golf_jax.submission.modules import repo_only

# eval.prequant_ttt.mode -> what it runs (all but "off" train on val before scoring it: non-compliant).
MODES = {
    "off": "no pre-quant TTT (legal)",
    "flat": "PR #1306 / #1350: AdamW on val, LR cosine per epoch toward lr_floor",
    "discriminative": "PR #6: as flat, with block i's LR scaled by depth_lr_min + (1-depth_lr_min)·i/(L-1)",
    "parallel": "PR #1735 / #1758: local AdamW per device on chunks r, r+W, ..., weights averaged every epoch",
}


@repo_only
def check_config(p) -> None:
    from golf_jax.config import described  # the schema: a submission does not pack it

    if p.mode not in MODES:
        raise ValueError(f"eval.prequant_ttt.mode={p.mode!r}: use one of {described(MODES)}")
    if p.mode != "off" and (p.epochs < 1 or p.batch_seqs < 1 or p.lr < 0 or p.chunk_tokens < 1):
        raise ValueError("eval.prequant_ttt: epochs, batch_seqs and chunk_tokens must be >= 1 and lr >= 0")
    for key in ("freeze_scope", "depth_scope"):
        if p[key] not in adapt.SCOPES:
            raise ValueError(f"eval.prequant_ttt.{key}={p[key]!r}: use one of {adapt.SCOPES}")


class Adaptation(NamedTuple):
    """What pre-quant TTT trains with: the optimizer, and the mask of the leaves it moves."""

    tx: Any
    trainable: Any


def build_tx(p, params) -> Adaptation:
    trainable = adapt.trainable_mask(params, p.freeze_blocks, p.freeze_scope, p.freeze_embed)
    lr = (adapt.depth_lr_tree(params, float(p.lr), float(p.depth_lr_min), p.freeze_blocks, p.depth_scope)
          if p.mode == "discriminative" else float(p.lr))
    tx = build_adaptation_optimizer("adamw", lr, trainable, floor=float(p.lr_floor), b1=float(p.beta1),
                                    b2=float(p.beta2), eps=float(p.eps), weight_decay=float(p.weight_decay),
                                    grad_clip=float(p.grad_clip))
    return Adaptation(tx, trainable)


def run(model, params, val_tokens: np.ndarray, seq_len: int, p, mesh: Mesh, log=print):
    """The adapted params (replicated) and a report; `params` is not modified."""
    check_config(p)
    adaptation = build_tx(p, params)
    n_train, n_frozen = adapt.count_trainable(params, adaptation.trainable)
    log(f"prequant_ttt {p.mode}: NON-COMPLIANT (trains on val before scoring it); {p.epochs} epochs, "
        f"lr {p.lr} → {p.lr_floor}, trainable {n_train:,} frozen {n_frozen:,}")
    t0 = time.perf_counter()
    fn = _parallel if p.mode == "parallel" else _data_parallel
    params, steps = fn(model, adaptation, params, val_tokens, seq_len, p, mesh, log)
    jax.block_until_ready(params)
    seconds = time.perf_counter() - t0
    return params, {"mode": p.mode, "epochs": int(p.epochs), "steps": steps, "seconds": seconds,
                    "trainable": n_train, "frozen": n_frozen}


def read_before_scoring(val, mode: str):
    """`val` (golf_jax.eval.stages.Val) after pre-quant TTT: every target was read before the
    stages score it, which each of their ledgers flags."""
    return val._replace(prior_reads=[(0, len(val.tokens) - 1)],
                        prior_notes=[f"eval.prequant_ttt.mode={mode}: the weights were trained on all of val before scoring"])


def rank_ranges(total: int, world: int) -> list[tuple[int, int]]:
    """Device r's contiguous share [⌊total·r/W⌋, ⌊total·(r+1)/W⌋) (the reference's split)."""
    return [(total * r // world, total * (r + 1) // world) for r in range(world)]


def _data_parallel(model, adaptation: Adaptation, params, val_tokens, seq_len, p, mesh, log):
    """flat / discriminative: each step takes the k-th mini-batch of every device's range."""
    W = mesh.devices.size
    x_all, y_all = adapt.sequences(val_tokens, seq_len)
    ranges = rank_ranges(x_all.shape[0], W)
    per = p.batch_seqs
    steps_per_epoch = -(-max(b - a for a, b in ranges) // per)
    init, step = adapt.lm_trainer(model, adaptation.tx, mesh, ("prequant_ttt", settings_key(p)))
    state = init(params)
    steps, in_flight = 0, adapt.InFlight()
    for e in range(p.epochs):
        hp = {"lr_scale": np.float32(adapt.cosine(e, p.epochs))}
        for k in range(steps_per_epoch):
            shares = [slice(min(a + k * per, b), min(a + (k + 1) * per, b)) for a, b in ranges]
            parts = [adapt.padded_rows(x_all[s], y_all[s], per) for s in shares]
            rows = {key: np.concatenate([q[key] for q in parts]) for key in ("x", "y", "w")}
            batch = {key: mesh_lib.put_global_batch(mesh, v) for key, v in rows.items()}
            state, metrics = step(state, {**batch, "hparams": hp})
            steps += 1
            in_flight.push(metrics["loss"])
        log(f"prequant_ttt epoch {e + 1}/{p.epochs}: loss {float(metrics['loss']):.4f} "
            f"lr_scale {float(hp['lr_scale']):.3f}")
    return state.params, steps


def parallel_chunks(val_tokens: np.ndarray, seq_len: int, chunk_tokens: int):
    """Per chunk: its (x, y) sequences (⌊len/seq_len⌋ rows, as the reference)."""
    T = len(val_tokens) - 1
    out = []
    for a in range(0, T, chunk_tokens):
        b = min(a + chunk_tokens, T)
        out.append(adapt.sequences(val_tokens[a : b + 1], seq_len))
    return out


def _parallel(model, adaptation: Adaptation, params, val_tokens, seq_len, p, mesh, log):
    W = mesh.devices.size
    chunks = parallel_chunks(val_tokens, seq_len, p.chunk_tokens)
    rows = max(max(c[0].shape[0] for c in chunks), 1)
    steps_per_epoch = -(-len(chunks) // W)
    sharded_step, sharded_average, replicate, first = cached(
        model, ("prequant_parallel", mesh, settings_key(p)), lambda: _parallel_fns(model, adaptation, mesh))
    state = replicate(params)
    steps, in_flight = 0, adapt.InFlight()
    for e in range(p.epochs):
        hp = {"lr_scale": np.float32(adapt.cosine(e, p.epochs))}
        for k in range(steps_per_epoch):
            parts, active = [], np.zeros((W,), bool)
            for r in range(W):
                c = r + k * W
                x, y = chunks[c] if c < len(chunks) else (np.zeros((0, seq_len), np.int32),) * 2
                active[r] = x.shape[0] > 0
                parts.append(adapt.padded_rows(x, y, rows))
            batch = {key: mesh_lib.put_global_batch(mesh, np.stack([q[key] for q in parts])) for key in ("x", "y", "w")}
            state, loss_W = sharded_step(state, batch, mesh_lib.put_global_batch(mesh, active), hp)
            steps += 1
            in_flight.push(loss_W)
        state = sharded_average(state)
        log(f"prequant_ttt epoch {e + 1}/{p.epochs}: replicas averaged, mean loss "
            f"{float(np.mean(np.asarray(loss_W))):.4f} lr_scale {float(hp['lr_scale']):.3f}")
    return first(state), steps


def _parallel_fns(model, adaptation: Adaptation, mesh: Mesh):
    """The jitted pieces of the parallel mode: per-replica step, replica average, replicate, take one."""
    W = mesh.devices.size
    tx, trainable = adaptation
    rsh = NamedSharding(mesh, P(mesh_lib.DATA_AXIS))
    step = optim_step.make_step(adapt.lm_loss(model), tx)

    def local_step(state_1, batch_1, active_1, hp):
        """One device's step on its replica (leading axis 1 = this device's slice)."""
        state = jax.tree.map(lambda v: v[0], state_1)
        batch = jax.tree.map(lambda v: v[0], batch_1)
        new, metrics = step(state, {**batch, "hparams": hp})
        new = jax.tree.map(lambda n, o: jnp.where(active_1[0], n, o), new, state)
        return jax.tree.map(lambda v: v[None], new), metrics["loss"][None]

    spec = P(mesh_lib.DATA_AXIS)
    sharded_step = jax.jit(jax.shard_map(local_step, mesh=mesh, in_specs=(spec, spec, spec, P()),
                                         out_specs=(spec, spec)), donate_argnums=(0,))

    def average(state_1):
        """pmean of the trainable weights (as the reference; frozen ones stay bit-exact)."""
        mean = lambda v, t: jax.lax.pmean(v, mesh_lib.DATA_AXIS) if t else v  # noqa: E731
        return state_1.replace(params=jax.tree.map(mean, state_1.params, trainable))

    sharded_average = jax.jit(jax.shard_map(average, mesh=mesh, in_specs=(spec,), out_specs=spec), donate_argnums=(0,))
    replicate = jax.jit(lambda q: jax.tree.map(lambda v: jnp.broadcast_to(v, (W, *v.shape)),
                                               optim_step.StepState(q, tx.init(q))), out_shardings=rsh)
    first = jax.jit(lambda s: jax.tree.map(lambda v: v[0], s.params), out_shardings=mesh_lib.replicated(mesh))
    return sharded_step, sharded_average, replicate, first
