"""Errors a user can fix (a config value, a data file, a path), and how entry points end on them.

A UserError's message is the whole story in one line: it names the key or file and how
to fix it. The entry points (`python -m golf_jax.train`, `golf_jax.eval`, the packed
`submission.py`) print that line and exit with code 2; any other exception is a bug and
keeps its traceback. `--debug` or GOLF_JAX_DEBUG=1 shows a UserError's traceback too.
"""

from __future__ import annotations

import os
import sys
import traceback


class UserError(ValueError):
    """Bad input, stated in one line that names it and says how to fix it."""


def debugging(debug: bool = False) -> bool:
    return debug or os.environ.get("GOLF_JAX_DEBUG", "") not in ("", "0")


def exit_code(main, debug: bool = False) -> int:
    """`main()`'s exit code (0 for None), or 2 after printing a UserError as one line on stderr."""
    try:
        return main() or 0
    except UserError as e:
        if debugging(debug):
            traceback.print_exc()
        print("error: " + " ".join(str(e).split()), file=sys.stderr, flush=True)
        return 2
