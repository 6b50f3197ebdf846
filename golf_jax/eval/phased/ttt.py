"""Phased score-first TTT, eval.ttt.mode="phased" (docs/reference-notes.md#phased-ttt; PR #1855).

The 1.0611 record's evaluation: every document is scored alone, chunk by chunk, by the
base weights plus a per-document LoRA (golf_jax/eval/phased/lora.py) that takes one AdamW step
on each chunk right after the harness has scored it (never on a document's last chunk).
Three times during the first eval.phased.prefix_docs documents, once the documents of a
phase are all scored, the base weights take a pass of SGD over those already-scored
documents; later documents are scored with the updated base plus a fresh LoRA.

What runs when is fixed up front by golf_jax/eval/phased/plan.py from the document
lengths (a deterministic order, so runs are bit-reproducible). Everything goes through
the harness (golf_jax/eval/harness.py): a block is one chunk of every document of a
round; `predict` runs the vmap'd LoRA forward and keeps its VJP; only after the block is
scored does `update` read the block's targets (Reveal, logged in the ledger) and apply
the LoRA step through that VJP, and at a phase boundary read the phase's documents for
the global SGD. So no LoRA or global step can read a target before it is scored.

Differences from #1855, all deliberate: the order (see phased_plan; #1855's depends on
rank timing), global SGD sequences are rows of eval seq_len with attention cut at each
BOS and at row ends (#1855's varlen rows can continue across two sequences of a rank),
and A is carried per row across rounds within a phase also for a partial round (#1855
draws a fresh A for its one partial batch). No global-SGD warmup (#1855's default 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from golf_jax.core import mesh as mesh_lib
from golf_jax.eval import adapt, harness
from golf_jax.eval.phased import lora as lora_lib, plan as phased_plan
from golf_jax.eval.compiled import cached
from golf_jax.eval.harness import Reveal
from golf_jax.model import layers
from golf_jax.model.embeddings import BOS_ID
from golf_jax.optim import step as optim_step
from golf_jax.optim.build import build_adaptation_optimizer
from golf_jax.submission.modules import repo_only


@repo_only
def check_config(p, seq_len: int, used: bool = True) -> None:
    """eval.phased.* ranges (always) and their fit to the eval seq_len (when the mode runs)."""
    modules = [s.strip() for s in str(p.lora_modules).split(",") if s.strip()]
    if not modules or len(set(modules)) != len(modules) or set(modules) - set(lora_lib.MODULES):
        raise ValueError(f"eval.phased.lora_modules={p.lora_modules!r}: a comma-separated subset of "
                         f"{','.join(lora_lib.MODULES)}, each once")
    for key in ("chunk_size", "batch_docs", "lora_rank", "num_phases", "global_chunk_tokens", "global_batch_seqs"):
        if p[key] < 1:
            raise ValueError(f"eval.phased.{key}={p[key]} must be >= 1")
    for key in ("prefix_docs", "global_epochs", "lora_lr", "weight_decay", "global_lr", "global_grad_clip"):
        if p[key] < 0:
            raise ValueError(f"eval.phased.{key}={p[key]} must be >= 0")
    for key in ("beta1", "beta2", "global_momentum"):
        if not 0.0 <= p[key] < 1.0:
            raise ValueError(f"eval.phased.{key}={p[key]} must be in [0, 1)")
    if p.lora_alpha <= 0 or p.eps <= 0:
        raise ValueError("eval.phased.lora_alpha and eval.phased.eps must be > 0")
    if 0 < p.prefix_docs < p.num_phases:
        raise ValueError(f"eval.phased.prefix_docs={p.prefix_docs} is fewer than num_phases={p.num_phases}: "
                         "a phase would train on no document; use 0 (no global phases) or >= num_phases")
    if not used:
        return
    if p.chunk_size > seq_len:
        raise ValueError(f"eval.phased.chunk_size={p.chunk_size} exceeds the eval seq_len {seq_len}: a chunk must "
                         "fit in its window")
    if p.prefix_docs and p.global_epochs and p.global_chunk_tokens < seq_len:
        raise ValueError(f"eval.phased.global_chunk_tokens={p.global_chunk_tokens} is shorter than one sequence "
                         f"(eval seq_len {seq_len}); the global phases would train on nothing")


def modules_of(p) -> tuple[str, ...]:
    return tuple(s.strip() for s in str(p.lora_modules).split(",") if s.strip())


def _lora_fns(model, mesh, p):
    """(forward with its VJP, LoRA AdamW step through a VJP): the forward compiled once per
    model (per width), the step once per AdamW settings."""

    def fwd(params, lora, scale, x_BxW, pos_BxS):
        return jax.vjp(lambda l: lora_lib.forward(model, params, l, scale, x_BxW, pos_BxS), lora)

    hp = lora_lib.AdamW(float(p.lora_lr), float(p.beta1), float(p.beta2), float(p.eps), float(p.weight_decay))

    def step(lora, opt, pullback, logits, y_BxS, w_BxS, t):
        (grads,) = pullback(lora_lib.chunk_cotangent(logits, y_BxS, w_BxS))
        return lora_lib.adamw(lora, grads, opt, t, hp)

    dat = mesh_lib.data_sharded(mesh)
    return (cached(model, ("phased_forward", mesh), lambda: jax.jit(fwd)),
            cached(model, ("phased_step", mesh, hp),
                   lambda: jax.jit(step, out_shardings=(dat, dat), donate_argnums=(0, 1))))


def _global_trainer(model, mesh, p, params):
    """(init, step) of the global SGD: torch SGD (momentum, dampening 0) on every base
    weight, global-norm clip, LR lr·lr_scale; the LM loss with attention cut at each BOS."""

    def loss_fn(params, batch):
        logits = model.apply({"params": params}, batch["x"], segment_ids_BxT=batch["seg"])
        nll_BxT = layers.cross_entropy_BxT(logits, batch["y"])
        w_B = batch["w"].astype(jnp.float32)
        return jnp.sum(nll_BxT * w_B[:, None]) / jnp.maximum(jnp.sum(w_B) * nll_BxT.shape[1], 1.0), {}

    def build():
        rep, dat = mesh_lib.replicated(mesh), mesh_lib.data_sharded(mesh)
        trainable = traverse_util.unflatten_dict({k: True for k in traverse_util.flatten_dict(params)})
        tx = build_adaptation_optimizer("sgd", float(p.global_lr), trainable, momentum=float(p.global_momentum),
                                        grad_clip=float(p.global_grad_clip))
        init = jax.jit(lambda q: optim_step.StepState(q, tx.init(q)), out_shardings=rep)
        step = jax.jit(optim_step.make_step(loss_fn, tx),
                       in_shardings=(rep, {"x": dat, "y": dat, "w": dat, "seg": dat, "hparams": rep}),
                       out_shardings=(rep, rep), donate_argnums=(0,))
        return init, step

    key = tuple(p[k] for k in ("global_lr", "global_momentum", "global_grad_clip"))
    return cached(model, ("phased_global", mesh, key), build)


def global_sgd(trainer, mesh, params, tokens: np.ndarray, seq_len: int, p) -> tuple[object, int]:
    """One phase (#1855's train_val_ttt_global_sgd_distributed): chunks of global_chunk_tokens
    targets of the concatenated documents, LR lr·½(1 + cos(π·c/(K−1))) at chunk c, the last
    chunk skipped; each chunk's whole eval-seq_len rows, global_batch_seqs per step,
    global_epochs passes. Returns (params, steps)."""
    init, step = trainer
    state, steps, in_flight = init(params), 0, adapt.InFlight()
    total, C = len(tokens) - 1, int(p.global_chunk_tokens)
    K = max(-(-total // C), 1)
    rows = harness.batch_rows(int(p.global_batch_seqs), mesh)
    for c in range(K - 1):  # the is_last_chunk guard
        a = c * C
        x, y = adapt.sequences(tokens[a : min(a + C, total) + 1], seq_len)
        if not x.shape[0]:
            continue
        lr_scale = np.float32(adapt.cosine(c, K - 1))
        for _ in range(int(p.global_epochs)):
            for s in range(0, x.shape[0], rows):
                batch = adapt.padded_rows(x[s : s + rows], y[s : s + rows], rows)
                batch["seg"] = np.cumsum(batch["x"] == BOS_ID, axis=1).astype(np.int32)
                batch = {k: mesh_lib.put_global_batch(mesh, v) for k, v in batch.items()}
                batch["hparams"] = {"lr_scale": lr_scale}
                state, metrics = step(state, batch)
                in_flight.push(metrics["loss"])
                steps += 1
    return state.params, steps


class PhasedTTT:
    """The harness evaluator: per-document LoRA steps after each block, global SGD after
    the rounds the plan names."""

    compliant = True

    def __init__(self, model, params, mesh, p, plan: phased_plan.Plan, seq_len: int) -> None:
        self.name, self.notes = "ttt", []
        self._model, self._mesh, self._p, self._plan, self._L = model, mesh, p, plan, seq_len
        self._fwd, self._step = _lora_fns(model, mesh, p)
        self._trainer = _global_trainer(model, mesh, p, params)
        self._modules = modules_of(p)
        self._scale = jnp.float32(float(p.lora_alpha) / int(p.lora_rank))
        self._key = jax.random.PRNGKey(int(p.seed))
        self.params = params
        self._new_lora(phase=0, round_=0)
        self._pending = None
        self._t = 0  # AdamW steps of this round (#1855 zeroes its state per batch)
        self.lora_steps = self.global_steps = 0
        self.phase_log: list[dict] = []

    def _new_lora(self, phase: int, round_: int) -> None:
        """Fresh adapters (a new phase, or every round without warm-start A); else B reset."""
        p = self._p
        if round_ == 0 or not p.warm_start_a:
            key = jax.random.fold_in(jax.random.fold_in(self._key, phase), round_)
            lora = lora_lib.init(key, self._model.cfg, int(p.lora_rank), self._modules, self._plan.rows)
        else:
            lora = lora_lib.zero_b(self.lora)
        self.lora = jax.device_put(lora, mesh_lib.data_sharded(self._mesh))
        self._opt = jax.device_put(lora_lib.adamw_init(self.lora), mesh_lib.data_sharded(self._mesh))
        self._t = 0

    def predict(self, inputs: dict) -> jax.Array:
        logits, pullback = self._fwd(self.params, self.lora, self._scale, inputs["x_BxL"], inputs["pos_BxS"])
        self._pending = (logits, pullback)
        return logits

    def update(self, reveal: Reveal) -> None:
        plan, b = self._plan, reveal.block
        logits, pullback = self._pending
        self._pending = None
        rows, first, count = self._chunk_reads(b)
        if rows.size:
            y = np.zeros((plan.rows, plan.chunk), np.int32)
            w = np.zeros((plan.rows, plan.chunk), np.float32)
            for r, tok in zip(rows, reveal.read_many(first, first + count)):
                y[r, : len(tok) - 1] = tok[1:]
                w[r, : len(tok) - 1] = 1.0 / (len(tok) - 1)
            self._t += 1
            self.lora, self._opt = self._step(self.lora, self._opt, pullback, logits,
                                              mesh_lib.put_global_batch(self._mesh, y),
                                              mesh_lib.put_global_batch(self._mesh, w), jnp.int32(self._t))
            self.lora_steps += 1
        del logits, pullback  # the forward's residuals
        if not plan.round_end[b]:
            return
        k = int(plan.block_round[b])
        phase = plan.phase_after(k)
        if phase is not None:
            self._global_phase(reveal, phase)
        if k + 1 < len(plan.rounds):
            self._new_lora(phase=len(self.phase_log), round_=0 if phase is not None else k + 1)

    def _chunk_reads(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, first target, count) of what block b's LoRA step trains on: each row's
        chunk just scored, unless it is its document's last."""
        rows = np.flatnonzero(self._plan.train[b])
        return rows, self._plan.first[b, rows], self._plan.count[b, rows]

    def _global_phase(self, reveal: Reveal, phase: phased_plan.Phase) -> None:
        docs = self._plan.docs
        start = docs.start[phase.docs]
        parts = reveal.read_many(start, start + docs.targets[phase.docs])  # each document with its final BOS
        tokens = np.concatenate(parts) if parts else np.zeros(1, np.int32)
        self.params, steps = global_sgd(self._trainer, self._mesh, self.params, tokens, self._L, self._p)
        self.global_steps += steps
        self.phase_log.append({"phase": phase.index + 1, "after_round": phase.after_round,
                               "documents": int(len(phase.docs)), "tokens": int(len(tokens)), "steps": steps})


def evaluate(cfg, model, params, val_tokens: np.ndarray, mesh, seq_len: int, score, documents=None):
    """Run the phased stage through the harness: (HarnessResult, summary dict).

    `score(evaluator, units, blocks, rows=...) -> HarnessResult`: the harness as the stages
    run it (golf_jax/eval/stages.py: the stream, the stage's ledger, the audit's inspection,
    eval.profile's tracing). `documents`: declared document starts (the audit keeps its
    slice's for every rerun); default: the BOS positions of `val_tokens`.
    """
    p = cfg.eval.phased
    docs = (phased_plan.find_documents(val_tokens) if documents is None
            else phased_plan.documents_from_starts(documents, len(val_tokens)))
    rows = harness.batch_rows(int(p.batch_docs), mesh)
    plan = phased_plan.build(docs, rows, int(p.batch_docs), int(p.chunk_size), seq_len, int(p.prefix_docs),
                             int(p.num_phases))
    evaluator = PhasedTTT(model, params, mesh, p, plan, seq_len)
    res = score(evaluator, plan.units, plan.blocks, rows=rows)
    extra = {"mode": "phased", "documents": len(docs), "rounds": len(plan.rounds), "blocks": len(plan.blocks),
             "rows": rows, "lora_steps": evaluator.lora_steps, "global_steps": evaluator.global_steps,
             "phases": evaluator.phase_log,
             "order": "documents by length, longest first (ties in stream order), in rounds of "
                      f"{int(p.batch_docs)}; chunk c of every document of a round per block"}
    return res, extra
