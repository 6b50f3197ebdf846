"""The packed submission script's entry: `python submission.py {train,eval} ...`.

golf_jax/submission/build.py packs this module's import closure (golf_jax/submission/modules.py ENTRY) into a
self-extracting script whose bootstrap calls `main`:

    python submission.py eval --artifact=model.golfjax --config_json=config.json \\
        [--data_dir=SHARDS --tokenizer=TOKENIZER.model]    # the config's eval stages
    python submission.py train --config_json=config.json  # a full training job (no audit)

Its command line follows the repository's convention (golf_jax/core/cli.py) with argparse,
which the script carries anyway: `--name=value` (or `--name value`), a bad command line is one
line `error: ...` and exit code 2, as a UserError is, and `--debug` shows the traceback of either.

`eval` runs the same stages from the same config as the training job
(golf_jax/eval/stages.py) and prints `eval <stage>: val_bpb ...` per stage. By default it
reads the data the run recorded (data.json beside config.json).
"""


from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from golf_jax.core.rundir import load_run_config, recorded_data
from golf_jax.submission import modules
from golf_jax.core.errors import UserError, exit_code


class _Parser(argparse.ArgumentParser):
    def error(_, message, /):  # a bad command line: one line and exit code 2, as a UserError
        raise UserError(message + "; see -h")


def main(argv: list[str]) -> int:
    """Entry point of the packed script (also usable in-tree): a user error ends as one line and
    exit code 2 (with its traceback under --debug or GOLF_JAX_DEBUG=1)."""
    return exit_code(lambda: _run([a for a in argv if a != "--debug"]), "--debug" in argv)


def _run(argv: list[str]) -> int:
    ap = _Parser(prog="submission.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ev = sub.add_parser("eval", help="val_bpb of an artifact")
    ev.add_argument("--artifact", required=True)
    ev.add_argument("--config_json", required=True, help="the run's config.json")
    ev.add_argument("--data_dir", help="shard folder with fineweb_val_*.bin (default: the run's data.json)")
    ev.add_argument("--tokenizer", help="SentencePiece .model (default: the run's data.json)")
    tr = sub.add_parser("train", help="a training job (no audit)")
    tr.add_argument("--config_json", required=True)
    args = ap.parse_args(argv)
    cfg = load_run_config(args.config_json)
    cfg.audit.enabled = False  # golf_jax.audit is not packed (modules.NOT_PACKED): audit runs in-tree
    if args.cmd == "train":
        from golf_jax.pipeline import run

        modules.check_packed(cfg)
        print(json.dumps(run(cfg), default=str))
        return 0
    recorded_data(cfg, args.config_json, args.data_dir, args.tokenizer)
    modules.check_packed(cfg)
    import golf_jax

    print(f"golf_jax from {Path(golf_jax.__file__).parent}", file=sys.stderr)
    from golf_jax.pipeline import evaluate_artifact

    results = evaluate_artifact(cfg, args.artifact, log=lambda m: print(m, file=sys.stderr))
    for name, r in results.items():
        print(f"eval {name}: val_loss {r.val_loss!r} val_bpb {r.val_bpb!r} ({r.seconds:.1f} s)")
    return 0
