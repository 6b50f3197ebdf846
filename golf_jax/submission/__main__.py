"""`python -m golf_jax.submission --artifact RUN_DIR/model.golfjax --out submission.py`: write a
run's submission script (golf_jax/submission/build.py builds it; golf_jax/submission/script.py is its entry).

The script holds the golf_jax modules that the config's train and eval import, minified,
for the run's config (RUN_DIR/config.json unless --config-json says otherwise), which is
validated first: the script itself carries no config checks (golf_jax/submission/build.py).
Code bytes = len(the script). The script does not depend on the artifact, so --artifact
only names what it goes with (its size is reported next to the script's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from golf_jax.submission import build

from golf_jax import pipeline
from golf_jax.core.errors import UserError, exit_code
from golf_jax.core.rundir import write_atomic
from golf_jax.core.rundir import load_run_config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m golf_jax.submission", description="Write the submission script of a run.")
    ap.add_argument("--artifact", required=True, help="RUN_DIR/model.golfjax")
    ap.add_argument("--config-json", help="the config to pack for (default: config.json beside the artifact)")
    ap.add_argument("--out", required=True, help="the submission script to write")
    args = ap.parse_args(argv)
    if not Path(args.artifact).is_file():
        raise UserError(f"--artifact {args.artifact}: no such file; pass RUN_DIR/model.golfjax")
    cfg = load_run_config(args.config_json or Path(args.artifact).parent / "config.json")
    cfg.audit.enabled = False  # the script never audits (golf_jax/submission/script.py)
    pipeline.check_config(cfg, num_devices=1)  # the script does not check its config (golf_jax/submission/build.py)
    if Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a folder; pass the file to write, e.g. {Path(args.out) / 'submission.py'}")
    script = build.build_script(cfg)
    write_atomic(args.out, script)
    weights = Path(args.artifact).stat().st_size
    mods = build.packed_modules(cfg)
    print(f"wrote {args.out}: {len(mods)} modules; code {len(script):,} B + weights {weights:,} B = "
          f"{len(script) + weights:,} B")
    return 0


if __name__ == "__main__":
    sys.exit(exit_code(main))
