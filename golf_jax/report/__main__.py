"""`python -m golf_jax.report RUN_DIR [--out=DIR]`: plots and summary.md of a run (default DIR: RUN_DIR/report)."""

from __future__ import annotations

import sys

from absl import flags

from golf_jax.core import cli
from golf_jax.core.errors import UserError

FLAGS = cli.flag_values()
_OUT = flags.DEFINE_string("out", None, "Where to write (default: RUN_DIR/report).", flag_values=FLAGS)


def _main(args: list[str]) -> int:
    (run_dir,) = cli.positionals(args, "RUN_DIR (a run directory, runs/<name>-<timestamp>/)", 1, 1)
    try:
        from golf_jax.report.write import write_report
    except ImportError as e:
        raise UserError(f"the report needs matplotlib ({e}); pip install -e '.[report]'") from e
    try:
        files, notes = write_report(run_dir, _OUT.value)
    except (ValueError, OSError) as e:
        raise UserError(str(e)) from e
    for f in files:
        print(f"wrote {f}")
    for n in notes:
        print(f"skipped {n}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command (golf_jax/core/cli.py's convention): argv after the program name, default sys.argv[1:]."""
    return cli.run(_main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(main())
