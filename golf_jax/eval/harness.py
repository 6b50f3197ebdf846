"""The evaluation harness: predict → record → reveal → update (variants-and-compliance §5.3).

Every evaluator (a fixed model, TTT, later SLOT) is written against one interface:

1. `evaluator.predict(inputs)` gets a batch's *inputs* only (window tokens `x_BxL`
   and the positions to score `pos_BxS`) and returns logits [B, S, V] at those positions;
2. the harness turns them into a normalised log-distribution itself (log-softmax in
   fp32), looks the targets up, and adds NLL and bytes to float64 sums;
3. only then, at the end of a block, it *reveals* the block's targets: the evaluator
   reads tokens through `Reveal.read`, which logs every range it reads;
4. `evaluator.update(reveal)` may adapt (train, fit, cache) from what it read.

So a compliant evaluator cannot see a target before it is scored: `Reveal.read` of a
range not yet scored raises. An evaluator that a flag marks non-compliant (e.g. TTT's
1-token lookahead) may read ahead; the read is logged, and the ledger's verify()
names it. The ledger (golf_jax/eval/ledger.py) records ranges, not rows.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Iterable, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from tqdm import tqdm

from golf_jax import mesh as mesh_lib
from golf_jax.data.tokenizer import ByteLUT, target_bytes
from golf_jax.eval.bpb import BpbAccumulator
from golf_jax.eval.ledger import Ledger
from golf_jax.eval.windows import Units, gather_batch, unit_ranges


class ComplianceError(RuntimeError):
    """A compliant evaluator tried to read a target before it was scored."""


class Evaluator(Protocol):
    name: str
    compliant: bool  # False: a flag put it outside the harness's guarantees
    notes: list[str]  # why it is non-compliant, or what it does

    def predict(self, inputs: dict) -> jax.Array:
        """Logits [B, S, V] at inputs["pos_BxS"] of windows inputs["x_BxL"] (device arrays)."""

    def update(self, reveal: Reveal) -> None:
        """Adapt from the targets just revealed (read through reveal.read)."""


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
        """Tokens val[a : b+1]: the inputs and targets of targets [a, b)."""
        if a < 0 or b > len(self._val) - 1 or b <= a:
            raise ValueError(f"Reveal.read({a}, {b}): targets must lie in [0, {len(self._val) - 1})")
        if self._compliant and not self._scored(a, b):
            raise ComplianceError(
                f"evaluator read targets [{a}, {b}) before they were scored; only scored targets may be "
                "trained on (mark the evaluator non-compliant to reproduce such a procedure)")
        self.reads.append((a, b))
        return self._val[a : b + 1]


@dataclass
class HarnessResult:
    acc: BpbAccumulator
    ledger: Ledger
    nll: np.ndarray | None = None  # per target (NaN where unscored; the last score wins), when asked


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


def _score(logits_BxSxV, y_BxS, mask_BxS):
    """Per-position NLL from the harness's own log-softmax (a normalised distribution)."""
    logp = jax.nn.log_softmax(logits_BxSxV.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, y_BxS[..., None], axis=-1)[..., 0]
    nll = jnp.where(mask_BxS, nll, 0.0)
    return nll, jnp.sum(nll, axis=-1)  # per-row sums: no cross-device reduction (the host adds in float64)


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


def run(evaluator: Evaluator, val_tokens: np.ndarray, units: Units, blocks: Iterable[np.ndarray], lut: ByteLUT,
        mesh: Mesh, rows: int, ledger: Ledger, record_nll: bool = False) -> HarnessResult:
    """Score `units` block by block (each block an index array into units, in order).

    Within a block, units are batched `rows` at a time; after the whole block is scored
    the evaluator is given a Reveal of it and may update.
    """
    blocks = list(blocks)
    dat = mesh_lib.data_sharded(mesh)
    score_jit = jax.jit(_score, in_shardings=(dat,) * 3, out_shardings=(dat, dat))
    acc = BpbAccumulator(evaluator.name)
    nll_all = np.full(units.num_targets, np.nan) if record_nll else None
    ledger.compliant = ledger.compliant and evaluator.compliant
    ledger.notes.extend(n for n in evaluator.notes if n not in ledger.notes)
    bar = tqdm(total=len(units), desc=f"eval {evaluator.name}", unit="win", file=sys.stderr,
               disable=None, mininterval=2.0, leave=False)
    pending: list = []
    try:
        for b, idx in enumerate(blocks):
            for start in range(0, len(idx), rows):
                sub = units.take(idx[start : start + rows])
                arrays = gather_batch(val_tokens, sub, rows)
                put = {k: mesh_lib.put_global_batch(mesh, arrays[k]) for k in ("x", "pos", "y", "mask")}
                logits = evaluator.predict({"x_BxL": put["x"], "pos_BxS": put["pos"]})
                nll_BxS, nll_sum = score_jit(logits, put["y"], put["mask"])
                nbytes = int(np.sum(np.where(arrays["mask"], target_bytes(lut, arrays["prev"], arrays["y"]), 0),
                                    dtype=np.int64))
                pending.append((nll_sum, int(arrays["mask"].sum()), nbytes,
                                (nll_BxS, arrays["target"], arrays["mask"]) if record_nll else None))
                ledger.score(unit_ranges(sub))
                bar.update(len(sub))
                if len(pending) > 64:  # these batches finished long ago: no stall
                    _drain(pending[:32], acc, nll_all)
                    del pending[:32]
            reveal = Reveal(val_tokens, ledger.scored, b, len(blocks), evaluator.compliant)
            evaluator.update(reveal)
            if reveal.reads:
                ledger.update(reveal.reads, block=b)
        _drain(pending, acc, nll_all)
        pending.clear()
    finally:
        bar.close()
    return HarnessResult(acc, ledger, nll_all)


def _drain(pending: list, acc: BpbAccumulator, nll_all) -> None:
    """Read finished batches' sums (device → host) into the float64 accumulator."""
    sums = jax.device_get([p[0] for p in pending])
    for (_, tokens, nbytes, rec), rows in zip(pending, sums):
        acc.add(float(np.sum(np.asarray(rows, np.float64))), tokens, nbytes)
        if rec is not None:
            nll_BxS, target, mask = rec
            nll_all[target[mask]] = np.asarray(jax.device_get(nll_BxS), np.float64)[mask]
