"""The one command-line convention of every repository entry point (`python -m golf_jax.train`,
`golf_jax.eval`, `golf_jax.audit`, `golf_jax.bench`, `golf_jax.quant`, `golf_jax.quant.estimate`,
`golf_jax.records`, `golf_jax.report`, `golf_jax.submission`, `golf_jax.data.prepare`,
`golf_jax.data.download`, `golf_jax.audit.doc`) and of the developer scripts run by their path
(`python tools/scaling_bench.py`, tools/torch_side_by_side.py, bench/gpu_description.py,
bench/target_table.py, bench/xla_flags_ab.py): absl flags, `--name=value` (or `--name value`),
multi-word names with underscores (`--shard_tokens`; the hyphenated spelling is read as the
same flag), positionals (RUN_DIR, ...) where the command's usage line shows them.

A command owns its flags (`flag_values()`: an absl FlagValues of its own, so that commands
imported side by side never clash) and ends through `run(main, FLAGS)`:
- `--help` (or `-h`) prints the command's docstring and its flags, exit code 0;
- a bad command line (an unknown flag, a bad value, a missing required flag or positional)
  is one line `error: ...` naming the flag and the fix, exit code 2;
- a golf_jax.core.errors.UserError raised by the command ends the same way;
- `--debug` (or GOLF_JAX_DEBUG=1) shows the traceback of either instead.
The packed submission script (golf_jax/submission/script.py) follows the same convention with
argparse, which costs it no code bytes.

`--config` (config-driven commands, `define_config`) takes a configs/*.py file (`get_config()`,
optionally `file.py:arg`), or a run's config.json or run directory: JSON is read as data over
the schema's defaults, never executed, with the data the run recorded (its data.json). A config
file that fails to load (a syntax error, no get_config, the wrong kind of file) is one line
naming it. A misspelt `--config.<key>` makes ml_collections raise a chained KeyError/AttributeError
from deep inside absl's flag parsing (a 55-line traceback); `run` turns it into one line naming
the key and the closest valid keys. Never packed: a submission has no absl CLI.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import ml_collections
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags
from ml_collections.config_flags.config_flags import ConfigFileFlagParser

from golf_jax.config import UnknownKeyError, base_config, config_keys, run_config
from golf_jax.core.errors import UserError, debugging, exit_code
from golf_jax.core.outputs import check_output  # noqa: F401 (the entry points' up-front check of an output place)
from golf_jax.core.paths import REPO_ROOT

HELP = ("-h", "--help", "--helpshort", "--helpfull")


def flag_values() -> flags.FlagValues:
    """A command's own flags, with `--debug`: define the others with `flag_values=` this."""
    fv = flags.FlagValues()
    flags.DEFINE_bool("debug", False, "Show the traceback of an error (also GOLF_JAX_DEBUG=1).", flag_values=fv)
    fv.__dict__["golf_jax_required"] = {}  # name -> what to pass (FlagValues keeps its own state in __dict__)
    return fv


def required(holder: flags.FlagHolder, what: str) -> flags.FlagHolder:
    """Mark a flag required: left out, it is `error: --NAME is required: pass WHAT`."""
    holder._flagvalues.__dict__["golf_jax_required"][holder.name] = what  # noqa: SLF001 (absl has no accessor)
    return holder


def positionals(args: list[str], name: str = "positional arguments", at_least: int = 0,
                at_most: int | None = 0) -> list[str]:
    """The command's positional arguments (absl's leftover argv), `at_least`..`at_most` of them
    (by default none: `cli.positionals(args)` refuses any)."""
    flags_left = [a for a in args if a.startswith("-") and a != "-"]
    if flags_left:  # after `--`, absl leaves flags unparsed
        raise UserError(f"{flags_left[0]}: a flag after `--`; put the flags before it")
    if len(args) < at_least:
        raise UserError(f"{name} is missing; pass {at_least if at_least > 1 else 'one'} (--help shows the usage)")
    if at_most is not None and len(args) > at_most:
        raise UserError(f"unexpected argument(s) {args[at_most:]}; pass {'no' if at_most == 0 else at_most} "
                        f"{name} (--help shows the usage)")
    return args


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
        from golf_jax.core.rundir import recorded_data

        if not path.is_file():
            raise ValueError(f"{path}: no such file; pass a run directory (it holds config.json), its config.json "
                             "or a configs/*.py file")
        try:
            cfg = run_config(path)  # keys added to the schema since the run keep their defaults
            recorded_data(cfg, path)  # the data the run recorded (its data.json), as the packed eval reads it
        except UnknownKeyError:
            raise  # its line names the key and the fix
        except UserError as e:
            raise ValueError(f"{e}; pass the config.json a run directory holds, or a configs/*.py file") from e
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a run's config.json ({type(e).__name__}: {e}); pass the config.json a "
                             "run directory holds, or a configs/*.py file") from e
        if self._lock_config:
            cfg.lock()
        return cfg


def define_config(fv: flags.FlagValues, help_string: str = "A configs/*.py file, or a run's config.json or "
                  "directory.") -> flags.FlagHolder:
    """The `--config` flag of a config-driven command (with `--config.<key>=<value>` overrides)."""
    holder = config_flags.DEFINE_config_file("config", None, help_string, flag_values=fv, lock_config=True)
    fv["config"].parser = _ConfigParser("config", lock_config=True)
    return holder


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


def _spelling(fv: flags.FlagValues, argv: list[str]) -> list[str]:
    """argv with `--multi-word` flag names spelt as defined, `--multi_word` (up to `--`)."""
    out = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        name, eq, value = arg.partition("=")
        if arg.startswith("--") and "-" in name[2:] and not name.startswith("--config."):
            fixed = "--" + name[2:].replace("-", "_")
            if fixed[2:] in fv or (fixed.startswith("--no") and fixed[4:] in fv):
                out[i] = fixed + eq + value
    return out


def _module(main) -> dict:
    """The globals of `main`'s module: it may be a script loaded by path, which sys.modules lacks."""
    return getattr(main, "__globals__", None) or vars(sys.modules[main.__module__])


def _help(fv: flags.FlagValues, main) -> str:
    doc = (_module(main).get("__doc__") or "").strip()
    listed = [line for line in fv.get_help(include_special_flags=False).splitlines() if line.startswith("  ")]
    if "config" in fv:
        listed.append("  --config.<key>=<value>: set a key of the config (golf_jax/config.py lists them)")
    return "\n".join([doc, "", "flags:", *listed, "  --help: show this help and exit"])


def _flag_error(e: Exception, fv: flags.FlagValues, argv: list[str], prog: str) -> str | None:
    """One line for a command line that absl or ml_collections refused; None when it is not the command line's."""
    if isinstance(e, flags.UnrecognizedFlagError):
        name = e.flagname
        if name.startswith("config."):
            return unknown_key(argv) or f"unknown config key {name[7:]}; the keys are in golf_jax/config.py"
        close = difflib.get_close_matches(name, [n for n in fv if len(n) > 1], n=2, cutoff=0.6)
        hint = f"did you mean {' or '.join('--' + c for c in close)}? " if close else ""
        return f"unknown flag --{name}; {hint}`{prog} --help` lists the flags"
    if isinstance(e, flags.IllegalFlagValueError) and not str(e).startswith("flag --config="):
        return f"{' '.join(str(e).split())}; `{prog} --help` says what each flag takes"
    if isinstance(e, (flags.Error, OSError)):
        return " ".join(str(e.__cause__ or e).split())
    return unknown_key(argv) if isinstance(e, (KeyError, AttributeError)) else None


def _program(main) -> str:
    """How the command is run: `python -m golf_jax.<...>` for the package's commands, `python
    bench/x.py` for a script of the repository (run by its path; bench/ is no package)."""
    module = _module(main)
    spec, file = module.get("__spec__"), module.get("__file__")
    name = spec.name if spec is not None else module.get("__name__", main.__module__)
    if name.split(".")[0] != "golf_jax" and file:
        path = Path(file).resolve()
        return f"python {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}"
    return f"python -m {name.removesuffix('.__main__')}"


def parse(fv: flags.FlagValues, argv: list[str], prog: str = "the command") -> list[str]:
    """argv (program name first) parsed into `fv`; returns the positionals. A bad command line is a UserError."""
    argv = _spelling(fv, argv)
    fv.unparse_flags()  # a second call in one process starts from the defaults
    saved, sys.argv = sys.argv, argv  # config_flags reads the `--config.<key>` overrides from sys.argv
    try:
        rest = fv(argv)
        if "config" in fv and fv["config"].value is not None:
            getattr(fv["config"].value, "keys")  # a config file that failed to load raises here
    except (flags.Error, OSError, KeyError, AttributeError) as e:
        message = _flag_error(e, fv, argv, prog)
        if message is None:
            raise  # not the command line's fault: a bug
        raise UserError(message) from e
    finally:
        sys.argv = saved
    need = fv.__dict__["golf_jax_required"]
    missing = [name for name in need if fv[name].value in (None, [])]
    if missing:
        raise UserError(f"--{missing[0]} is required: pass {need[missing[0]]}")
    return rest[1:]


def run(main, fv: flags.FlagValues, argv: list[str] | None = None, argv_hook=None) -> int:
    """Parse the command line into `fv` and return `main(positionals)`'s exit code (0 for None).

    `argv`: the arguments after the program name (default sys.argv[1:]). A bad command line or a
    UserError from `main` is one line `error: ...` and exit code 2 (its traceback with --debug).
    `argv_hook(argv) -> argv` may fill in flags (e.g. a default --config) before they are parsed.
    A command's `__main__` block is `sys.exit(cli.run(main, FLAGS))`."""
    program = argv is None  # not an in-process call (a test's)
    argv = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    flagged = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    prog = _program(main)
    if any(a in HELP for a in flagged):
        print(_help(fv, main))
        return 0
    if program:  # as absl's app.run sets up a program: log lines in absl's format, absl's own flags at their defaults
        absl_logging.use_absl_handler()
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()

    def command():
        return main(parse(fv, argv_hook(argv) if argv_hook else argv, prog))

    return exit_code(command, "--debug" in flagged or "--debug=true" in flagged)
