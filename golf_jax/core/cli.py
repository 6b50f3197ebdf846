"""What the absl entry points (`python -m golf_jax.train`, `golf_jax.eval`, `golf_jax.audit`,
`golf_jax.bench`) share: `--config`, flag errors and user errors as one line with exit code 2,
and `--debug`.

`--config` takes a configs/*.py file (`get_config()`, optionally `file.py:arg`), or a run's
config.json or run directory: JSON is read as data over the schema's defaults, never
executed, with the data the run recorded (its data.json). A config file that fails to load (a syntax error, no get_config, the wrong kind
of file) is one line naming it.

A misspelt `--config.<key>` makes ml_collections raise a chained KeyError/AttributeError
from deep inside absl's flag parsing (a 55-line traceback); `parse_flags` turns it into one
line naming the key and the closest valid keys. Never packed: a submission has no absl CLI.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import ml_collections
from absl import app, flags
from ml_collections import config_flags
from ml_collections.config_flags.config_flags import ConfigFileFlagParser

from golf_jax.config import base_config
from golf_jax.core.errors import debugging, exit_code
from golf_jax.core.outputs import check_output  # noqa: F401 (the entry points' up-front check of an output place)

_DEBUG = flags.DEFINE_bool("debug", False, "Show the traceback of a user error (also GOLF_JAX_DEBUG=1).")


class _ConfigParser(ConfigFileFlagParser):
    """configs/X.py[:arg] as ml_collections loads it; RUN_DIR or RUN_DIR/config.json as data."""

    def parse(self, path: str):
        if not isinstance(path, str):
            return super().parse(path)
        target = Path(path)
        if target.is_dir():
            target = target / "config.json"
        if target.suffix == ".json" or target.name == "config.json":
            return self._run_config(target)
        file = Path(path.split(":", 1)[0])
        if not file.is_file():
            raise ValueError(f"{file}: no such file; pass a configs/*.py file, a run's config.json or its directory")
        if file.suffix != ".py":
            raise ValueError(f"{file} is not a config file; pass a configs/*.py file (with get_config()), a run's "
                             "config.json or its directory")
        try:
            cfg = super().parse(path)
        except Exception as e:  # noqa: BLE001 (the user's config file failed to run: name it, in one line)
            if debugging("--debug" in sys.argv):
                raise
            error = e.__cause__ or e
            raise ValueError(f"{file} failed to load ({type(error).__name__}: {error}); fix the file, or pass a "
                             "configs/*.py file with get_config()") from e
        if not isinstance(cfg, ml_collections.ConfigDict):
            raise ValueError(f"{file}: get_config() returned {type(cfg).__name__}, not a ConfigDict; start it from "
                             "golf_jax.config.base_config() as configs/*.py do")
        return cfg

    def _run_config(self, path: Path):
        from golf_jax.core.errors import UserError
        from golf_jax.core.rundir import load_run_config, recorded_data

        if not path.is_file():
            raise ValueError(f"{path}: no such file; pass a run directory (it holds config.json), its config.json "
                             "or a configs/*.py file")
        try:
            cfg = base_config()  # keys added to the schema since the run keep their defaults
            cfg.update(load_run_config(path))
            recorded_data(cfg, path)  # the data the run recorded (its data.json), as the packed eval reads it
        except UserError as e:
            raise ValueError(f"{e}; pass the config.json a run directory holds, or a configs/*.py file") from e
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a run's config.json ({type(e).__name__}: {e}); pass the config.json a "
                             "run directory holds, or a configs/*.py file") from e
        if self._lock_config:
            cfg.lock()
        return cfg


def define_config(help_string: str = "A configs/*.py file, or a run's config.json or directory.") -> flags.FlagHolder:
    """The `--config` flag of an absl entry point (with `--config.<key>=<value>` overrides)."""
    holder = config_flags.DEFINE_config_file("config", None, help_string, lock_config=True)
    flags.FLAGS["config"].parser = _ConfigParser("config", lock_config=True)
    return holder


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


def run(main, argv_hook=None) -> None:
    """app.run(main); a golf_jax.core.errors.UserError raised in main ends as one line and exit code 2.
    `argv_hook(argv) -> argv` may fill in flags (e.g. a default --config) before they are parsed."""
    if argv_hook is not None:
        sys.argv = argv_hook(sys.argv)  # config_flags reads the overrides from sys.argv
    app.run(lambda argv: exit_code(lambda: main(argv), _DEBUG.value), flags_parser=parse_flags)
