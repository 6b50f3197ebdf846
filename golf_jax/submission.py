"""The packed submission script's entry: `python submission.py {train,eval} ...`.

golf_jax/packer.py packs this module's import closure (golf_jax/packset.py ENTRY) into a
self-extracting script whose bootstrap calls `main`:

    python submission.py eval --artifact model.golfjax --config-json config.json \\
        [--data-dir SHARDS --tokenizer TOKENIZER.model]    # the config's eval stages
    python submission.py train --config-json config.json  # a full training job (no audit)

`eval` runs the same stages from the same config as the training job
(golf_jax/eval/stages.py) and prints `eval <stage>: val_bpb ...` per stage. By default it
reads the data the run recorded (data.json beside config.json).
"""


from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from golf_jax import packset
from golf_jax.errors import UserError, exit_code


def load_config(path: str | Path):
    """A run's config.json (RunDir writes it) as a ConfigDict; a relative data.dir or
    data.tokenizer in it is taken from the folder of the config.json, not the working directory."""
    import ml_collections

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such config.json (a run directory holds one; or pass --config-json)")
    try:
        cfg = ml_collections.ConfigDict(json.loads(path.read_text()))
        for key in ("dir", "tokenizer"):
            if cfg.data[key]:
                cfg.data[key] = str(path.parent.resolve() / cfg.data[key])
    except (ValueError, TypeError, LookupError, AttributeError) as e:
        raise UserError(f"{path}: not a run's config.json ({e!r})") from e
    return cfg


def eval_data(cfg, config_json: str | Path, data_dir: str | None = None, tokenizer: str | None = None) -> None:
    """Point cfg at the data to evaluate on: --data-dir / --tokenizer, else the absolute paths that
    the run recorded in data.json beside its config.json (the default corpus's too), else the config's."""
    recorded = Path(config_json).with_name("data.json")
    if recorded.is_file():
        d = json.loads(recorded.read_text())
        cfg.data.source, cfg.data.dir, cfg.data.tokenizer = "dir", d["data_dir"], d["tokenizer"]
    if data_dir:
        cfg.data.source, cfg.data.dir = "dir", data_dir
    if tokenizer:
        cfg.data.tokenizer = tokenizer


def main(argv: list[str]) -> int:
    """Entry point of the packed script (also usable in-tree): a user error ends as one line and
    exit code 2 (with its traceback under --debug or GOLF_JAX_DEBUG=1)."""
    return exit_code(lambda: _run([a for a in argv if a != "--debug"]), "--debug" in argv)


def _run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="submission.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ev = sub.add_parser("eval", help="val_bpb of an artifact")
    ev.add_argument("--artifact", required=True)
    ev.add_argument("--config-json", required=True, help="the run's config.json")
    ev.add_argument("--data-dir", help="shard folder with fineweb_val_*.bin (default: the run's data.json)")
    ev.add_argument("--tokenizer", help="SentencePiece .model (default: the run's data.json)")
    tr = sub.add_parser("train", help="a full training job (writes a run dir; the audit is not packed)")
    tr.add_argument("--config-json", required=True)
    args = ap.parse_args(argv)
    cfg = load_config(args.config_json)
    cfg.audit.enabled = False  # golf_jax.audit is not packed (packset.NOT_PACKED): audit runs in-tree
    if args.cmd == "train":
        from golf_jax.pipeline import run

        packset.check_packed(cfg)
        print(json.dumps(run(cfg), default=str))
        return 0
    eval_data(cfg, args.config_json, args.data_dir, args.tokenizer)
    packset.check_packed(cfg)
    import golf_jax

    print(f"golf_jax from {Path(golf_jax.__file__).parent}", file=sys.stderr)
    from golf_jax.pipeline import evaluate_artifact

    results = evaluate_artifact(cfg, args.artifact, log=lambda m: print(m, file=sys.stderr))
    for name, r in results.items():
        print(f"eval {name}: val_loss {r.val_loss!r} val_bpb {r.val_bpb!r} ({r.seconds:.1f} s)")
    return 0
