"""One self-extracting submission script: the counted code of an artifact.

`python -m golf_jax.pack --artifact RUN_DIR/model.golfjax --out submission.py`

The script (built by golf_jax/codebytes.py) unpacks golf_jax's sources and calls
`submission_main` here:

    python submission.py eval --artifact model.golfjax --config-json config.json \\
        --data-dir SHARDS --tokenizer TOKENIZER.model     # the config's eval stages
    python submission.py train --config-json config.json  # a full training job

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

from golf_jax.codebytes import build_script


def load_config(path: str | Path):
    """A run's config.json (RunDir writes it) as a ConfigDict."""
    import ml_collections

    return ml_collections.ConfigDict(json.loads(Path(path).read_text()))


def submission_main(argv: list[str]) -> int:
    """Entry point of the packed script (also usable in-tree)."""
    ap = argparse.ArgumentParser(prog="submission.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ev = sub.add_parser("eval", help="val_bpb of an artifact")
    ev.add_argument("--artifact", required=True)
    ev.add_argument("--config-json", required=True, help="the run's config.json")
    ev.add_argument("--data-dir", help="shard folder with fineweb_val_*.bin (default: data.dir of the config)")
    ev.add_argument("--tokenizer", help="SentencePiece .model (default: data.tokenizer of the config)")
    tr = sub.add_parser("train", help="a full training job (writes a run dir)")
    tr.add_argument("--config-json", required=True)
    args = ap.parse_args(argv)
    cfg = load_config(args.config_json)
    if args.cmd == "train":
        from golf_jax.pipeline import run

        print(json.dumps(run(cfg), default=str))
        return 0
    if args.data_dir:
        cfg.data.source, cfg.data.dir = "dir", args.data_dir
    if args.tokenizer:
        cfg.data.tokenizer = args.tokenizer
    import golf_jax

    print(f"golf_jax from {Path(golf_jax.__file__).parent}", file=sys.stderr)
    from golf_jax.pipeline import evaluate_artifact

    results = evaluate_artifact(cfg, args.artifact, log=lambda m: print(m, file=sys.stderr))
    for name, r in results.items():
        print(f"eval {name}: val_loss {r.val_loss!r} val_bpb {r.val_bpb!r} ({r.seconds:.1f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m golf_jax.pack", description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", required=True, help="RUN_DIR/model.golfjax")
    ap.add_argument("--out", required=True, help="the submission script to write")
    args = ap.parse_args(argv)
    script = build_script()
    Path(args.out).write_bytes(script)
    weights = Path(args.artifact).stat().st_size
    print(f"wrote {args.out}: code {len(script):,} B + weights {weights:,} B = {len(script) + weights:,} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
