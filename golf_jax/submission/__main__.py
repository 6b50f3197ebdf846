"""`python -m golf_jax.submission --artifact=RUN_DIR/model.golfjax --out=submission.py`: write a
run's submission script (golf_jax/submission/build.py builds it; golf_jax/submission/script.py is its entry).

The script holds the golf_jax modules that the config's train and eval import, minified,
for the run's config (RUN_DIR/config.json unless --config_json says otherwise), which is
validated first: the script itself carries no config checks (golf_jax/submission/build.py).
Code bytes = len(the script). The script does not depend on the artifact, so --artifact
only names what it goes with (its size is reported next to the script's).
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import flags

from golf_jax import pipeline
from golf_jax.config import check_run_keys
from golf_jax.core import cli
from golf_jax.core.errors import UserError
from golf_jax.core.rundir import load_run_config, write_atomic
from golf_jax.submission import build

FLAGS = cli.flag_values()
_ARTIFACT = cli.required(flags.DEFINE_string("artifact", None, "RUN_DIR/model.golfjax.", flag_values=FLAGS),
                         "the run's artifact, --artifact=RUN_DIR/model.golfjax")
_CONFIG_JSON = flags.DEFINE_string("config_json", None, "The config to pack for (default: config.json beside the "
                                   "artifact).", flag_values=FLAGS)
_OUT = cli.required(flags.DEFINE_string("out", None, "The submission script to write.", flag_values=FLAGS),
                    "the script to write, e.g. --out=submission.py")


def _main(args: list[str]) -> int:
    cli.positionals(args)
    artifact, out = _ARTIFACT.value, _OUT.value
    if not Path(artifact).is_file():
        raise UserError(f"--artifact={artifact}: no such file; pass RUN_DIR/model.golfjax")
    config_json = _CONFIG_JSON.value or Path(artifact).parent / "config.json"
    cfg = load_run_config(config_json)
    check_run_keys(cfg, config_json)  # the packed script reads this file as it is: no schema fills it in
    cfg.audit.enabled = False  # the script never audits (golf_jax/submission/script.py)
    pipeline.check_config(cfg, num_devices=1)  # the script does not check its config (golf_jax/submission/build.py)
    if Path(out).is_dir():
        raise UserError(f"--out={out} is a folder; pass the file to write, e.g. {Path(out) / 'submission.py'}")
    script = build.build_script(cfg)
    write_atomic(out, script)
    weights = Path(artifact).stat().st_size
    mods = build.packed_modules(cfg)
    print(f"wrote {out}: {len(mods)} modules; code {len(script):,} B + weights {weights:,} B = "
          f"{len(script) + weights:,} B")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command (golf_jax/core/cli.py's convention): argv after the program name, default sys.argv[1:]."""
    return cli.run(_main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(main())
