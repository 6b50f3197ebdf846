"""The evaluation stages, run in the order `eval.stages` lists them, on any params.

The train pipeline, `python -m golf_jax.eval` and the packed submission script's
`eval` all call `run_stages`, so one config gives one procedure everywhere.

* roundtrip: the plain non-overlapping eval (docs/reference-notes.md#plain-eval);
* sliding: sliding windows, stride eval.sliding.stride (docs/reference-notes.md#sliding-window-eval; merged rule by default);
* ttt: score-first chunked TTT (docs/reference-notes.md#ttt-pr1318, docs/reference-notes.md#ttt-score-first), or with eval.ttt.mode=phased
  #1855's phased TTT (per-document LoRA + global SGD phases; golf_jax/eval/phased/ttt.py);
* slot: a δ per window fitted by L-BFGS and added to the logits (docs/reference-notes.md#slot-pr1318; golf_jax/eval/slot/stage.py).

Each stage writes `ledger_<stage>.json` (golf_jax/eval/ledger.py) and reports its
bpb, time and compliance; a stage scored through the harness also writes
`blocks_<stage>.npy`, each block's (TTT's chunks') NLL, tokens and bytes. Weights adapted on val
(pre-quant TTT, or TTT with eval.ttt.carry) enter later ledgers as prior reads, which
their verify() flags.

A user's own evaluator (`golf_jax.audit --evaluator MODULE:FACTORY`) runs as the one
stage in place of eval.stages: `factory(EvalContext) -> evaluator` with the harness's
interface (golf_jax/eval/harness.py), scored over the config's sliding windows, block
by block as its optional `schedule(units)` says (default: one block).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from golf_jax.eval import harness, plain
from golf_jax.eval.ledger import Ledger
from golf_jax.eval.windows import WINDOW_RULES, check_geometry, chunk_of, num_chunks, sliding_units
from golf_jax.model.embeddings import BOS_ID
from golf_jax.submission.modules import repo_only

STAGES = ("roundtrip", "sliding", "ttt", "slot")


def stage_list(e) -> list[str]:
    names = [s.strip() for s in str(e.stages).split(",") if s.strip()]
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise ValueError(f"eval.stages={e.stages!r}: unknown stage(s) {unknown}; known: {list(STAGES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"eval.stages={e.stages!r}: a stage is listed twice")
    return names


def eval_seq_len(cfg) -> int:
    return int(cfg.eval.seq_len or cfg.train.seq_len)


@repo_only
def check_config(cfg) -> None:
    """Every eval key's range, before any compile."""
    e = cfg.eval
    names = stage_list(e)
    if not names:
        raise ValueError(f"eval.stages={e.stages!r} lists no stage: a run would train and export, then have no "
                         "score; list at least one, e.g. --config.eval.stages=roundtrip")
    seq_len = eval_seq_len(cfg)
    if e.max_tokens < 0 or e.batch_tokens < 1 or e.sliding.batch_windows < 1:
        raise ValueError("eval.max_tokens must be >= 0, eval.batch_tokens and eval.sliding.batch_windows >= 1")
    if e.sliding.window_rule not in WINDOW_RULES:
        raise ValueError(f"eval.sliding.window_rule={e.sliding.window_rule!r}: use one of {WINDOW_RULES}")
    check_geometry(seq_len, e.sliding.stride)
    # Each TTT module is imported only here and where it runs: a submission packs only its own.
    if e.ttt.mode == "phased":
        from golf_jax.eval.phased import ttt as phased_ttt

        if "ttt" in names and (e.ttt.lookahead or e.ttt.carry):
            raise ValueError("eval.ttt.lookahead and eval.ttt.carry reproduce PR #1318; set eval.ttt.mode=pr1318 to use them")
        phased_ttt.check_config(e.phased, seq_len, used="ttt" in names)
    else:
        from golf_jax.eval.ttt import score_first as ttt

        ttt.check_config(e.ttt, seq_len, e.sliding.stride, used="ttt" in names)
    if "slot" in names:  # imported here only: a submission without SLOT need not pack it
        from golf_jax.eval.slot import stage as slot

        slot.check_config(e.slot, seq_len, e.sliding.stride)
    if e.profile:  # imported here only: golf_jax/submission/modules.py GATES
        from golf_jax.eval import profile

        profile.parse(e.profile, names)


def noncompliance(cfg) -> list[str]:
    """Why a config's evaluation is non-compliant (empty when it is legal), from its flags."""
    e, why = cfg.eval, []
    names = stage_list(e)
    if e.prequant_ttt.mode != "off":
        why.append(f"eval.prequant_ttt.mode={e.prequant_ttt.mode}: trains on val before scoring it")
    windowed = "sliding" in names or "slot" in names or ("ttt" in names and e.ttt.mode != "phased")
    if windowed and e.sliding.window_rule == "reference":
        why.append("eval.sliding.window_rule=reference: the tail targets are scored more than once")
    if "ttt" in names and e.ttt.lookahead:
        why.append("eval.ttt.lookahead: TTT trains on a target before it is scored")
    if "ttt" in names and e.ttt.carry and names.index("ttt") < len(names) - 1:
        why.append("eval.ttt.carry: later stages rescore targets with weights trained on them")
    if "slot" in names:
        from golf_jax.eval.slot import stage as slot

        if e.slot.mode in slot.WHY:
            why.append(slot.WHY[e.slot.mode])
    if cfg.export.calib_source == "val":
        why.append("export.calib_source=val: GPTQ calibration reads val")
    return why


@dataclass
class EvalContext:
    """What a user's evaluator factory is given."""

    cfg: object  # the whole config (eval.* says the geometry)
    model: object  # the flax model
    params: object  # its params (replicated on the mesh)
    mesh: object
    seq_len: int  # window length
    stride: int
    num_targets: int
    predict: object  # jitted (params, x_BxL, pos_BxS) -> logits [B, S, V] of the fixed model
    # The evaluation's sizes: the real one's when the audit reruns on a slice (a cheat keyed
    # on scale is then on during the audit); windows and reveals are the slice's.
    num_documents: int = 0
    seed: int = 0  # draw any randomness from this: every rerun gets the same (the audit's noise floor)


@dataclass
class StageResult:
    name: str
    val_loss: float
    val_bpb: float
    seconds: float
    tokens: int
    bytes: int
    ledger: Ledger
    problems: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    nll: np.ndarray | None = None  # per target, with record_nll (not written to JSON)
    probes: dict | None = None  # {target: (logp [V], recorded NLL)} at the asked targets (the audit's)
    params: object = None  # the weights the stage adapted (TTT), when it adapts them; not written to JSON

    def to_json(self) -> dict:
        return {"val_loss": self.val_loss, "val_bpb": self.val_bpb, "seconds": self.seconds, "tokens": self.tokens,
                "bytes": self.bytes, "compliant": self.ledger.compliant and not self.problems,
                "ledger_problems": self.problems, "notes": self.ledger.notes, **self.extra}


class Val(NamedTuple):
    """The val stream that the stages score, and what the run already did with it.

    `prior_reads`/`prior_notes`: targets the weights were trained on before the stages ran
    (pre-quant TTT, golf_jax/eval/ttt/prequant.py), which every stage's ledger flags;
    `plain_eval`: plain.make_evaluator over these tokens, already compiled (the train loop's),
    which roundtrip then reuses.
    """

    tokens: np.ndarray  # [T+1]
    lut: object  # ByteLUT: the bytes each target credits
    prior_reads: tuple = ()
    prior_notes: tuple = ()
    plain_eval: object = None


def run_stages(cfg, model, params, val: Val, mesh, run=None, log=print,
               inspection: harness.Inspection | None = None) -> dict[str, StageResult]:
    """Run cfg.eval's stages in order on `params` over `val`; returns {stage: StageResult}.

    `run` (a golf_jax.core.rundir.RunDir) receives the ledgers. `inspection` is the audit's
    (golf_jax/audit; harness.Inspection): per-target NLL, probed distributions, read-ahead
    allowed, a user's evaluator in place of the stages, declared documents; None in production.
    """
    check_config(cfg)
    e, seq_len = cfg.eval, eval_seq_len(cfg)
    val_tokens, lut, plain_eval = val.tokens, val.lut, val.plain_eval
    inspection = inspection or harness.Inspection()
    T = len(val_tokens) - 1
    results: dict[str, StageResult] = {}
    prior_reads, prior_notes = list(val.prior_reads), list(val.prior_notes)
    predict = harness.model_predict(model, mesh)  # one compile for sliding and TTT (and later passes)
    rows = harness.batch_rows(e.sliding.batch_windows, mesh)
    per_target = inspection.record_nll or inspection.probe_targets is not None
    wrap = lambda evaluator: evaluator  # noqa: E731
    if e.profile and run is not None:  # eval.profile: trace a stage's batches (golf_jax/eval/profile.py)
        from golf_jax.eval import profile

        wrap = profile.Tracer(e.profile, run.path).wrap

    def score(evaluator, units, blocks, ledger, whole_blocks=False, rows=rows):
        return harness.run(wrap(evaluator), val_tokens, lut, harness.Schedule(units, blocks, rows, whole_blocks), mesh,
                           ledger, inspection)

    names = ["custom"] if inspection.custom is not None else stage_list(e)
    for name in names:
        ledger = Ledger(name, T, prior_reads=list(prior_reads), notes=list(prior_notes))
        ledger.compliant = not prior_reads
        t0 = time.perf_counter()
        extra: dict = {}
        nll = res = adapted = None
        if name == "custom":
            docs = int(np.sum(val_tokens[:-1] == BOS_ID))  # BOS-delimited documents
            ctx = EvalContext(cfg, model, params, mesh, seq_len, int(e.sliding.stride), T, predict, docs)
            evaluator = inspection.custom(ctx)
            name = ledger.stage = str(getattr(evaluator, "name", "custom"))
            units = sliding_units(T, seq_len, e.sliding.stride, e.sliding.window_rule)
            schedule = getattr(evaluator, "schedule", None)
            blocks = schedule(units) if schedule is not None else [np.arange(len(units))]
            res = score(evaluator, units, blocks, ledger)
            acc, nll, extra = res.acc, res.nll, {"windows": len(units), "blocks": len(blocks)}
        elif name == "roundtrip" and per_target:
            # The same non-overlapping sequences through the harness, which keeps per-target NLL.
            units = sliding_units((T // seq_len) * seq_len, seq_len, seq_len, "merged")
            res = score(harness.FixedModel(predict, params, "roundtrip"), units, [np.arange(len(units))], ledger)
            acc, nll = res.acc, res.nll
        elif name == "roundtrip":
            plain_eval = plain_eval or plain.make_evaluator(model, lut, mesh, val_tokens, seq_len, e.batch_tokens)
            acc = plain_eval(params)
            ledger.score([(0, (T // seq_len) * seq_len)])
        elif name == "sliding":
            units = sliding_units(T, seq_len, e.sliding.stride, e.sliding.window_rule)
            if e.sliding.window_rule == "reference":
                ledger.notes.append("eval.sliding.window_rule=reference: PR #1318's re-scored tail (compat)")
            res = score(harness.FixedModel(predict, params), units, [np.arange(len(units))], ledger)
            acc, nll, extra = res.acc, res.nll, {"windows": len(units)}
        elif name == "slot":
            from golf_jax.eval.slot import stage as slot

            units = sliding_units(T, seq_len, e.sliding.stride, e.sliding.window_rule)
            evaluator = slot.Slot(model, params, mesh, e.slot, seq_len, e.sliding.stride)
            res = score(evaluator, units, evaluator.blocks(units, e.sliding.batch_windows), ledger, evaluator.shared)
            acc, nll = res.acc, res.nll
            extra = slot.summary(e.slot, units, res, evaluator.diagnostics(), run)
        elif e.ttt.mode == "phased":
            from golf_jax.eval.phased import ttt as phased_ttt

            res, extra = phased_ttt.evaluate(cfg, model, params, val_tokens, mesh, seq_len, functools.partial(
                score, ledger=ledger), inspection.documents)
            acc, nll = res.acc, res.nll
        else:
            units = sliding_units(T, seq_len, e.sliding.stride, e.sliding.window_rule)
            K = num_chunks(T, e.ttt.chunk_tokens)
            chunk = chunk_of(units, e.ttt.chunk_tokens)
            blocks = [np.flatnonzero(chunk == c) for c in range(K)]
            from golf_jax.eval.ttt import score_first as ttt

            adapter = ttt.ScoreFirstTTT(model, predict, params, mesh, e.ttt, seq_len, K)
            res = score(adapter, units, blocks, ledger)
            acc, nll, adapted = res.acc, res.nll, adapter.params
            extra = {"chunks": K, "train_steps": adapter.steps, "mode": e.ttt.mode}
            if e.ttt.carry:
                params = adapter.params  # the reference scores later stages with the adapted weights
                prior_reads = sorted(prior_reads + ledger.reads())
                prior_notes.append("eval.ttt.carry: these weights were trained by the ttt stage on val")
        seconds = time.perf_counter() - t0
        problems = ledger.verify()
        lse = None if res is None else res.max_abs_logsumexp
        if lse is not None and not lse <= harness.NORMALIZATION_TOL:
            problems.append(f"normalized distribution: the evaluator's log-probabilities sum to exp({lse:.3g}) "
                            f"at worst, not 1 (tolerance {harness.NORMALIZATION_TOL:g})")
        results[name] = StageResult(name, acc.val_loss, acc.val_bpb, seconds, int(acc.token_count),
                                    int(acc.byte_count), ledger, problems, extra, nll,
                                    None if res is None else res.probes, adapted)
        if run is not None and run.is_writer:
            ledger.write(run.path / f"ledger_{name}.json")
            if res:  # per block (TTT's chunks), for golf_jax/report
                np.save(run.path / f"blocks_{name}.npy", res.blocks)
        verdict = "ledger ok" if not problems and ledger.compliant else "NON-COMPLIANT: " + "; ".join(
            problems or ledger.notes)
        log(f"eval {name}: val_bpb {acc.val_bpb:.4f} ({seconds:.1f} s) val_loss {acc.val_loss:.4f} "
            f"tokens {int(acc.token_count):,} [{verdict}]")
    return results
