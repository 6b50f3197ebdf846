"""`python -m golf_jax.audit --config=configs/X.py [--artifact PATH] [--evaluator MODULE:FACTORY] [--json OUT]`

Prints one row per check (PASS / FAIL / SKIP and the evidence) and exits 0 only when
no check fails. `--evaluator` audits a user's evaluator instead of the config's stages:
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

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from golf_jax.audit.isolated import load_factory  # noqa: E402,F401 (the factory's loader)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
_ARTIFACT = flags.DEFINE_string("artifact", None, "An artifact (RUN_DIR/model.golfjax) whose weights to audit with.")
_EVALUATOR = flags.DEFINE_string("evaluator", None, "MODULE:FACTORY (or path/to/file.py:FACTORY) of your own evaluator.")
_JSON = flags.DEFINE_string("json", None, "Write the report as JSON to this file.")
_SUMMARY = flags.DEFINE_string("summary", None, "A run's summary.json with timings (default: the artifact's).")


def check_spec(spec: str) -> str:
    """`module:function` or `path/to/file.py:function`, checked without importing it (a file
    path made absolute): the evaluator's process imports it (golf_jax/audit/isolated.py)."""
    if ":" not in spec:
        raise ValueError(f"--evaluator={spec!r}: use MODULE:FACTORY or path/to/file.py:FACTORY")
    where, name = spec.rsplit(":", 1)
    if where.endswith(".py") or os.sep in where:
        if not Path(where).is_file():
            raise FileNotFoundError(f"--evaluator={spec!r}: no such file {where}")
        return f"{Path(where).resolve()}:{name}"
    return spec


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from golf_jax import compile_cache
    from golf_jax.audit.run import run_audit

    compile_cache.enable()  # before the first compile: a rerun reads its executables back (docs/perf.md)

    artifact = _ARTIFACT.value
    if artifact is not None and not Path(artifact).is_file():
        raise FileNotFoundError(f"--artifact={artifact}: no such file (pass RUN_DIR/model.golfjax of a training run)")
    summary_path = _SUMMARY.value or (str(Path(artifact).parent / "summary.json") if artifact else None)
    summary = None
    if summary_path and Path(summary_path).is_file():
        summary = json.loads(Path(summary_path).read_text())
    elif _SUMMARY.value:
        raise FileNotFoundError(f"--summary={_SUMMARY.value}: no such file")
    custom = check_spec(_EVALUATOR.value) if _EVALUATOR.value else None  # imported in its own process only
    report = run_audit(_CONFIG.value, artifact=artifact, custom=custom, summary=summary)
    report["argv"] = sys.argv[1:]
    if _JSON.value:
        Path(_JSON.value).parent.mkdir(parents=True, exist_ok=True)
        Path(_JSON.value).write_text(json.dumps(report, indent=1) + "\n")
    sys.exit(0 if report["verdict"] == "PASS" else 1)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
