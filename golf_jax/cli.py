"""What the absl entry points (`python -m golf_jax.train`, `golf_jax.evaluate`) share: flag
errors and user errors as one line with exit code 2, and `--debug`.

A misspelt `--config.<key>` makes ml_collections raise a chained KeyError/AttributeError
from deep inside absl's flag parsing (a 55-line traceback); `parse_flags` turns it into one
line naming the key and the closest valid keys. Never packed: a submission has no absl CLI.
"""

from __future__ import annotations

import difflib
import sys

import ml_collections
from absl import app, flags

from golf_jax.config import base_config
from golf_jax.errors import debugging, exit_code

_DEBUG = flags.DEFINE_bool("debug", False, "Show the traceback of a user error (also GOLF_JAX_DEBUG=1).")


def config_keys(c: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every leaf key of `c`, dotted: ["data.source", ..., "audit.target_hardware"]."""
    keys = []
    for k, v in c.items():
        keys += config_keys(v, f"{prefix}{k}.") if isinstance(v, ml_collections.ConfigDict) else [prefix + k]
    return keys


def unknown_key(argv: list[str]) -> str | None:
    """One line about the first `--config.<key>` in argv that the schema (golf_jax/config.py) lacks."""
    keys = config_keys(base_config())
    for arg in argv[1:]:
        if arg.startswith("--config."):
            key = arg[len("--config."):].split("=", 1)[0]
            if key not in keys:
                close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
                hint = f"did you mean {' or '.join(close)}?" if close else "the keys are in golf_jax/config.py"
                return f"unknown config key {key} ({arg}); {hint}"
    return None


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flags_parser, with a bad flag or an unknown config key as one line and exit code 2."""
    try:
        rest = flags.FLAGS(argv)
        getattr(flags.FLAGS["config"].value, "keys")  # a config file that failed to load raises here
        return rest
    except (flags.Error, OSError, KeyError, AttributeError) as e:
        flag_error = isinstance(e, (flags.Error, OSError))
        message = unknown_key(argv) or (" ".join(str(e.__cause__ or e).split()) if flag_error else None)
        if message is None or debugging("--debug" in argv):
            raise  # not the command line's fault: a bug (or --debug)
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)


def run(main) -> None:
    """app.run(main); a golf_jax.errors.UserError raised in main ends as one line and exit code 2."""
    app.run(lambda argv: exit_code(lambda: main(argv), _DEBUG.value), flags_parser=parse_flags)
