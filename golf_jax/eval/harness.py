"""The evaluation harness: predict → record → reveal → update (docs/reference-notes.md#harness).

Every evaluator (a fixed model, TTT, later SLOT) is written against one interface:

1. `evaluator.predict(inputs)` gets a batch's *inputs* only (window tokens `x_BxL`, the
   positions to score `pos_BxS`, and `num_units`, how many leading rows are real) and
   returns logits [B, S, V] at those positions (or {"logp": ...}, its own
   log-distribution, which the harness checks sums to 1);
2. the harness turns logits into a normalised log-distribution itself (log-softmax in
   fp32), looks the targets up, and adds NLL and bytes to float64 sums;
3. only then, at the end of a block, it *reveals* the block's targets: the evaluator
   reads tokens through `Reveal.read`, which logs every range it reads;
4. `evaluator.update(reveal)` may adapt (train, fit, cache) from what it read.

An evaluator that fits something per batch before scoring it (SLOT) declares the
positions of its objective with `objective(units, rows) -> Objective`; the harness
looks their targets up itself, hands them over as obj_y_BxF, and writes a "fit"
event to the ledger before the batch's score: each unit's δ may only use targets
scored before that unit.

So a compliant evaluator cannot see a target before it is scored: `Reveal.read` of a
range not yet scored raises, and so does an objective that reaches a unit's own or
later targets. An evaluator that a flag marks non-compliant (e.g. TTT's
1-token lookahead) may read ahead; the read is logged, and the ledger's verify()
names it. The ledger (golf_jax/eval/ledger.py) records ranges, not rows.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from golf_jax.core import mesh as mesh_lib
from golf_jax.data.tokenizer import ByteLUT, target_bytes
from golf_jax.eval.bpb import BpbAccumulator
from golf_jax.eval.compiled import cached
from golf_jax.eval.ledger import Ledger
from golf_jax.eval.windows import Units, gather_batch, unit_ranges
from golf_jax.core.progress import progress


NORMALIZATION_TOL = 1e-5  # |log Σ_v p(v)| of an evaluator's own fp32 log-distribution (docs/reference-notes.md#checker C2)


class ComplianceError(RuntimeError):
    """A compliant evaluator tried to read a target before it was scored."""


class Evaluator(Protocol):
    name: str
    compliant: bool  # False: a flag put it outside the harness's guarantees
    notes: list[str]  # why it is non-compliant, or what it does

    def predict(self, inputs: dict) -> jax.Array | dict:
        """Logits [B, S, V] at inputs["pos_BxS"] of windows inputs["x_BxL"] (device arrays);
        or a dict: {"logits", "base_logits"} (SLOT: with and without its fit) or {"logp"}
        (a log-distribution of the evaluator's own, used as it is)."""

    def update(self, reveal: Reveal) -> None:
        """Adapt from the targets just revealed (read through reveal.read)."""


@dataclass
class Objective:
    """Where a batch's fit reads targets: window positions [rows, F] and which are used.

    `shared`: one δ for the whole batch, so every unit depends on every row's objective.
    `zero_pad`: positions past the stream's last target count, with target 0 (a partial
    window's zero padding, which #1318's SLOT leaves unmasked).
    """

    pos_BxF: np.ndarray
    mask_BxF: np.ndarray
    shared: bool = False
    zero_pad: bool = False


class Reveal:
    """What the harness hands an evaluator after a block: its targets, read through a log."""

    def __init__(self, val_tokens: np.ndarray, scored, block: int, num_blocks: int, compliant: bool) -> None:
        self._val, self._scored, self._compliant = val_tokens, scored, compliant
        self.block, self.num_blocks = block, num_blocks
        self.num_targets = len(val_tokens) - 1
        self.reads: list[tuple[int, int]] = []

    @property
    def is_last(self) -> bool:
        return self.block == self.num_blocks - 1

    def read(self, a: int, b: int) -> np.ndarray:
        """A copy of tokens val[a : b+1]: the inputs and targets of targets [a, b)."""
        if a < 0 or b > len(self._val) - 1 or b <= a:
            raise ValueError(f"Reveal.read({a}, {b}): targets must lie in [0, {len(self._val) - 1})")
        if self._compliant and not self._scored(a, b):
            raise ComplianceError(
                f"evaluator read targets [{a}, {b}) before they were scored; only scored targets may be "
                "trained on (mark the evaluator non-compliant to reproduce such a procedure)")
        self.reads.append((a, b))
        return self._val[a : b + 1].copy()  # a copy: an evaluator that edits what it read cannot edit val

    def read_many(self, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
        """read(a[i], b[i]) for every i, checked in one vectorised pass (phased TTT reads
        hundreds of document chunks per block)."""
        a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
        if a.size and (a.min() < 0 or b.max() > len(self._val) - 1 or (b <= a).any()):
            raise ValueError(f"Reveal.read_many: every range must be non-empty and lie in [0, {len(self._val) - 1})")
        if self._compliant and a.size and not np.all(self._scored(a, b)):
            k = int(np.flatnonzero(~np.broadcast_to(self._scored(a, b), a.shape))[0])
            raise ComplianceError(
                f"evaluator read targets [{a[k]}, {b[k]}) before they were scored; only scored targets may be "
                "trained on (mark the evaluator non-compliant to reproduce such a procedure)")
        self.reads.extend(zip(a.tolist(), b.tolist()))
        return [self._val[x : y + 1].copy() for x, y in zip(a.tolist(), b.tolist())]


class Inspection(NamedTuple):
    """What the audit (golf_jax/audit) asks of a run beyond its scores: built once by the audit
    and handed to run_stages, which passes it on; production runs with the defaults (None).

    `record_nll` keeps every target's NLL, `probe_targets` the full log-distribution at those
    targets, `enforce=False` lets every evaluator read ahead so that the ledger, not an
    exception, shows it; `custom` (a factory of stages.EvalContext) replaces the config's
    stages, and `documents` declares phased TTT's document starts (default: the BOS positions).
    """

    record_nll: bool = False
    probe_targets: object = None
    enforce: bool = True
    custom: object = None
    documents: object = None


class Schedule(NamedTuple):
    """What a stage scores and in which order: `units` (windows) in `blocks` (index arrays into
    units; the evaluator may update after each), batched `rows` at a time (`whole_blocks`: a
    block is one batch of at least `rows` rows, for a fit shared by a batch of windows)."""

    units: Units
    blocks: list
    rows: int
    whole_blocks: bool = False


class Probe(NamedTuple):
    """The full log-distribution at a probed target, and the NLL the harness recorded there."""

    logp: np.ndarray  # float32 [V]
    nll: float


class _Batch(NamedTuple):
    """A scored batch waiting for its sums to reach the host (read in _drain)."""

    nll_sum: object  # device [rows] NLL sums
    base_sum: object  # device [rows] NLL sums without the fit, or None
    units: int  # the leading rows that are real
    tokens: int
    bytes: int
    recorded: tuple | None  # (nll_BxS, target, mask) with Inspection.record_nll
    block: int


@dataclass
class HarnessResult:
    acc: BpbAccumulator
    ledger: Ledger
    nll: np.ndarray | None = None  # per target (NaN where unscored; the last score wins), when asked
    base_acc: BpbAccumulator | None = None  # the same windows scored with predict's "base_logits", if any
    unit_nll: np.ndarray | None = None  # [units, 2] float64 NLL sums (with, without) when base logits exist
    max_abs_logsumexp: float | None = None  # worst |log Σ p| of an evaluator's own "logp" (None: logits)
    probes: dict | None = None  # {target: Probe} at the asked targets
    blocks: np.ndarray | None = None  # [blocks, 3] float64 per block: NLL sum (nats), tokens, bytes


def make_predict(model):
    """Logits of a fixed model at the scored positions only: hidden states are gathered
    at pos_BxS before the vocabulary projection, so [B, L, V] logits are never built."""

    def predict(params, x_BxL, pos_BxS):
        h_BxLxD = model.apply({"params": params}, x_BxL, method=model.hidden)
        h_BxSxD = jnp.take_along_axis(h_BxLxD, pos_BxS[..., None], axis=1)
        return model.apply({"params": params}, h_BxSxD, method=model.logits_from_hidden)

    return predict


def jit_predict(predict, mesh: Mesh):
    rep, dat = mesh_lib.replicated(mesh), mesh_lib.data_sharded(mesh)
    return jax.jit(predict, in_shardings=(rep, dat, dat), out_shardings=dat)


def model_predict(model, mesh: Mesh):
    """jit_predict(make_predict(model), mesh), compiled once per (model, mesh)."""
    return cached(model, ("predict", mesh), lambda: jit_predict(make_predict(model), mesh))


def _score(logits_BxSxV, y_BxS, mask_BxS):
    """Per-position NLL from the harness's own log-softmax (a normalised distribution)."""
    return _score_logp(jax.nn.log_softmax(logits_BxSxV.astype(jnp.float32), axis=-1), y_BxS, mask_BxS)[:2]


def _score_logp(logp_BxSxV, y_BxS, mask_BxS):
    """Per-position NLL from a given log-distribution, per-row sums (no cross-device
    reduction: the host adds in float64), and per row the worst |log Σ_v p(v)|."""
    logp = logp_BxSxV.astype(jnp.float32)
    nll = -jnp.take_along_axis(logp, y_BxS[..., None], axis=-1)[..., 0]
    nll = jnp.where(mask_BxS, nll, 0.0)
    lse = jnp.where(mask_BxS, jnp.abs(jax.nn.logsumexp(logp, axis=-1)), 0.0)
    return nll, jnp.sum(nll, axis=-1), jnp.max(lse, axis=-1)


@functools.partial(jax.jit, static_argnames="is_logits")
def _probe_logp(out_BxSxV, rows, cols, is_logits: bool = True):
    picked = out_BxSxV[rows, cols].astype(jnp.float32)
    return jax.nn.log_softmax(picked, axis=-1) if is_logits else picked


class FixedModel:
    """A model that does not adapt: the sliding-window (and plain) evaluation."""

    compliant = True

    def __init__(self, predict, params, name: str = "sliding") -> None:
        """`predict`: jit_predict(make_predict(model), mesh), shared with other stages (one compile)."""
        self.name, self.notes = name, []
        self._params = params
        self._predict = predict

    def predict(self, inputs: dict) -> jax.Array:
        return self._predict(self._params, inputs["x_BxL"], inputs["pos_BxS"])

    def update(self, reveal: Reveal) -> None:
        del reveal


def batch_rows(batch_windows: int, mesh: Mesh) -> int:
    """Rows per forward: batch_windows rounded up to a multiple of the devices."""
    n = mesh.devices.size
    return max(n, -(-batch_windows // n) * n)


def _score_fns(mesh: Mesh):
    dat = mesh_lib.data_sharded(mesh)
    return (jax.jit(_score, in_shardings=(dat,) * 3, out_shardings=(dat, dat)),
            jax.jit(_score_logp, in_shardings=(dat,) * 3, out_shardings=(dat, dat, dat)))


def run(evaluator: Evaluator, val_tokens: np.ndarray, lut: ByteLUT, schedule: Schedule, mesh: Mesh, ledger: Ledger,
        inspection: Inspection = Inspection()) -> HarnessResult:
    """Score the schedule's units block by block, in order; after a whole block is scored the
    evaluator is given a Reveal of it and may update. `inspection`: the audit's record_nll,
    probe_targets and enforce (Inspection).
    """
    record_nll, enforce, probe_targets = inspection.record_nll, inspection.enforce, inspection.probe_targets
    units, rows, whole_blocks = schedule.units, schedule.rows, schedule.whole_blocks
    blocks = list(schedule.blocks)
    score_jit, score_logp_jit = cached(None, ("score", mesh), lambda: _score_fns(mesh))
    probes = None if probe_targets is None else {}
    probe_set = np.asarray(sorted(probe_targets or ()), np.int64)
    worst_lse: list = []
    acc = BpbAccumulator(evaluator.name)
    base_acc = BpbAccumulator(evaluator.name + " without fit")
    objective = getattr(evaluator, "objective", None)
    unit_rows: list[np.ndarray] = []  # per batch: [units, 2] NLL sums with / without the fit
    nll_all = np.full(units.num_targets, np.nan) if record_nll else None
    ledger.compliant = ledger.compliant and evaluator.compliant
    ledger.notes.extend(n for n in evaluator.notes if n not in ledger.notes)
    bar = progress(f"eval {evaluator.name}", "win", len(units))
    per_block = np.zeros((len(blocks), 3))  # read as the batches drain: no extra host sync
    pending: list = []
    try:
        for b, idx in enumerate(blocks):
            step = max(len(idx), 1) if whole_blocks else rows
            width = max(rows, -(-step // mesh.devices.size) * mesh.devices.size)
            for start in range(0, len(idx), step):
                sub = units.take(idx[start : start + step])
                arrays = gather_batch(val_tokens, sub, width)
                put = {k: mesh_lib.put_global_batch(mesh, arrays[k]) for k in ("x", "pos", "y", "mask")}
                inputs = {"x_BxL": put["x"], "pos_BxS": put["pos"], "num_units": len(sub)}
                if objective is not None:
                    inputs.update(_fit_inputs(evaluator, objective(sub, width), val_tokens, sub, ledger, mesh, b,
                                              enforce))
                out = evaluator.predict(inputs)
                if isinstance(out, dict) and "logp" in out:
                    dist, base, is_logits = out["logp"], None, False
                    nll_BxS, nll_sum, lse = score_logp_jit(dist, put["y"], put["mask"])
                    worst_lse.append(lse)
                else:
                    dist, base = (out["logits"], out.get("base_logits")) if isinstance(out, dict) else (out, None)
                    is_logits = True
                    nll_BxS, nll_sum = score_jit(dist, put["y"], put["mask"])
                if probe_set.size:
                    _collect_probes(probes, probe_set, arrays, dist, nll_BxS, is_logits)
                credited = target_bytes(lut, arrays["prev"], arrays["y"], target_index=arrays["target"])
                nbytes = int(np.sum(np.where(arrays["mask"], credited, 0), dtype=np.int64))
                base_sum = None if base is None else score_jit(base, put["y"], put["mask"])[1]
                pending.append(_Batch(nll_sum, base_sum, len(sub), int(arrays["mask"].sum()), nbytes,
                                      (nll_BxS, arrays["target"], arrays["mask"]) if record_nll else None, b))
                ledger.score(unit_ranges(sub))
                bar.update(len(sub))
                if len(pending) > 64:  # these batches finished long ago: no stall
                    _drain(pending[:32], acc, nll_all, base_acc, unit_rows, per_block)
                    del pending[:32]
            reveal = Reveal(val_tokens, ledger.scored, b, len(blocks), evaluator.compliant and enforce)
            evaluator.update(reveal)
            if reveal.reads:
                ledger.update(reveal.reads, block=b)
        _drain(pending, acc, nll_all, base_acc, unit_rows, per_block)
        pending.clear()
    finally:
        bar.close()
    lse = float(max(np.max(np.asarray(v)) for v in jax.device_get(worst_lse))) if worst_lse else None
    if not unit_rows:
        return HarnessResult(acc, ledger, nll_all, max_abs_logsumexp=lse, probes=probes, blocks=per_block)
    return HarnessResult(acc, ledger, nll_all, base_acc, np.concatenate(unit_rows), lse, probes, per_block)


def _collect_probes(probes: dict, probe_set: np.ndarray, arrays: dict, dist, nll_BxS, is_logits: bool) -> None:
    """The full log-distribution and the recorded NLL at the probed targets of this batch."""
    hit = arrays["mask"] & np.isin(arrays["target"], probe_set)
    if not hit.any():
        return
    rows, cols = np.nonzero(hit)
    logp = np.asarray(jax.device_get(_probe_logp(dist, rows, cols, is_logits)))
    nll = np.asarray(jax.device_get(nll_BxS), np.float64)[rows, cols]
    for k, (r, c) in enumerate(zip(rows, cols)):
        probes[int(arrays["target"][r, c])] = Probe(logp[k], float(nll[k]))


def _fit_inputs(evaluator, obj: Objective, val_tokens: np.ndarray, units: Units, ledger: Ledger, mesh: Mesh,
                block: int, enforce: bool = True) -> dict:
    """The objective's targets (looked up by the harness), after the ledger's fit check.

    Each unit's reads are the hull [a, b) of its objective's targets (the batch's hull if shared).
    """
    n = len(units)
    mask = obj.mask_BxF & (np.arange(len(obj.mask_BxF)) < n)[:, None]
    tgt = np.zeros_like(obj.pos_BxF, dtype=np.int64)
    tgt[:n] = units.start[:, None] + obj.pos_BxF[:n]
    past = tgt >= units.num_targets
    if (mask & (obj.pos_BxF < 0)).any() or (not obj.zero_pad and (mask & past).any()):
        raise ValueError(f"{evaluator.name}: an objective position lies outside its window's targets")
    real = mask & ~past  # what the fit reads (padding reads nothing)
    used = real[:n].any(axis=1)
    a = np.where(used, np.where(real[:n], tgt[:n], np.iinfo(np.int64).max).min(axis=1), 0)
    b = np.where(used, np.where(real[:n], tgt[:n] + 1, -1).max(axis=1), 0)
    if obj.shared and used.any():
        a, b = np.full(n, a[used].min()), np.full(n, b[used].max())
    bad = ledger.fit(a, b, units.first_target, unit_ranges(units), block=block)
    if bad and evaluator.compliant and enforce:
        raise ComplianceError(
            f"{evaluator.name}: {bad} unit(s) of block {block} would be scored with a δ fitted on targets not "
            "scored before them; only already-scored targets may enter a fit (mark the evaluator non-compliant "
            "to reproduce such a procedure)")
    y = np.where(real, val_tokens[np.where(real, tgt + 1, 0)], 0).astype(np.int32)
    return {"obj_pos_BxF": mesh_lib.put_global_batch(mesh, obj.pos_BxF.astype(np.int32)),
            "obj_y_BxF": mesh_lib.put_global_batch(mesh, y),
            "obj_mask_BxF": mesh_lib.put_global_batch(mesh, mask)}


def _drain(pending: list, acc: BpbAccumulator, nll_all, base_acc: BpbAccumulator, unit_rows: list,
           per_block: np.ndarray) -> None:
    """Read finished batches' sums (device → host) into the float64 accumulators."""
    sums = jax.device_get([(p.nll_sum, p.base_sum) for p in pending])
    for p, (rows, base_rows) in zip(pending, sums):
        rows = np.asarray(rows, np.float64)
        acc.add(float(np.sum(rows)), p.tokens, p.bytes)
        per_block[p.block] += np.sum(rows), p.tokens, p.bytes
        if base_rows is not None:
            base_rows = np.asarray(base_rows, np.float64)
            base_acc.add(float(np.sum(base_rows)), p.tokens, p.bytes)
            unit_rows.append(np.stack([rows[: p.units], base_rows[: p.units]], axis=1))
        if p.recorded is not None:
            nll_BxS, target, mask = p.recorded
            nll_all[target[mask]] = np.asarray(jax.device_get(nll_BxS), np.float64)[mask]
