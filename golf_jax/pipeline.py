"""The whole job as named stages: data → fit → average → [pre-quant TTT] → calibrate +
export → round trip → the eval stages of `eval.stages` → audit → summary.

Each stage is a function with explicit inputs and outputs; `Stages` times and logs
them. Everything after the fit stage's clock stops counts against the challenge's
600 s evaluation budget; the summary says whether it fits (and on what hardware).
`python -m golf_jax.train --config=...` runs `run(cfg)`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
from flax import serialization
from jax.experimental import multihost_utils

from golf_jax.submission import codebytes
from golf_jax.core import mesh as mesh_lib
from golf_jax import model as model_lib
from golf_jax.data import source
from golf_jax.data.tokenizer import load_tokenizer
from golf_jax.core.errors import UserError
from golf_jax.eval import plain, stages as eval_stages
from golf_jax.optim.build import build_optimizer, count_by_label
from golf_jax.quant import export, hessian
from golf_jax.core.rundir import RunDir, write_atomic
from golf_jax.train import loop, recipe as recipe_lib, step as step_lib
from golf_jax.submission.modules import repo_only


class Stages:
    """Times each named stage and logs `stage <name>: <seconds> s`."""

    def __init__(self, run: RunDir) -> None:
        self.run, self.seconds = run, {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            self.run.log(f"stage {name}: {self.seconds[name]:.1f} s")


@dataclass
class Data:
    data_dir: Path
    tokenizer_path: Path
    bos_id: int
    lut: object
    val_tokens: np.ndarray


@repo_only
def check_config(cfg, num_devices: int, train: bool = True) -> None:
    """The whole config's enums and ranges, before anything is built or compiled (train=False:
    what evaluating an artifact reads). The stages' checks raise ValueError naming the key:
    each is a setting to fix, so it leaves here as a UserError (one line, exit code 2)."""
    def check_numbers(c, prefix: str = "") -> None:
        """Every float setting finite, every learning rate (a key ending in `lr`) >= 0: a NaN
        or inf would only show as a diverged loss after compiling and training."""
        for key, value in c.items():
            name = prefix + key
            if hasattr(value, "items"):
                check_numbers(value, name + ".")
            elif isinstance(value, float) and not np.isfinite(value):
                raise UserError(f"{name}={value}: use a finite number (the default is in golf_jax/config.py)")
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and key.endswith("lr") and value < 0:
                raise UserError(f"{name}={value}: a learning rate must be >= 0")

    try:
        check_numbers(cfg)
        source.check_source(cfg)
        if train:
            loop.check_config(cfg, num_devices)
            export.check_config(cfg.export)
            code = codebytes.code_bytes(cfg)
            if cfg.export.budget_bytes <= code:
                raise UserError(f"export.budget_bytes={cfg.export.budget_bytes:,} leaves no room for weights: this "
                                f"config's submission script alone is {code:,} B; raise it (the challenge's is "
                                "16,000,000)")
            if cfg.eval.prequant_ttt.mode != "off":  # imported on its branch only: golf_jax/submission/modules.py GATES
                from golf_jax.eval.ttt import prequant as prequant_ttt

                prequant_ttt.check_config(cfg.eval.prequant_ttt)
        else:
            model_lib.check_config(cfg.model)
        eval_stages.check_config(cfg)
        if cfg.audit.enabled:  # not packed (submission/modules.py NOT_PACKED): a packed run turns the audit off
            from golf_jax.audit import procedure

            procedure.check_config(cfg.audit)
            procedure.scaled_config(cfg, num_devices)
    except UserError:
        raise
    except ValueError as e:
        raise UserError(str(e)) from e


def load_data(cfg) -> Data:
    data_dir, tokenizer_path = source.resolve_data(cfg)
    sp = load_tokenizer(tokenizer_path, cfg.model.vocab_size)
    if codebytes.SCRIPT is None:  # in the repository; a packed run (golf_jax/submission/modules.py NOT_PACKED) reads checked data
        from golf_jax.data import identity

        identity.check(data_dir, tokenizer_path)
    val_tokens = source.load_val(cfg, data_dir, eval_stages.eval_seq_len(cfg))
    lut = source.val_byte_lut(sp, cfg.model.vocab_size, data_dir, val_tokens)
    return Data(data_dir, tokenizer_path, max(int(sp.bos_id()), 0), lut, val_tokens)


def record_data(cfg, data: Data, run: RunDir) -> None:
    """data.json and the log's lines about the data."""
    run.write_json("data.json", source.describe_data(cfg, data.data_dir, data.tokenizer_path, len(data.val_tokens),
                                                     data.lut.source))
    run.log(f"data: {data.data_dir} tokenizer: {data.tokenizer_path} val_tokens: {len(data.val_tokens):,} "
            f"loader: {cfg.data.loader}")
    run.log(f"val bytes: {data.lut.source}")


def abstract_params(model, seq_len: int):
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, seq_len), np.int32))["params"])


def run(cfg, observers=()) -> dict:
    """Run a whole job from a config; returns the summary written to summary.json. `observers`:
    the run dir's (golf_jax/core/rundir.py RunDir; the train command passes TensorBoard's).

    In a multi-host run every process calls this after golf_jax.core.multihost.initialize_from_env().
    """
    mesh = mesh_lib.make_mesh()
    check_config(cfg, mesh.devices.size)
    cfg = source.absolute_paths(cfg)  # the run dir's config.json finds the data from any directory
    t0 = time.perf_counter()
    data = load_data(cfg)  # the data's checks before the run dir exists: a failed one leaves nothing behind
    train_loader = loop.make_loader(cfg, data.data_dir, mesh)
    run_dir = RunDir(cfg.train.run_dir, cfg.train.run_name or cfg.name, cfg, observers)
    summary: dict = {"status": "running", "run_dir": str(run_dir.path)}
    with run_dir.recording(summary, "summary.json"):
        _run(cfg, mesh, run_dir, summary, data, train_loader, time.perf_counter() - t0)
    return summary


def _run(cfg, mesh, run: RunDir, summary: dict, data: Data, train_loader, data_seconds: float) -> None:
    """The stages; `summary` fills in as they finish, so a failure keeps what ran. The data and the
    train loader were loaded before the run dir existed, in `data_seconds`."""
    stage = Stages(run)
    stage.seconds["data"] = data_seconds
    t, seq_len = cfg.train, eval_stages.eval_seq_len(cfg)
    run.log(f"run_dir: {run.path}")
    run.log(f"devices: {mesh.devices.size} ({jax.default_backend()}) processes: {jax.process_count()}")
    with stage("data"):
        record_data(cfg, data, run)

    model = model_lib.build_model(cfg.model)
    abstract = abstract_params(model, t.seq_len)
    labels = model_lib.param_labels(cfg.model, abstract, cfg.compat)
    tx = build_optimizer(cfg.opt, labels, mesh)
    recipe = step_lib.build_recipe(cfg, abstract, labels)
    state = step_lib.init_state(model, tx, jax.random.PRNGKey(cfg.seed), t.seq_len, mesh, recipe)
    counts = count_by_label(state.params, labels)
    run.log(f"model: {cfg.name} params: {sum(counts.values()):,} by group: {counts}")

    plain_eval = plain.make_evaluator(model, data.lut, mesh, data.val_tokens, seq_len, cfg.eval.batch_tokens)

    def validate(params, step: int) -> float:
        t_val = time.perf_counter()
        acc = plain_eval(params)
        run.log(f"step {step} val_loss {acc.val_loss:.4f} val_bpb {acc.val_bpb:.4f} ({time.perf_counter() - t_val:.1f}s)")
        run.metrics({"step": step, "val_loss": acc.val_loss, "val_bpb": acc.val_bpb})
        return acc.val_bpb

    with stage("fit"):
        fitted = loop.fit(cfg, loop.Trainee(model, tx, recipe, state), train_loader, mesh, run, validate)
    summary.update(steps=fitted.steps, train_time_s=fitted.train_time_s, live_val_bpb=fitted.live_val_bpb,
                   late_qat_step=fitted.late_qat_step, **fitted.extra)
    t_post = time.perf_counter()  # the training clock has stopped: from here on it is evaluation time

    with stage("average"):
        params, averaging = recipe_lib.final_params(fitted.state, recipe)
        val_bpb = fitted.live_val_bpb
        if averaging != "live":
            val_bpb = validate(params, fitted.steps)
            run.log(f"weights after training: {averaging} (val_bpb {fitted.live_val_bpb:.4f} live → {val_bpb:.4f})")
    summary.update(averaging=averaging, pre_quant_val_bpb=val_bpb)

    val = eval_stages.Val(data.val_tokens, data.lut, plain_eval=plain_eval)
    pq = cfg.eval.prequant_ttt
    if pq.mode != "off":
        from golf_jax.eval.ttt import prequant as prequant_ttt

        with stage("prequant_ttt"):
            params, report = prequant_ttt.run(model, params, data.val_tokens, seq_len, pq, mesh, log=run.log)
            post_bpb = validate(params, fitted.steps)
        val = prequant_ttt.read_before_scoring(val, pq.mode)
        summary["prequant_ttt"] = {**report, "val_bpb": post_bpb}
        run.log(f"prequant_ttt: val_bpb {val_bpb:.4f} → {post_bpb:.4f} in {report['seconds']:.1f}s (NON-COMPLIANT)")

    params = jax.device_get(params)
    if run.is_writer:
        write_atomic(run.path / "params.msgpack", serialization.to_bytes(params))
    calib = None
    if cfg.export.format == "gptq_int6":
        with stage("calibrate"):
            calib = hessian.calibrate(cfg, model, jax.device_put(params, mesh_lib.replicated(mesh)), mesh,
                                      data_dir=data.data_dir, val_tokens=data.val_tokens, bos_id=data.bos_id, log=run.log)
    with stage("export"):
        script = codebytes.script(cfg)  # the counted code, kept beside the artifact
        if run.is_writer:
            write_atomic(run.path / "submission.py", script)
        info = export.export_artifact(params, labels, cfg, run.path, len(script), calib=calib)
    run.log(f"export: {info.report}")
    run.log(f"artifact: {info.path.name} weights {info.weight_bytes:,} B + code {info.code_bytes:,} B = "
            f"{info.total_bytes:,} B (budget {cfg.export.budget_bytes:,})")
    summary.update(artifact_path=str(info.path), weight_bytes=info.weight_bytes, code_bytes=info.code_bytes,
                   artifact_bytes=info.total_bytes, **info.report)
    multihost_utils.sync_global_devices("artifact written")

    with stage("load_artifact"):
        rt_params = jax.device_put(export.load_artifact(info.path, params), mesh_lib.replicated(mesh))
    with stage("eval"):
        results = eval_stages.run_stages(cfg, model, rt_params, val, mesh, run=run, log=run.log)
    post_s = time.perf_counter() - t_post
    summary.update(evaluation_summary(cfg, results, post_s, stage.seconds))
    if cfg.audit.enabled:
        from golf_jax.audit.run import run_audit  # not packed: golf_jax/submission/modules.py NOT_PACKED

        with stage("audit"):
            report = run_audit(cfg, mesh, artifact=info.path, trained=(model, rt_params), summary=summary,
                               log=run.log)
        summary.update(audited(summary, report, run))
    if "roundtrip" in results:
        summary.update(roundtrip_val_loss=results["roundtrip"].val_loss, roundtrip_val_bpb=results["roundtrip"].val_bpb)
    run.log(f"final {summary['compliance']}: {summary['val_bpb']:.4f} ({summary['final_stage']}) "
            f"artifact_bytes {info.total_bytes:,}")
    run.log(f"evaluation time {post_s:.1f}s after the training clock (budget {cfg.eval.budget_seconds:.0f}s on "
            f"{summary['eval_budget']['hardware']}): {'fits' if summary['eval_budget']['fits'] else 'OVER'}")


def load_artifact_model(cfg, artifact: str | Path, mesh) -> tuple:
    """(model, params replicated on the mesh) rebuilt from the artifact alone."""
    model = model_lib.build_model(cfg.model)
    like = abstract_params(model, cfg.train.seq_len)
    return model, jax.device_put(export.load_artifact(Path(artifact), like), mesh_lib.replicated(mesh))


def evaluate_artifact(cfg, artifact: str | Path, mesh=None, log=print) -> dict:
    """{stage: StageResult} of the config's eval stages on the params rebuilt from the artifact alone.

    Pre-quant TTT is not among them: it adapts the float weights before export.
    """
    mesh = mesh or mesh_lib.make_mesh()
    check_config(cfg, mesh.devices.size, train=False)
    data = load_data(cfg)
    model, params = load_artifact_model(cfg, artifact, mesh)
    return eval_stages.run_stages(cfg, model, params, eval_stages.Val(data.val_tokens, data.lut), mesh, log=log)


OFFICIAL, NONCOMPLIANT, UNAUDITED = "val_bpb (official)", "non-compliant (reproduction)", "unaudited"


def audited(summary: dict, report: dict, run: RunDir | None = None) -> dict:
    """The summary's compliance after the audit: official only if no flag and no check fails.

    The report goes to `audit.json` in the run dir; the summary keeps one line per check.
    """
    if run is not None and run.is_writer:
        run.write_json("audit.json", report)
    failed = [f"audit {c['name']}: {c['evidence']}" for c in report["checks"] if c["status"] == "FAIL"]
    reasons = list(dict.fromkeys(summary.get("noncompliance", []) + failed))
    return {"audit": {"verdict": report["verdict"], "seconds": report["seconds"],
                      "checks": {c["name"]: f"{c['status']}: {c['evidence']}" for c in report["checks"]}},
            "noncompliance": reasons, "compliance": NONCOMPLIANT if reasons else OFFICIAL}


def hardware_name(cfg) -> str:
    if cfg.eval.hardware:
        return str(cfg.eval.hardware)
    devs = jax.devices()
    return f"{len(devs)}x{devs[0].device_kind}" if devs else "unknown"


def evaluation_summary(cfg, results: dict, post_seconds: float, stage_seconds: dict | None = None) -> dict:
    """Per-stage results, the final score, its compliance label and the eval-budget check."""
    if not results:
        raise ValueError("eval.stages is empty: list at least one stage, e.g. 'roundtrip'")
    final = list(results)[-1]
    reasons = eval_stages.noncompliance(cfg)
    for name, r in results.items():
        reasons += [f"{name}: {p}" for p in r.problems]
        if not r.ledger.compliant:
            reasons += [f"{name}: {n}" for n in r.ledger.notes if not any(n in x for x in reasons)]
    reasons = list(dict.fromkeys(reasons))
    return {
        "eval": {n: r.to_json() for n, r in results.items()},
        "final_stage": final,
        "val_bpb": results[final].val_bpb,
        "val_loss": results[final].val_loss,
        "compliance": NONCOMPLIANT if reasons else UNAUDITED,  # official only after the audit (`audited`)
        "noncompliance": reasons,
        "stage_seconds": stage_seconds or {},
        "eval_budget": {"seconds": post_seconds, "budget_seconds": float(cfg.eval.budget_seconds),
                        "fits": post_seconds <= cfg.eval.budget_seconds, "hardware": hardware_name(cfg)},
    }
