"""`python -m golf_jax.audit --config=configs/X.py [--artifact PATH] [--evaluator MODULE:FACTORY] [--json OUT]`

Prints one row per check (PASS / FAIL / SKIP and the evidence) and exits 0 only when
no check fails (1 when one does; 2 and one line on bad input, as every entry point).
`--artifact` is counted for the artifact-bytes budget; its weights are the audited model
only with `--config.audit.weights=artifact` (by default a small random model of the
config's architecture: legality is a property of the procedure). `--evaluator` audits a user's evaluator instead of the config's stages:
MODULE is an importable module or a path to a .py file, FACTORY a function
`factory(ctx: golf_jax.eval.stages.EvalContext) -> evaluator` with the harness's
interface (golf_jax/eval/harness.py); it runs in a process of its own
(golf_jax/audit/isolated.py), told the real evaluation's sizes, and may draw randomness
only from EvalContext.seed. `--summary` (default: the artifact's run dir
summary.json) supplies timings for the time budgets.

On a machine without accelerators the audit simulates 8 host devices (unless XLA_FLAGS
says otherwise), so that batches are sharded as in production.
"""

from __future__ import annotations

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import importlib.util  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from absl import flags  # noqa: E402

from golf_jax.core import cli  # noqa: E402
from golf_jax.audit.isolated import load_factory  # noqa: E402,F401 (the factory's loader, in the evaluator's process)
from golf_jax.core.errors import UserError  # noqa: E402

FLAGS = cli.flag_values()
_CONFIG = cli.required(cli.define_config(FLAGS), "a configs/*.py file, or a run's config.json or directory")
_ARTIFACT = flags.DEFINE_string("artifact", None, "An artifact (RUN_DIR/model.golfjax): its bytes count against the "
                                "budget; its weights are audited only with --config.audit.weights=artifact (by "
                                "default the audit scores a small random model of the config's architecture).",
                                flag_values=FLAGS)
_EVALUATOR = flags.DEFINE_string("evaluator", None, "MODULE:FACTORY (or path/to/file.py:FACTORY) of your own "
                                 "evaluator.", flag_values=FLAGS)
_JSON = flags.DEFINE_string("json", None, "Write the report as JSON to this file.", flag_values=FLAGS)
_SUMMARY = flags.DEFINE_string("summary", None, "A run's summary.json with timings (default: the artifact's).",
                               flag_values=FLAGS)


def check_spec(spec: str) -> str:
    """`module:function` or `path/to/file.py:function`, checked without importing it (a file
    path made absolute): the evaluator's process imports it (golf_jax/audit/isolated.py)."""
    if ":" not in spec:
        raise UserError(f"--evaluator={spec!r}: use MODULE:FACTORY or path/to/file.py:FACTORY")
    where, name = spec.rsplit(":", 1)
    if where.endswith(".py") or os.sep in where:
        path = Path(where)
        if not path.is_file():
            raise UserError(f"--evaluator={spec!r}: no such file {path}")
        try:  # compiled, not run: the user's code runs in the evaluator's process only
            compile(path.read_bytes(), str(path), "exec")
        except (SyntaxError, ValueError) as e:
            raise UserError(f"--evaluator={spec!r}: {where} does not import ({type(e).__name__}: {e}); fix the "
                            "file or pass another") from e
        return f"{path.resolve()}:{name}"
    try:
        found = importlib.util.find_spec(where)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise UserError(f"--evaluator={spec!r}: {where} does not import (no such module); pass an importable "
                        "module or a path to a .py file")
    return spec


def check_inputs(cfg, artifact: str | None, json_out: str | None = None) -> None:
    """The config, the artifact and the output place, before anything compiles."""
    import jax

    from golf_jax.core import mesh as mesh_lib
    from golf_jax import pipeline

    checked = cfg.copy_and_resolve_references()
    checked.audit.enabled = True  # the audit's own keys too, whatever the config says about a job's audit
    pipeline.check_config(checked, jax.device_count(), train=False)  # every key's range
    if json_out:
        cli.check_output(json_out, "--json")
    if artifact is not None and not Path(artifact).is_file():
        raise UserError(f"--artifact={artifact}: no such file (pass RUN_DIR/model.golfjax of a training run)")
    if cfg.audit.weights == "artifact" and artifact is None:
        raise UserError("--config.audit.weights=artifact audits the artifact's weights: pass --artifact="
                        "RUN_DIR/model.golfjax, or leave audit.weights=random")
    if artifact is not None:  # readable, and (when its weights are audited) of the config's model
        from golf_jax.quant import export

        if cfg.audit.weights == "artifact":
            pipeline.load_artifact_model(cfg, artifact, mesh_lib.make_mesh())
        else:
            try:
                export.read_tensors(Path(artifact).read_bytes())
            except (ValueError, OSError) as e:
                raise UserError(f"{artifact}: not a readable artifact ({e})") from e


def _main(args: list[str]) -> int:
    cli.positionals(args)
    from golf_jax.core import compile_cache
    from golf_jax.audit.run import run_audit

    compile_cache.enable()  # before the first compile: a rerun reads its executables back (docs/perf.md)

    artifact, cfg = _ARTIFACT.value, _CONFIG.value
    check_inputs(cfg, artifact, _JSON.value)
    summary_path = _SUMMARY.value or (str(Path(artifact).parent / "summary.json") if artifact else None)
    summary = None
    if _SUMMARY.value and not Path(_SUMMARY.value).is_file():
        raise UserError(f"--summary={_SUMMARY.value}: no such file (pass a run's summary.json, or leave it out)")
    if summary_path and Path(summary_path).is_file():
        try:
            summary = json.loads(Path(summary_path).read_text())
        except ValueError as e:
            raise UserError(f"{summary_path}: not a run's summary.json ({e}); pass --summary of another run") from e
    if artifact is not None and cfg.audit.weights != "artifact":
        print(f"note: --artifact counts for the bytes budget only; the audit scores a random model of the config "
              f"(--config.audit.weights=artifact audits {artifact}'s weights)", flush=True)
    custom = check_spec(_EVALUATOR.value) if _EVALUATOR.value else None  # imported in its own process only
    report = run_audit(cfg, artifact=artifact, custom=custom, summary=summary)
    report["argv"] = sys.argv[1:]
    if _JSON.value:
        from golf_jax.core.rundir import write_atomic

        Path(_JSON.value).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(_JSON.value, json.dumps(report, indent=1) + "\n")
    return 0 if report["verdict"] == "PASS" else 1


def main(argv: list[str] | None = None) -> int:
    """The command (golf_jax/core/cli.py's convention): argv after the program name, default sys.argv[1:]."""
    return cli.run(_main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(main())
