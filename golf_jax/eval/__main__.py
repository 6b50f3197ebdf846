"""`python -m golf_jax.eval --artifact=RUN_DIR/model.golfjax [--config=configs/X.py | RUN_DIR] [--config.eval.…] [--debug]`

Runs the config's eval stages on an existing artifact, prints a line
`eval <stage>: val_bpb <value> (<seconds> s)` per stage, audits the procedure
(golf_jax/audit; audit.enabled) and writes `eval.json` (with the verdict), the stages'
ledgers and `audit.json` into a new run dir `<train.run_dir>/<name>-eval-<timestamp>/`,
whose path it prints first.

Without `--config` it evaluates with the artifact's own run: RUN_DIR/config.json (read as
data, never executed) and the data that run recorded (RUN_DIR/data.json). Everything that
can be wrong with the input (the config, the data, an artifact of another model, a
tokenizer other than the one the artifact was trained with) is found before the run dir
is made, so a failed check leaves no empty folder behind.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from absl import flags

from golf_jax.core import cli

FLAGS = cli.flag_values()
_CONFIG = cli.define_config(FLAGS, "A configs/*.py file, or a run's config.json or directory (default: the "
                            "artifact's run).")
_ARTIFACT = flags.DEFINE_string("artifact", None, "The artifact to evaluate (RUN_DIR/model.golfjax).",
                                flag_values=FLAGS)


def check_artifact_data(artifact: Path, data) -> str:
    """The tokenizer the artifact was trained with (its run's data.json) must be the evaluation's:
    another tokenizer counts other bytes per token. Returns what was checked, for eval.json."""
    from golf_jax.data.shards import sha256_file
    from golf_jax.core.errors import UserError

    recorded = artifact.parent / "data.json"
    if not recorded.is_file():
        return f"not checked: no data.json beside {artifact} (its run's record of the tokenizer and data)"
    try:
        trained = json.loads(recorded.read_text())
        want = trained.get("tokenizer_sha256")
    except (ValueError, AttributeError) as e:
        raise UserError(f"{recorded}: unreadable ({e}); restore the run's data.json or move the artifact out "
                        "of its run directory to evaluate it unchecked") from e
    got = sha256_file(data.tokenizer_path)
    if want and want != got:
        raise UserError(f"--artifact={artifact} was trained with the tokenizer {trained.get('tokenizer')} (sha256 "
                        f"{want[:12]}..., {recorded}), not {data.tokenizer_path} ({got[:12]}...); evaluate it on its "
                        f"own data: leave out --config, or pass --config.data.tokenizer and --config.data.dir of that "
                        "tokenizer")
    return f"tokenizer sha256 {got[:12]}... as recorded in {recorded}"


def evaluate(cfg, artifact: str, observers=()) -> dict:
    """Evaluate `artifact` with cfg's eval stages; returns what eval.json holds. `observers`: the
    run dir's (golf_jax/core/rundir.py RunDir)."""
    from golf_jax.core import mesh as mesh_lib
    from golf_jax.core import multihost
    from golf_jax import pipeline
    from golf_jax.data import source
    from golf_jax.core.errors import UserError
    from golf_jax.eval import stages as eval_stages
    from golf_jax.core.rundir import RunDir

    if not artifact or not Path(artifact).is_file():
        raise UserError(f"--artifact={artifact}: no such file (pass RUN_DIR/model.golfjax of a training run)")
    multihost.initialize_from_env()
    mesh = mesh_lib.make_mesh()
    pipeline.check_config(cfg, mesh.devices.size, train=False)
    cfg = source.absolute_paths(cfg)  # the run dir's config.json finds the data from any directory
    # Every input check before the run dir exists: a failed one leaves nothing behind.
    data = pipeline.load_data(cfg)
    checked = check_artifact_data(Path(artifact), data)
    loaded = pipeline.load_artifact_model(cfg, artifact, mesh)  # an artifact of another model: one line
    run = RunDir(cfg.train.run_dir, f"{cfg.train.run_name or cfg.name}-eval", cfg, observers)
    if run.is_writer:
        print(f"writing {run.path}", flush=True)
    out: dict = {"status": "running", "artifact": str(artifact), "run_dir": str(run.path), "data_check": checked}
    t0 = time.perf_counter()
    with run.recording(out, "eval.json", what="evaluation"):
        pipeline.record_data(cfg, data, run)
        run.log(f"artifact: {artifact}; data: {data.data_dir}; {checked}")
        model, params = loaded
        results = eval_stages.run_stages(cfg, model, params, eval_stages.Val(data.val_tokens, data.lut), mesh, run=run,
                                         log=run.log)
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


def _main(args: list[str]) -> None:
    cli.positionals(args)
    from golf_jax.core import compile_cache
    from golf_jax.report import tensorboard

    compile_cache.enable()  # before the first compile: a rerun reads its executables back (docs/perf.md)
    evaluate(_CONFIG.value, _ARTIFACT.value, observers=(tensorboard.Events,))  # the scores and the verdict as events too


def with_run_config(argv: list[str]) -> list[str]:
    """argv, with `--config=RUN_DIR` of the artifact's run when --config is left out."""
    from golf_jax.core.errors import UserError

    if any(a == "--config" or a.startswith("--config=") for a in argv):
        return argv
    artifact = next((a.split("=", 1)[1] for a in argv if a.startswith("--artifact=")), None)
    if artifact is None and "--artifact" in argv[:-1]:
        artifact = argv[argv.index("--artifact") + 1]
    if artifact is None:
        raise UserError("--artifact is required: pass RUN_DIR/model.golfjax of a training run")
    return [argv[0], f"--config={Path(artifact).parent}", *argv[1:]]


def main(argv: list[str] | None = None) -> int:
    """The command (golf_jax/core/cli.py's convention): argv after the program name, default sys.argv[1:]."""
    return cli.run(_main, FLAGS, argv, argv_hook=with_run_config)


if __name__ == "__main__":
    sys.exit(main())
