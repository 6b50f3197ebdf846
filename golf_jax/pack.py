"""One self-extracting submission script: the counted code of an artifact.

`python -m golf_jax.pack --artifact RUN_DIR/model.golfjax --out submission.py`

The script embeds golf_jax/**/*.py as lzma + base85 JSON {relative path: source}
and a bootstrap that unpacks it into a temp dir, puts that dir first on sys.path
(ahead of any installed golf_jax) and calls `submission_main` here:

    python submission.py eval --artifact model.golfjax --config-json config.json \\
        --data-dir SHARDS --tokenizer TOKENIZER.model     # prints val_loss / val_bpb
    python submission.py train --config-json config.json  # a full training job

Code bytes (export.code_bytes) = len(build_script()): the script is the whole code.
The script does not depend on the artifact, so --artifact only names what it goes
with (its size is reported next to the script's).
"""

from __future__ import annotations

import argparse
import base64
import json
import lzma
import sys
from pathlib import Path

_BOOTSTRAP = '''#!/usr/bin/env python3
"""golf_jax submission (self-extracting): python submission.py {{eval,train}} --help"""
import atexit, base64, json, lzma, os, shutil, sys, tempfile
_D = b"""{data}"""
def _main():
    d = tempfile.mkdtemp(prefix="golf_jax_sub_")
    atexit.register(shutil.rmtree, d, True)
    for p, s in json.loads(lzma.decompress(base64.b85decode(_D))).items():
        f = os.path.join(d, p)
        os.makedirs(os.path.dirname(f), exist_ok=True)
        with open(f, "w", encoding="utf-8") as fh:
            fh.write(s)
    sys.path.insert(0, d)
    from golf_jax.pack import submission_main
    sys.exit(submission_main(sys.argv[1:]))
if __name__ == "__main__":
    _main()
'''


def package_files() -> dict[str, str]:
    """{path relative to the repo root: source} of every golf_jax/**/*.py, sorted."""
    from golf_jax.train.rundir import package_sources

    root = Path(__file__).resolve().parent.parent
    return {str(p.relative_to(root)): p.read_text(encoding="utf-8") for p in package_sources()}


def build_script() -> bytes:
    """The submission script's bytes (deterministic for fixed sources; independent of its file name)."""
    payload = json.dumps(package_files(), sort_keys=True, separators=(",", ":")).encode("utf-8")
    data = base64.b85encode(lzma.compress(payload, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME))
    return _BOOTSTRAP.format(data=data.decode("ascii")).encode("utf-8")


def load_config(path: str | Path):
    """A run's config.json (RunDir writes it) as a ConfigDict."""
    import ml_collections

    return ml_collections.ConfigDict(json.loads(Path(path).read_text()))


def evaluate_artifact(cfg, artifact: str | Path, mesh=None) -> tuple[float, float]:
    """(val_loss, val_bpb) of the plain eval of the params rebuilt from the artifact alone."""
    import jax

    from golf_jax import model as model_lib
    from golf_jax.data import shards
    from golf_jax.data.tokenizer import build_byte_luts, load_tokenizer
    from golf_jax.eval import plain
    from golf_jax.quant import export
    from golf_jax.train import mesh as mesh_lib

    mesh = mesh or mesh_lib.make_mesh()
    t = cfg.train
    lut = build_byte_luts(load_tokenizer(cfg.data.tokenizer, cfg.model.vocab_size), cfg.model.vocab_size)
    val = shards.load_validation_tokens(str(Path(cfg.data.dir) / "fineweb_val_*.bin"), t.seq_len,
                                        cfg.model.vocab_size, cfg.data.val_max_tokens or None)
    model = model_lib.build_model(cfg.model)
    like = jax.eval_shape(lambda r: model.init(r, jax.numpy.zeros((1, t.seq_len), "int32"))["params"],
                          jax.random.PRNGKey(0))
    params = jax.device_put(export.load_artifact(Path(artifact), like), mesh_lib.replicated(mesh))
    acc = plain.make_evaluator(model, lut, mesh, val, t.seq_len, t.val_batch_tokens)(params)
    return acc.val_loss, acc.val_bpb


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
        from golf_jax.train.loop import train

        print(json.dumps(train(cfg), default=str))
        return 0
    if args.data_dir:
        cfg.data.dir = args.data_dir
    if args.tokenizer:
        cfg.data.tokenizer = args.tokenizer
    import golf_jax

    print(f"golf_jax from {Path(golf_jax.__file__).parent}", file=sys.stderr)
    loss, bpb = evaluate_artifact(cfg, args.artifact)
    print(f"val_loss {loss!r} val_bpb {bpb!r}")
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
