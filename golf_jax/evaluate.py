"""`python -m golf_jax.evaluate --config=configs/X.py --artifact=RUN_DIR/model.golfjax [--config.eval.…] [--debug]`

Runs the config's eval stages on an existing artifact, prints a line
`eval <stage>: val_bpb <value> (<seconds> s)` per stage, audits the procedure
(golf_jax/audit; audit.enabled) and writes `eval.json` (with the verdict), the stages'
ledgers and `audit.json` into a new run dir `<train.run_dir>/<name>-eval-<timestamp>/`.
"""

from __future__ import annotations

import time

from absl import app, flags
from ml_collections import config_flags

from golf_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
_ARTIFACT = flags.DEFINE_string("artifact", None, "The artifact to evaluate (RUN_DIR/model.golfjax).")


def evaluate(cfg, artifact: str) -> dict:
    """Evaluate `artifact` with cfg's eval stages; returns what eval.json holds."""
    from pathlib import Path

    from golf_jax import mesh as mesh_lib
    from golf_jax import multihost
    from golf_jax import pipeline
    from golf_jax.data import source
    from golf_jax.errors import UserError
    from golf_jax.rundir import RunDir

    if not Path(artifact).is_file():
        raise UserError(f"--artifact={artifact}: no such file (pass RUN_DIR/model.golfjax of a training run)")
    multihost.initialize_from_env()
    mesh = mesh_lib.make_mesh()
    pipeline.check_config(cfg, mesh.devices.size, train=False)
    cfg = source.absolute_paths(cfg)  # the run dir's config.json finds the data from any directory
    run = RunDir(cfg.train.run_dir, f"{cfg.train.run_name or cfg.name}-eval", cfg)
    out: dict = {"status": "running", "artifact": str(artifact), "run_dir": str(run.path)}
    t0 = time.perf_counter()
    with run.recording(out, "eval.json", what="evaluation"):
        loaded = pipeline.load_artifact_model(cfg, artifact, mesh)
        results = pipeline.evaluate_artifact(cfg, artifact, mesh=mesh, run=run, log=run.log, loaded=loaded)
        out.update(pipeline.evaluation_summary(cfg, results, time.perf_counter() - t0))
        for name, r in results.items():
            if run.is_writer:  # one process prints (multi-host)
                print(f"eval {name}: val_bpb {r.val_bpb:.6f} ({r.seconds:.1f} s)", flush=True)
        if cfg.audit.enabled:
            from golf_jax.audit.run import run_audit

            report = run_audit(cfg, mesh, artifact=artifact, trained=loaded, summary=out, log=run.log)
            out.update(pipeline.audited(out, report, run))
        if run.is_writer:
            print(f"compliance: {out['compliance']}", flush=True)
    return out


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from golf_jax import compile_cache

    compile_cache.enable()  # before the first compile: a rerun reads its executables back (docs/perf.md)
    evaluate(_CONFIG.value, _ARTIFACT.value)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "artifact"])
    cli.run(main)
