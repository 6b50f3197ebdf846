"""JAX's persistent compilation cache for the command-line entry points.

A compiled XLA executable is written to disk keyed by its HLO, the compile options
and the jax/jaxlib version, and read back by the next process that compiles the same
program: a rerun of a config (or the bench after a run) skips XLA's compile and keeps
only tracing and lowering (docs/perf.md, "Persistent compilation cache", for the
measured gain). Only the entry points call `enable()` (train, evaluate, audit, bench);
a packed submission never does, and the test suite turns it off (tests/conftest.py).

$GOLF_JAX_XLA_CACHE: a directory, or "off" (also "0", "false", "") to disable; unset:
~/.cache/golf_jax/xla. A JAX_COMPILATION_CACHE_DIR already set wins over both, and the
JAX_PERSISTENT_CACHE_* variables over the thresholds below.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "GOLF_JAX_XLA_CACHE"
DEFAULT_DIR = Path.home() / ".cache" / "golf_jax" / "xla"
OFF = ("off", "0", "false", "")
# Programs that compile faster than this are not written: reading them back costs about
# as much as compiling them (JAX's own default).
MIN_COMPILE_SECONDS = 1.0


def cache_dir() -> Path | None:
    """Where executables are cached, or None when the cache is off."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    value = os.environ.get(ENV)
    if value is None:
        return DEFAULT_DIR
    return None if value.strip().lower() in OFF else Path(value).expanduser()


def enable() -> Path | None:
    """Point jax at cache_dir() (before the first compile); returns it (None: off)."""
    import jax

    path = cache_dir()
    if path is None:
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    if "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES" not in os.environ:
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
