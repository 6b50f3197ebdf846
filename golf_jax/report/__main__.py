"""`python -m golf_jax.report RUN_DIR [--out DIR]`: plots and summary.md of a run (default DIR: RUN_DIR/report)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m golf_jax.report", description=__doc__)
    ap.add_argument("run_dir", help="a run directory, runs/<name>-<timestamp>/")
    ap.add_argument("--out", default=None, help="where to write (default: RUN_DIR/report)")
    args = ap.parse_args(argv)
    try:
        from golf_jax.report.write import write_report
    except ImportError as e:
        print(f"error: the report needs matplotlib ({e}); pip install -e '.[report]'", file=sys.stderr)
        return 2
    try:
        files, notes = write_report(args.run_dir, args.out)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for f in files:
        print(f"wrote {f}")
    for n in notes:
        print(f"skipped {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
