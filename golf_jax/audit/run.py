"""`run_audit`: every check on one config's evaluation, as a report (a JSON-able dict).

Used by `python -m golf_jax.audit` and, after the eval stages, by the train and
evaluate commands, which embed the report in their summary. The verdict is PASS only
when no check fails; a SKIPped check (no artifact, no timings on the target hardware)
does not fail it, and says so.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from golf_jax import mesh as mesh_lib
from golf_jax.audit import budgets, checks, procedure
from golf_jax.audit.checks import FAIL, PASS, Check
from golf_jax.eval import harness, phased_plan, stages
from golf_jax.progress import progress


def run_audit(cfg, mesh=None, artifact: str | Path | None = None, trained=None, custom=None,
              summary: dict | None = None, log=print) -> dict:
    """Audit cfg's evaluation (or `custom`, a factory of golf_jax.eval.stages.EvalContext).

    `artifact` is counted for the bytes budget; with audit.weights=artifact its weights
    (or `trained`, a run's (model, params)) are the model, else a small random one of
    the config's architecture. `summary` (a run's summary.json) gives the timings.
    """
    t0 = time.perf_counter()
    procedure.check_config(cfg.audit)
    stages.check_config(cfg)
    mesh = mesh or mesh_lib.make_mesh()
    a = cfg.audit
    model = params = weights = None
    if a.weights == "artifact":
        if trained is not None:
            model, params = trained
        elif artifact is None:
            raise ValueError("audit.weights=artifact needs --artifact RUN_DIR/model.golfjax")
        else:
            weights = artifact
    L = stages.eval_seq_len(procedure.scaled_config(cfg, mesh.devices.size))
    data = procedure.data_slice(cfg, L)
    proc = procedure.build(cfg, mesh, data.lut, artifact=weights, params=params, model=model, custom=custom)
    bos = max(int(data.sp.bos_id()), 0)
    proc.documents = phased_plan.find_documents(data.tokens, bos).start  # the slice's, kept by every rerun
    e = proc.cfg.eval
    stride = int(e.sliding.stride)
    tokens, T, V = data.tokens, len(data.tokens) - 1, int(proc.cfg.model.vocab_size)
    random_model = params is None and weights is None
    rng = np.random.default_rng(int(a.seed))
    rows = harness.batch_rows(int(e.sliding.batch_windows), mesh)
    flips = checks.flip_positions(tokens, L, stride, rows, int(e.ttt.chunk_tokens), bos, int(a.flips), rng)
    cf_vocab = int(a.probe_vocab) if random_model and 1 < int(a.probe_vocab) < V else V
    probes = checks.probe_positions(T, L, stride, int(e.ttt.chunk_tokens), int(a.probes), rng)
    norm_targets = np.sort(rng.choice(T, size=min(int(a.normalization_positions), T), replace=False))
    total = 2 + len(flips) + len(probes) * cf_vocab
    what = "its own evaluator" if custom is not None else f"stages {e.stages}"
    log(f"audit: {cfg.name} ({what}) on {T:,} targets of {data.source}, {data.documents} documents; windows {L}, "
        f"stride {stride}, {rows} rows per batch, TTT chunks {e.ttt.chunk_tokens}; {mesh.devices.size} devices; "
        f"{'a random model' if random_model else 'the given weights'}; {total:,} runs")
    bar = progress("audit", "run", total)  # redrawn on a terminal; a line every 30 s into a file
    try:
        base = proc(tokens, probe_targets=norm_targets.tolist())
        bar.update(1)
        again = proc(tokens)
        bar.update(1)
        result: list[Check] = []
        floor = checks.noise_floor(base, again)
        tol = float(floor.details["tolerance"])
        log(f"audit: noise floor {floor.evidence}")

        flip_proc = _counting(proc, bar)
        result.append(checks.flip_test(flip_proc, tokens, base, flips, V, tol, rng, data.sp))
        result.append(checks.normalization(base, tokens, V, data.sp))
        cf_proc, cf_tokens = proc, tokens
        if cf_vocab != V:  # the random model rebuilt with a small vocabulary: V reruns per probe
            cf_proc = procedure.build(cfg, mesh, data.lut, custom=custom, vocab_size=cf_vocab)
            cf_proc.documents = proc.documents
            cf_tokens = (tokens % cf_vocab).astype(np.int32)
        result.append(checks.counterfactual(cf_proc, cf_tokens, probes, cf_vocab, L, data.sp if cf_vocab == V else None,
                                            progress=bar.update))
        result.append(checks.ledger(base))
    finally:
        bar.close()
    result.append(_flags(cfg, base, custom is not None))
    result.append(budgets.artifact(artifact, cfg))
    result.append(budgets.timings(cfg, summary))
    result.append(budgets.data_access(cfg, summary))
    result.append(budgets.prequant_ttt(cfg))
    result.insert(0, floor)
    passed = not any(c.status == FAIL for c in result)
    report = {
        "config": cfg.name,
        "procedure": list(base),
        "evaluator": "custom" if custom is not None else "config",
        "model": (f"random d{a.model_dim} ×{proc.cfg.model.num_layers} layers (seed {a.seed})" if random_model
                  else str(weights) if weights is not None else "the run's weights"),
        "slice": {"source": data.source, "targets": T, "documents": data.documents},
        "geometry": {"seq_len": L, "stride": stride, "rows": rows, "chunk_tokens": int(e.ttt.chunk_tokens),
                     "slot_focal": int(e.slot.focal), "devices": mesh.devices.size,
                     "counterfactual_vocab": cf_vocab},
        "runs": proc.runs + (cf_proc.runs if cf_proc is not proc else 0),
        "seconds": time.perf_counter() - t0,
        "checks": [c.to_json() for c in result],
        "verdict": PASS if passed else FAIL,
    }
    for line in table(report).splitlines():
        log(line)
    return report


def _counting(proc, bar):
    def run(tokens, probe_targets=None):
        out = proc(tokens, probe_targets)
        bar.update(1)
        return out
    return run


def _flags(cfg, base: dict, custom: bool) -> Check:
    """What the config's flags (and the evaluators themselves) declare non-compliant."""
    why = [w for w in stages.noncompliance(cfg)
           if not custom or w.startswith(("eval.prequant_ttt", "export.calib_source"))]
    key = lambda w: w.split(":")[0].split("=")[0].strip()  # noqa: E731 ("eval.ttt.lookahead", ...)
    for stage, r in base.items():
        if not r.ledger.compliant:  # what an evaluator itself declares (a user's, or one the flags above miss)
            why += [f"{stage}: {n}" for n in r.ledger.notes if key(n) not in {key(w) for w in why}]
    if not why:
        return Check("declared flags", PASS, "no non-compliant flag is set")
    return Check("declared flags", FAIL, "; ".join(why), {"reasons": why})


def table(report: dict) -> str:
    """The report as a fixed-width table: one row per check."""
    rows = [(c["name"], c["status"], c["evidence"]) for c in report["checks"]]
    w = max(len(r[0]) for r in rows)
    head = (f"audit of {report['config']} ({', '.join(report['procedure'])}; {report['model']}; "
            f"{report['slice']['targets']:,} targets of {report['slice']['source']}): {report['verdict']} "
            f"in {report['seconds']:.0f} s")
    lines = [head, f"{'check':<{w}}  result  evidence"]
    lines += [f"{n:<{w}}  {s:<6}  {ev}" for n, s, ev in rows]
    return "\n".join(lines)
