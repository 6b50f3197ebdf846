"""One self-extracting submission script: the counted code of an artifact.

`python -m golf_jax.pack --artifact RUN_DIR/model.golfjax --out submission.py`

The script (built by golf_jax/packer.py for the run's config, RUN_DIR/config.json
unless --config-json says otherwise) holds the golf_jax modules that the config's train
and eval import, minified, and calls `submission_main` here:

    python submission.py eval --artifact model.golfjax --config-json config.json \\
        --data-dir SHARDS --tokenizer TOKENIZER.model     # the config's eval stages
    python submission.py train --config-json config.json  # a full training job (no audit)

`eval` runs the same stages from the same config as the training job
(golf_jax/eval/stages.py) and prints `eval <stage>: val_bpb ...` per stage.
Code bytes = len(the script). The script does not depend on the artifact, so
--artifact only names what it goes with (its size is reported next to the script's).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from golf_jax import packset


def load_config(path: str | Path):
    """A run's config.json (RunDir writes it) as a ConfigDict."""
    import ml_collections

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config.json (a run directory holds one; or pass --config-json)")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def submission_main(argv: list[str]) -> int:
    """Entry point of the packed script (also usable in-tree)."""
    ap = argparse.ArgumentParser(prog="submission.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ev = sub.add_parser("eval", help="val_bpb of an artifact")
    ev.add_argument("--artifact", required=True)
    ev.add_argument("--config-json", required=True, help="the run's config.json")
    ev.add_argument("--data-dir", help="shard folder with fineweb_val_*.bin (default: data.dir of the config)")
    ev.add_argument("--tokenizer", help="SentencePiece .model (default: data.tokenizer of the config)")
    tr = sub.add_parser("train", help="a full training job (writes a run dir; the audit is not packed)")
    tr.add_argument("--config-json", required=True)
    args = ap.parse_args(argv)
    cfg = load_config(args.config_json)
    if args.cmd == "train":
        from golf_jax.pipeline import run

        cfg.audit.enabled = False  # golf_jax.audit is not packed (packset.NOT_PACKED): audit runs in-tree
        packset.check_packed(cfg)
        print(json.dumps(run(cfg), default=str))
        return 0
    if args.data_dir:
        cfg.data.source, cfg.data.dir = "dir", args.data_dir
    if args.tokenizer:
        cfg.data.tokenizer = args.tokenizer
    packset.check_packed(cfg)
    import golf_jax

    print(f"golf_jax from {Path(golf_jax.__file__).parent}", file=sys.stderr)
    from golf_jax.pipeline import evaluate_artifact

    results = evaluate_artifact(cfg, args.artifact, log=lambda m: print(m, file=sys.stderr))
    for name, r in results.items():
        print(f"eval {name}: val_loss {r.val_loss!r} val_bpb {r.val_bpb!r} ({r.seconds:.1f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m golf_jax.pack", description="Write the submission script of a run.")
    ap.add_argument("--artifact", required=True, help="RUN_DIR/model.golfjax")
    ap.add_argument("--config-json", help="the config to pack for (default: config.json beside the artifact)")
    ap.add_argument("--out", required=True, help="the submission script to write")
    args = ap.parse_args(argv)
    from golf_jax import packer  # not packed (packset.NOT_PACKED)

    cfg = load_config(args.config_json or Path(args.artifact).parent / "config.json")
    script = packer.build_script(cfg)
    Path(args.out).write_bytes(script)
    weights = Path(args.artifact).stat().st_size
    mods = packer.packed_modules(cfg)
    print(f"wrote {args.out}: {len(mods)} modules; code {len(script):,} B + weights {weights:,} B = "
          f"{len(script) + weights:,} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
