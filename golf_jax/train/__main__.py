"""`python -m golf_jax.train --config=configs/smoke.py [--config.key=value ...] [--debug]`: the whole job
(golf_jax/pipeline.py). An entry point, outside the stage import order."""

from __future__ import annotations

import sys

from golf_jax.core import cli

FLAGS = cli.flag_values()
_CONFIG = cli.required(cli.define_config(FLAGS), "a configs/*.py file, e.g. --config=configs/smoke.py")


def _main(args: list[str]) -> None:
    cli.positionals(args)
    from golf_jax.core import compile_cache, multihost
    from golf_jax.pipeline import run
    from golf_jax.report import tensorboard

    multihost.initialize_from_env()  # before any device is touched
    compile_cache.enable()  # before the first compile: a rerun reads its executables back (docs/perf.md)
    run(_CONFIG.value, observers=(tensorboard.Events,))  # TensorBoard events beside metrics.jsonl (a submission: none)


def main(argv: list[str] | None = None) -> int:
    """The command (golf_jax/core/cli.py's convention): argv after the program name, default sys.argv[1:]."""
    return cli.run(_main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(main())
