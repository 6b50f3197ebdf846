"""SLOT: a δ fitted per window at evaluation time and added to the logits
(docs/reference-notes.md#slot-pr1318, #slot-pr1306, #slot-pr1350, #slot-score-first, #slot-pr675).

One jitted function per batch of sliding windows: the model's forward runs once,
hidden states are gathered at the objective and the scored positions only, and the
solver works on those [W, F, V] logits (never the full [W, L, V] tensor). Per-window
δs are `jax.vmap`'d and each device solves its own rows (shard_map, no collectives);
batch-shared δs gather the batch's objective to every device, which all solve the
same problem.

Modes (`eval.slot.mode`); "the objective" is the set of window positions whose
targets the δ is fitted on, s is the window's first scored position:

* context (legal, the default): one δ ∈ ℝ^V per scoring unit, fitted on its context
  [max(0, s−F), s), i.e. targets already scored; warm start from the previous batch's
  last δ.
* score_first (legal; #1735's disabled sequential shape, docs/reference-notes.md#slot-score-first): δ carries from window
  to window (a lax.scan over the batch, then into the next batch); each window first
  refits it on the targets the previous window just scored, [s − min(F, stride), s),
  then scores. (#1735 fits on the previous window's own logits; here the same targets
  are seen through the current window's longer context.)
* pr1318 (the reference): one δ shared by a batch of whole windows, objective
  [L−F, L−1) of every window, including its scored targets and, in a partial window,
  its zero padding (inputs and targets 0, unmasked, as the reference); bf16 addition;
  warm start. Non-compliant.
* pr1350: one δ shared by the batch on [L−F, s): window k+1's objective is window k's
  scored targets. Non-compliant.
* pr675: per window, a hidden δ ∈ ℝ^d plus a logit bias ∈ ℝ^V inside the softcap,
  fitted on the scored positions themselves; `.step` called eval.slot.steps times.
  Non-compliant.
* pr1306: one hidden δ ∈ ℝ^d shared by the batch, eval.slot.steps AdamW steps on the
  context [0, s) of every window. Non-compliant (the batch's windows see each other's
  scored targets).

The harness (golf_jax/eval/harness.py) looks the objective's targets up, writes a
"fit" event to the ledger before each batch's score, and refuses a compliant mode
whose objective would reach a target not yet scored.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec as P

from golf_jax.core import mesh as mesh_lib
from golf_jax.eval import adapt
from golf_jax.eval.compiled import cached, settings_key
from golf_jax.eval.harness import Objective, Reveal
from golf_jax.eval.slot.solver import SOLVERS, LbfgsSettings, SolveInfo, minimize
from golf_jax.eval.windows import Units
from golf_jax.model import layers
from golf_jax.submission.modules import repo_only

# eval.slot.mode -> what it fits, one line each (the error for a bad mode lists them; docs/reference-notes.md#modes).
MODES = {
    "context": "legal: one δ per scoring unit, fitted on its already-scored context [s-F, s)",
    "score_first": "legal: δ carried window to window, refitted on the targets the previous window just scored "
                   "(#1735's disabled sequential SLOT)",
    "pr1318": "PR #1318's SLOT: one δ per batch of 32 windows, fitted on [L-F, L-1), its own scored targets "
              "(non-compliant)",
    "pr1350": "PR #1350's causal L-BFGS SLOT: one δ per batch on [L-F, s), the previous window's scored targets "
              "(non-compliant)",
    "pr675": "PR #675's SLOT: per window a hidden δ and a logit bias fitted on the targets it scores (non-compliant)",
    "pr1306": "PR #1306's causal SLOT: one hidden δ per batch, AdamW steps on every window's context (non-compliant)",
}
COMPLIANT_MODES = ("context", "score_first")
SHARED = ("pr1318", "pr1350", "pr1306")  # one δ per batch
HIDDEN = ("pr675", "pr1306")  # δ lives in the final hidden space
WHY = {
    "pr1318": "eval.slot.mode=pr1318: the batch's δ is fitted on positions [L-F, L-1), which include the targets "
              "it then scores",
    "pr1350": "eval.slot.mode=pr1350: the batch's shared δ is fitted on [L-F, s); window k+1's objective is "
              "window k's scored targets",
    "pr675": "eval.slot.mode=pr675: each window's δ and logit bias are fitted on the targets they then score",
    "pr1306": "eval.slot.mode=pr1306: the batch's shared δ is fitted on every window's context, which holds the "
              "earlier windows' scored targets",
}


@repo_only
def check_config(s, seq_len: int, stride: int) -> None:
    """Every eval.slot key's range, before any compile."""
    from golf_jax.config import described  # the schema: a submission does not pack it

    if s.mode not in MODES:
        raise ValueError(f"eval.slot.mode={s.mode!r}: use one of {described(MODES)}")
    if s.solver not in SOLVERS:
        raise ValueError(f"eval.slot.solver={s.solver!r}: use one of {SOLVERS}")
    if s.max_iter < 1 or s.history < 1 or s.steps < 1 or s.max_eval < 0:
        raise ValueError("eval.slot.max_iter, eval.slot.history and eval.slot.steps must be >= 1, "
                         "eval.slot.max_eval >= 0 (0: ⌊5·max_iter/4⌋)")
    if s.focal < 1:
        raise ValueError(f"eval.slot.focal={s.focal} must be >= 1 (it is capped at the eval seq_len - 1)")
    if s.lr <= 0 or s.clamp < 0:
        raise ValueError("eval.slot.lr must be > 0 and eval.slot.clamp >= 0 (0: no clamp)")
    if s.mode == "pr1306" and (s.adam_lr <= 0 or not (0 <= s.adam_beta1 < 1 and 0 <= s.adam_beta2 < 1)):
        raise ValueError("eval.slot.adam_lr must be > 0 and eval.slot.adam_beta1/adam_beta2 in [0, 1)")
    if s.ranks < 1:
        raise ValueError(f"eval.slot.ranks={s.ranks} must be >= 1 (the reference's world size; 1: one process)")
    if s.mode == "pr1318" and s.focal < 2:
        raise ValueError("eval.slot.focal must be >= 2 for pr1318 (its objective is [L-F, L-1))")


def window_batches(units: Units, batch_windows: int, ranks: int = 1) -> tuple[list[np.ndarray], np.ndarray]:
    """Unit indices of each batch of `batch_windows` whole windows, as the references' loops
    batch them (#1318 L1480): the windows split contiguously over `ranks` processes
    (window w of n to rank r when ⌊n·r/ranks⌋ ≤ w), each rank batching its own from its
    first. Window 0's units stay in one batch. Also returns, per batch, whether it is a
    rank's first (where the reference's warm start begins again from zero)."""
    win = np.cumsum(units.pos == units.window_pos) - 1  # a window's first unit starts at its first scored position
    n = int(win[-1]) + 1 if win.size else 0
    rank_start = np.array([n * r // ranks for r in range(ranks)], np.int64)
    rank = np.searchsorted(rank_start, win, side="right") - 1
    key = rank * (n + 1) + (win - rank_start[rank]) // batch_windows
    cuts = np.flatnonzero(np.diff(key)) + 1
    blocks = np.split(np.arange(win.size), cuts) if win.size else []
    block_rank = rank[np.r_[0, cuts]] if win.size else np.zeros(0, np.int64)
    return blocks, np.r_[True, block_rank[1:] != block_rank[:-1]][: len(blocks)]


def settings(s) -> LbfgsSettings:
    return LbfgsSettings(max_iter=int(s.max_iter), history=int(s.history), lr=float(s.lr), max_eval=int(s.max_eval),
                         ls_budget=bool(s.torch_ls_budget))


def objective(mode: str, units: Units, rows: int, focal: int) -> Objective:
    """The window positions each unit's (or the batch's) δ is fitted on, [rows, F].

    Padding rows (p0 = s = wlen = count = 0) get an empty mask in every mode.
    """
    n, seq_len, S = len(units), units.seq_len, units.stride
    p0 = np.zeros(rows, np.int64)
    s_w = np.zeros(rows, np.int64)
    wlen = np.zeros(rows, np.int64)
    count = np.zeros(rows, np.int64)
    p0[:n], s_w[:n], count[:n] = units.pos, units.window_pos, units.count
    wlen[:n] = np.minimum(units.start + seq_len, units.num_targets) - units.start
    first_unit = (p0 == s_w)[:, None]  # batch-shared objectives count a split window once
    if mode == "context":
        pos = p0[:, None] - focal + np.arange(focal)[None]
        mask = pos >= 0
    elif mode == "score_first":
        w = min(focal, S)
        pos = p0[:, None] - w + np.arange(w)[None]
        mask = pos >= 0
    elif mode == "pr1318":  # a partial window's zero padding counts, as in the reference (its targets are 0)
        pos = np.broadcast_to(seq_len - focal + np.arange(focal - 1)[None], (rows, focal - 1))
        mask = np.broadcast_to((wlen[:, None] > 0) & first_unit, pos.shape)
    elif mode == "pr1350":
        pos = np.broadcast_to(seq_len - focal + np.arange(focal)[None], (rows, focal))
        mask = (pos < s_w[:, None]) & first_unit
    elif mode == "pr1306":
        pos = np.broadcast_to(np.arange(seq_len)[None], (rows, seq_len))
        mask = (pos < s_w[:, None]) & first_unit
    elif mode == "pr675":
        pos = p0[:, None] + np.arange(S)[None]
        mask = np.arange(S)[None] < count[:, None]
    else:
        raise ValueError(f"eval.slot.mode={mode!r}: use one of {list(MODES)}")
    return Objective(np.where(mask, pos, 0).astype(np.int32), mask, shared=mode in SHARED, zero_pad=mode == "pr1318")


def _logit_objective(base_FxV, y_F, mask_F):
    """δ ↦ mean CE of softmax(base + δ) over the masked positions, with exp(base) taken once.

    log Σ_v exp(base_fv + δ_v) = m_f + d + log(E_f · exp(δ − d)) with E = exp(base − m)
    (m_f the row max, d = max δ): each evaluation is two [F, V] mat-vecs (value and
    gradient) instead of a log-softmax over [F, V]. Z_f ≥ exp(−2·softcap) cannot underflow.
    """
    base = base_FxV.astype(jnp.float32)
    m = mask_F.astype(jnp.float32)
    row_max = jnp.max(base, axis=-1)
    e_FxV = jnp.exp(base - row_max[:, None])
    target_logit = jnp.take_along_axis(base, y_F[:, None], axis=-1)[:, 0]
    counts_V = jnp.zeros(base.shape[-1], jnp.float32).at[y_F].add(m)
    n = jnp.maximum(jnp.sum(m), 1.0)
    const = jnp.sum(m * (row_max - target_logit))

    def fun(delta_V):
        d = jax.lax.stop_gradient(jnp.max(delta_V))
        z_F = e_FxV @ jnp.exp(delta_V - d)
        return (const + jnp.sum(m * (jnp.log(z_F) + d)) - counts_V @ delta_V) / n

    return fun


def _masked_ce(logits_FxV, y_F, mask_F):
    """Mean CE over the masked positions (0 when none): the SLOT objective."""
    m = mask_F.astype(jnp.float32)
    return jnp.sum(layers.cross_entropy_BxT(logits_FxV, y_F) * m) / jnp.maximum(jnp.sum(m), 1.0)


class Slot:
    """The SLOT evaluator: predict fits δ on the harness-provided objective, then scores."""

    def __init__(self, model, params, mesh: Mesh, s, seq_len: int, stride: int) -> None:
        check_config(s, seq_len, stride)
        self.name = "slot"
        self.mode, self._s, self._mesh = s.mode, s, mesh
        self.compliant = s.mode in COMPLIANT_MODES
        self.notes = [WHY[s.mode] + " (non-compliant)"] if s.mode in WHY else []
        self._params = params
        self._focal = min(int(s.focal), seq_len - 1)
        # The δ a batch starts from: the previous batch's last one (score_first's chain, or a
        # warm start of a logit-space mode), else zeros; the hidden-space modes start at 0.
        self._carries = s.mode == "score_first" or (s.warm_start and s.mode not in HIDDEN)
        self._vocab = int(model.cfg.vocab_size)
        self._carry = None  # made at the first batch: constructing a Slot allocates nothing (bench --target)
        self._restarts: frozenset = frozenset()
        self.shared = s.mode in SHARED
        self._fn = cached(model, ("slot", mesh, settings_key(s)), lambda: jax.jit(self._build(model)))
        self._in_flight = adapt.InFlight()
        self._diag: list = []

    def zero_delta(self) -> jax.Array:
        """The δ a batch starts from when nothing carries: replicated like the δ each batch returns
        (a first δ on one device would recompile the second batch)."""
        return jnp.zeros((self._vocab,), jnp.float32, device=mesh_lib.replicated(self._mesh))

    def blocks(self, units: Units, batch_windows: int) -> list[np.ndarray]:
        """The harness's blocks: a batch-shared δ's batches of whole windows (each one forward,
        `self.shared`), where a reference rank's first batch starts δ again from zero; else one block."""
        if not self.shared:
            return [np.arange(len(units))]
        blocks, first = window_batches(units, batch_windows, int(self._s.ranks))
        self._restarts = frozenset(np.flatnonzero(first).tolist())
        return blocks

    def objective(self, units: Units, rows: int) -> Objective:
        return objective(self.mode, units, rows, self._focal)

    def predict(self, inputs: dict) -> dict:
        n = inputs["num_units"]
        if self._carry is None:
            self._carry = self.zero_delta()
        logits, base, carry, diag = self._fn(self._params, inputs["x_BxL"], inputs["pos_BxS"], inputs["obj_pos_BxF"],
                                             inputs["obj_y_BxF"], inputs["obj_mask_BxF"], self._carry, np.int32(n - 1))
        if self._carries:
            self._carry = carry
        self._diag.append((diag, n))
        self._in_flight.push(carry)
        return {"logits": logits, "base_logits": base}

    def update(self, reveal: Reveal) -> None:
        # Everything SLOT fits on arrives through the objective, before the score.
        if reveal.block + 1 in self._restarts:
            self._carry = None  # the next batch starts from zero

    def diagnostics(self) -> dict[str, np.ndarray]:
        """Per scoring unit: ‖δ‖₂, solver iterations and objective evaluations."""
        host = jax.device_get([d for d, _ in self._diag])
        cols = {k: np.concatenate([np.asarray(h[k])[:n] for h, (_, n) in zip(host, self._diag)])
                for k in ("delta_norm", "iterations", "evaluations")}
        return cols

    # -- the per-batch function -----------------------------------------------------

    def _build(self, model):
        s, mode, mesh = self._s, self.mode, self._mesh
        d_model = int(model.cfg.model_dim)
        opts = settings(s)
        clamp = float(s.clamp)
        bf16_add = bool(s.bf16_add)
        apply = lambda p, *a, **k: model.apply({"params": p}, *a, **k)  # noqa: E731

        def add(base, delta):
            if bf16_add:  # the reference: bf16 logits + bf16(δ), upcast for the CE
                return (base.astype(jnp.bfloat16) + delta.astype(jnp.bfloat16)).astype(jnp.float32)
            return base + delta

        def clip(delta):
            return jnp.clip(delta, -clamp, clamp) if clamp > 0 else delta

        def solve_logit(base_FxV, y_F, mask_F, delta0):
            if bf16_add:  # rounding after the addition: no factorisation
                fun = lambda d: _masked_ce(add(base_FxV, d), y_F, mask_F)  # noqa: E731
            else:
                fun = _logit_objective(base_FxV, y_F, mask_F)
            delta, info = minimize(fun, delta0, opts, s.solver)
            return clip(delta), info

        def local(params, x, pos, opos, oy, omask, delta0):
            h = apply(params, x, method=model.hidden)
            take = lambda p: jnp.take_along_axis(h, p[..., None], axis=1)  # noqa: E731
            hS, hF = take(pos), take(opos)
            head = lambda hh, bias=None: apply(params, hh, bias, method=model.logits_from_hidden).astype(jnp.float32)  # noqa: E731
            b = x.shape[0]
            gather = lambda v: jax.lax.all_gather(v, mesh_lib.DATA_AXIS, tiled=True)  # noqa: E731
            rank = jax.lax.axis_index(mesh_lib.DATA_AXIS)
            mine = lambda v: jax.lax.dynamic_slice_in_dim(v, rank * b, b)  # noqa: E731
            base_S = head(hS)
            if mode == "context":
                delta, info = jax.vmap(solve_logit, in_axes=(0, 0, 0, None))(head(hF), oy, omask, delta0)
                logits = add(base_S, delta[:, None])
            elif mode == "score_first":

                def chain(d, row):
                    d, info = solve_logit(*row, d)
                    return d, (d, info)

                _, (delta_all, info_all) = jax.lax.scan(chain, delta0, (gather(head(hF)), gather(oy), gather(omask)))
                delta, info = mine(delta_all), jax.tree.map(mine, info_all)
                logits = add(base_S, delta[:, None])
            elif mode in ("pr1318", "pr1350"):
                flat = lambda v: gather(v).reshape(-1, *v.shape[2:])  # noqa: E731  [B·F, ...]: one objective
                d, info = solve_logit(flat(head(hF)), flat(oy), flat(omask), delta0)
                delta = jnp.broadcast_to(d, (b, d.shape[0]))
                info = jax.tree.map(lambda v: jnp.broadcast_to(v, (b,)), info)
                logits = add(base_S, d)
            elif mode == "pr675":

                def solve_row(hF_row, y, m, hS_row):
                    fun = lambda th: _masked_ce(head(hF_row + th[:d_model], th[d_model:]), y, m)  # noqa: E731
                    th, info = minimize(fun, jnp.zeros(d_model + delta0.shape[0]), opts, s.solver, calls=int(s.steps))
                    return th, info, head(hS_row + th[:d_model], th[d_model:])

                delta, info, logits = jax.vmap(solve_row)(hF.astype(jnp.float32), oy, omask, hS.astype(jnp.float32))
            else:  # pr1306: AdamW on one hidden δ for the batch
                hF_all, y_all, m_all = gather(hF.astype(jnp.float32)), gather(oy), gather(omask)
                fun = lambda d: _masked_ce(head(hF_all + d), y_all, m_all)  # noqa: E731
                tx = optax.adamw(float(s.adam_lr), b1=float(s.adam_beta1), b2=float(s.adam_beta2),
                                 eps=float(s.adam_eps), weight_decay=float(s.adam_weight_decay))

                def adam_step(c, _):
                    d, st = c
                    g = jax.grad(fun)(d)
                    upd, st = tx.update(g, st, d)
                    return (optax.apply_updates(d, upd), st), None

                d0 = jnp.zeros((d_model,), jnp.float32)
                (d, _), _ = jax.lax.scan(adam_step, (d0, tx.init(d0)), None, length=int(s.steps))
                delta = jnp.broadcast_to(d, (b, d.shape[0]))
                steps = jnp.full((b,), int(s.steps), jnp.int32)
                info = SolveInfo(jnp.zeros((b,)), steps, steps)
                logits = head(hS.astype(jnp.float32) + d)
            diag = {"delta_norm": jnp.linalg.norm(delta, axis=-1), "iterations": info.iterations,
                    "evaluations": info.evaluations}
            return logits, base_S, delta, diag

        spec = P(mesh_lib.DATA_AXIS)
        sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), spec, spec, spec, spec, spec, P()),
                                out_specs=(spec, spec, spec, spec), check_vma=False)

        def batch(params, x, pos, opos, oy, omask, delta0, last):
            logits, base, delta, diag = sharded(params, x, pos, opos, oy, omask, delta0)
            return logits, base, delta[last], diag

        return batch


def summary(s, units, res, diag: dict, run) -> dict:
    """The SLOT stage's diagnostics: bpb with and without δ on the same windows, solver effort.

    Per scoring unit (for plots and the audit) they go to `slot_windows.npz` in the run dir.
    """
    if run is not None and run.is_writer:
        np.savez_compressed(run.path / "slot_windows.npz", first_target=units.first_target, count=units.count,
                            nll_with=res.unit_nll[:, 0], nll_without=res.unit_nll[:, 1], **diag)
    return {"mode": s.mode, "solver": s.solver, "windows": len(units),
            "val_bpb_without_slot": res.base_acc.val_bpb, "slot_gain_bpb": res.acc.val_bpb - res.base_acc.val_bpb,
            "mean_iterations": float(np.mean(diag["iterations"])),
            "mean_evaluations": float(np.mean(diag["evaluations"])),
            "mean_delta_norm": float(np.mean(diag["delta_norm"]))}
