"""`run_audit`: every check on one config's evaluation, as a report (a JSON-able dict).

Used by `python -m golf_jax.audit` and, after the eval stages, by the train and
evaluate commands, which embed the report in their summary. The verdict is PASS only
when no check fails; a SKIPped check (no artifact, no timings on the target hardware)
does not fail it, and says so.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from golf_jax.core import mesh as mesh_lib
from golf_jax.audit import budgets, checks, isolated, procedure
from golf_jax.audit.checks import FAIL, PASS, SKIP, Check
from golf_jax.data import source
from golf_jax.core.errors import UserError
from golf_jax.eval import harness, stages
from golf_jax.eval.phased import plan as phased_plan
from golf_jax.core.paths import shared_data_dir
from golf_jax.core.progress import progress


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
    seq_len = stages.eval_seq_len(procedure.scaled_config(cfg, mesh.devices.size))
    data = procedure.data_slice(cfg, seq_len)
    data_dir = _data_dir(cfg, artifact)
    protected = tuple(str(p) for p in (shared_data_dir(), data_dir) if p is not None)
    servers = []  # a user's evaluator ("MODULE:FACTORY") in a process of its own, one per model

    def evaluator(vocab_size=None):
        if not isinstance(custom, str):
            return custom
        servers.append(isolated.Server(custom, protected, cfg, weights, vocab_size))
        return isolated.factory(servers[-1])

    proc = procedure.build(cfg, mesh, data.lut, artifact=weights, params=params, model=model, custom=evaluator())
    bos = max(int(data.sp.bos_id()), 0)
    proc.documents = phased_plan.find_documents(data.tokens, bos).start  # the slice's, kept by every rerun
    proc.told = {"num_targets": data.real_targets or len(data.tokens) - 1,
                 "num_documents": data.real_documents or data.documents, "seed": int(a.seed)}
    e = proc.cfg.eval
    stride = int(e.sliding.stride)
    tokens, T, V = data.tokens, len(data.tokens) - 1, int(proc.cfg.model.vocab_size)
    random_model = params is None and weights is None
    rng = np.random.default_rng(int(a.seed))
    rows = harness.batch_rows(int(e.sliding.batch_windows), mesh)
    geometry = {"seq_len": seq_len, "stride": stride, "rows": rows, "chunk": int(e.ttt.chunk_tokens)}
    cf_vocab = int(a.probe_vocab) if random_model and 1 < int(a.probe_vocab) < V else V
    probes = checks.probe_positions(T, seq_len, stride, int(e.ttt.chunk_tokens), int(a.probes), rng)
    vocab_probes = checks.probe_positions(T, seq_len, stride, 0, int(a.vocab_probes), rng, late=True)
    norm_targets = np.sort(rng.choice(T, size=min(int(a.normalization_positions), T), replace=False))
    total = 2 + int(a.flips) + len(probes) * cf_vocab + len(vocab_probes) * (1 + int(a.vocab_samples))
    what = "its own evaluator" if custom is not None else f"stages {e.stages}"
    log(f"audit: {cfg.name} ({what}) on {T:,} targets of {data.source}, {data.documents} documents; windows {seq_len}, "
        f"stride {stride}, {rows} rows per batch, TTT chunks {e.ttt.chunk_tokens}; {mesh.devices.size} devices; "
        f"{'a random model' if random_model else 'the given weights'}; about {total:,} runs")
    cf_proc = proc
    bar = progress("audit", "run", total)  # redrawn on a terminal; a line every 30 s into a file
    try:
        base = proc(tokens, probe_targets=norm_targets.tolist())
        bar.update(1)
        runs = [base, proc(tokens)]
        bar.update(1)
        if any(not np.array_equal(r.nll, runs[1][s].nll, equal_nan=True) for s, r in base.items()):
            runs.append(proc(tokens))  # a third run: each target's own noise, from every pair
        result: list[Check] = []
        floor, tol = checks.noise_floor(runs)
        log(f"audit: noise floor {floor.evidence}")

        ranks = {s: r.ledger.score_rank() for s, r in base.items()}
        places = {s: checks.stream_order(rk, proc.documents, len(tokens)) for s, rk in ranks.items()}
        flips = checks.flip_plan(tokens, ranks, places, geometry, bos, int(a.flips), rng)
        flip_proc, stream = _counting(proc, bar), checks.Stream(tokens, V, bos, data.sp)
        timed = _Timed(result)
        with timed:
            result.append(checks.flip_test(flip_proc, stream, base, flips, tol, rng, places))
        result.append(checks.normalization(base, tokens, V, data.sp))
        cf_proc, cf_tokens = proc, tokens
        with timed:
            if cf_vocab != V:  # the random model rebuilt with a small vocabulary: V reruns per probe
                cf_proc = procedure.build(cfg, mesh, data.lut, custom=evaluator(cf_vocab), vocab_size=cf_vocab)
                cf_proc.documents, cf_proc.told = proc.documents, proc.told
                cf_tokens = (tokens % cf_vocab).astype(np.int32)
            result.append(checks.counterfactual(cf_proc, cf_tokens, probes, cf_vocab, seq_len,
                                                data.sp if cf_vocab == V else None, progress=bar.update))
        with timed:
            result.append(checks.answer_independence(proc, stream, vocab_probes, int(a.vocab_samples), seq_len, rng,
                                                     progress=bar.update))
        result.append(checks.ledger(base))
    finally:
        bar.close()
        for server in servers:
            server.close()
    result.append(_isolation(custom, servers))
    result.append(_flags(cfg, base, custom is not None))
    result.append(budgets.artifact(artifact, cfg))
    result.append(budgets.timings(cfg, summary))
    result.append(budgets.data_access(cfg, summary))
    result.append(budgets.prequant_ttt(cfg))
    result.append(budgets.disjoint(data_dir))
    result.insert(0, floor)
    passed = not any(c.status == FAIL for c in result)
    report = {
        "config": cfg.name,
        "procedure": list(base),
        "evaluator": "custom" if custom is not None else "config",
        "model": (f"random d{a.model_dim} ×{proc.cfg.model.num_layers} layers (seed {a.seed})" if random_model
                  else str(weights) if weights is not None else "the run's weights"),
        "slice": {"source": data.source, "targets": T, "documents": data.documents},
        "geometry": {"seq_len": seq_len, "stride": stride, "rows": rows, "chunk_tokens": int(e.ttt.chunk_tokens),
                     "slot_focal": int(e.slot.focal), "devices": mesh.devices.size,
                     "counterfactual_vocab": cf_vocab},
        "told": proc.told,
        "runs": proc.runs + (cf_proc.runs if cf_proc is not proc else 0),
        "seconds": time.perf_counter() - t0,
        "checks": [c.to_json() for c in result],
        "verdict": PASS if passed else FAIL,
    }
    for line in table(report).splitlines():
        log(line)
    return report


def _isolation(custom, servers) -> Check:
    """A user's evaluator ran in its own process, and touched no file of the validation data."""
    name = "evaluator isolation"
    if custom is None:
        return Check(name, SKIP, "the config's own stages (golf_jax code) run in the audit's process")
    if not isinstance(custom, str):
        return Check(name, SKIP, "a factory passed as a function runs in the audit's process (the CLI's "
                     "--evaluator MODULE:FACTORY runs it in its own)")
    touched = sorted({p for s in servers for p in s.touched})
    roots = servers[0].setup["protected"] if servers else []
    details = {"touched": touched, "protected": roots}
    if touched:
        return Check(name, FAIL, f"the evaluator's process opened or listed {len(touched)} path(s) of the "
                     f"validation data: {', '.join(touched[:3])}" + (" ..." if len(touched) > 3 else ""), details)
    return Check(name, PASS, f"ran in its own process; opened nothing under {', '.join(roots)} (Python-level "
                 "file access; native code is out of reach)", details)


def _data_dir(cfg, artifact) -> Path | None:
    """The run's shard folder: its data.json's (beside the artifact), else the config's."""
    recorded = Path(artifact).parent / "data.json" if artifact is not None else None
    if recorded is not None and recorded.is_file():
        where = json.loads(recorded.read_text()).get("data_dir")
        return Path(where) if where else None
    try:
        return source.resolve_data(cfg)[0]
    except UserError:
        return None


class _Timed:
    """`with timed: result.append(check)`: the check's seconds go into its details (what each probe costs)."""

    def __init__(self, result: list) -> None:
        self.result = result

    def __enter__(self):
        self.t0 = time.perf_counter()

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.result[-1].details["seconds"] = round(time.perf_counter() - self.t0, 2)


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
