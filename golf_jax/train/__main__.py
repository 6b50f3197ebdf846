"""`python -m golf_jax.train --config=configs/smoke.py [--config.key=value ...] [--debug]`: the whole job
(golf_jax/pipeline.py). An entry point, outside the stage import order."""

from __future__ import annotations

from absl import app, flags

from golf_jax.core import cli

_CONFIG = cli.define_config()


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from golf_jax.core import compile_cache, multihost
    from golf_jax.pipeline import run
    from golf_jax.report import tensorboard

    multihost.initialize_from_env()  # before any device is touched
    compile_cache.enable()  # before the first compile: a rerun reads its executables back (docs/perf.md)
    run(_CONFIG.value, observers=(tensorboard.Events,))  # TensorBoard events beside metrics.jsonl (a submission: none)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    cli.run(main)
