"""`python -m golf_jax.quant RUN_DIR [--eval]`: the artifact again, from RUN_DIR/params.msgpack.

The job saves its float weights (after averaging and any pre-quant TTT) as params.msgpack
just before it exports, so a run whose export failed (over budget, diverged weights, a
crash, a bug fixed since) keeps its training. This rebuilds the model of RUN_DIR/config.json,
exports with the run's export.* settings (gptq_int6 calibrates again, on the data the run
recorded in data.json), writes RUN_DIR/model.golfjax and submission.py and prints the
bytes; --eval then runs the config's eval stages on the new artifact (as the job does).
RUN_DIR/export.json records the result. Never packed: a submission does not re-export.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from absl import flags

from golf_jax.core import cli
from golf_jax.core.errors import UserError

FLAGS = cli.flag_values()
_EVAL = flags.DEFINE_bool("eval", False, "Then run the config's eval stages on the artifact.", flag_values=FLAGS)


def read_params(path: Path, like: dict) -> dict:
    """The params pytree in `path` (flax msgpack), checked against `like`'s names and shapes."""
    import numpy as np
    from flax import serialization, traverse_util

    try:
        flat = traverse_util.flatten_dict(serialization.msgpack_restore(path.read_bytes()))
    except Exception as e:  # noqa: BLE001 (msgpack's errors on a cut or damaged file have no common base)
        raise UserError(f"{path}: damaged, not the params a run saved ({type(e).__name__}: {e}); a full disk or a "
                        "crash while it was written? rerun the training job") from e
    want = traverse_util.flatten_dict(like)
    wrong = sorted("/".join(k) for k in set(want) | set(flat)
                   if k not in flat or k not in want or np.shape(flat[k]) != tuple(want[k].shape))
    if wrong:
        raise UserError(f"{path} does not fit the model of {path.parent / 'config.json'}: {len(wrong)} tensors "
                        f"missing or of another shape, e.g. {wrong[:3]}; pass the run directory that wrote it")
    return traverse_util.unflatten_dict(flat)


def reexport(run_dir: str | Path, evaluate: bool = False, log=print) -> dict:
    """Export RUN_DIR/params.msgpack with the run's config (and evaluate it); returns export.json's contents."""
    import jax

    from golf_jax.submission import codebytes

    from golf_jax.core import mesh as mesh_lib

    from golf_jax import model as model_lib, pipeline
    from golf_jax.config import run_config
    from golf_jax.core.rundir import recorded_data
    from golf_jax.quant import export, hessian
    from golf_jax.core.rundir import write_atomic

    run_dir = Path(run_dir)
    weights = run_dir / "params.msgpack"
    if not weights.is_file():
        raise UserError(f"{weights}: no such file; pass a run directory whose job reached the export stage "
                        "(it saves params.msgpack just before exporting)")
    cfg = run_config(run_dir / "config.json")  # keys added to the schema since the run keep their defaults
    # The script is packed for the run's config as it ran (data.source=default packs the corpus
    # generator), as the job's export stage packed it: same modules, same code bytes.
    script = codebytes.script(cfg)
    recorded_data(cfg, run_dir / "config.json")  # the data the run trained and evaluated on
    mesh = mesh_lib.make_mesh()
    model = model_lib.build_model(cfg.model)
    abstract = pipeline.abstract_params(model, cfg.train.seq_len)
    params = read_params(weights, abstract)
    labels = model_lib.param_labels(cfg.model, abstract, cfg.compat)
    if evaluate:  # the eval's settings and data before anything is rewritten
        pipeline.check_config(cfg, mesh.devices.size, train=False)
    data = pipeline.load_data(cfg) if evaluate or cfg.export.format == "gptq_int6" else None
    calib = None
    if cfg.export.format == "gptq_int6":
        calib = hessian.calibrate(cfg, model, jax.device_put(params, mesh_lib.replicated(mesh)), mesh,
                                  data_dir=data.data_dir, val_tokens=data.val_tokens, bos_id=data.bos_id, log=log)
    write_atomic(run_dir / "submission.py", script)
    info = export.export_artifact(params, labels, cfg, run_dir, len(script), calib=calib)
    log(f"artifact: {info.path} weights {info.weight_bytes:,} B + code {info.code_bytes:,} B = "
        f"{info.total_bytes:,} B (budget {cfg.export.budget_bytes:,})")
    out = {"artifact_path": str(info.path), "weight_bytes": info.weight_bytes, "code_bytes": info.code_bytes,
           "artifact_bytes": info.total_bytes, **info.report}
    if evaluate:
        t0 = time.perf_counter()
        results = pipeline.evaluate_artifact(cfg, info.path, mesh, log=log)
        out.update(pipeline.evaluation_summary(cfg, results, time.perf_counter() - t0))  # run_stages logs each
    write_atomic(run_dir / "export.json", json.dumps(out, indent=2, sort_keys=True, default=str) + "\n")
    return out


def _main(args: list[str]) -> None:
    (run_dir,) = cli.positionals(args, "RUN_DIR (a training run's directory: it holds config.json and "
                                 "params.msgpack)", 1, 1)
    reexport(run_dir, evaluate=_EVAL.value)


def main(argv: list[str] | None = None) -> int:
    """The command (golf_jax/core/cli.py's convention): argv after the program name, default sys.argv[1:]."""
    return cli.run(_main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(main())
