"""Where golf_jax finds the shared data and keeps its generated files."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # golf_jax/core/paths.py -> the repository


def shared_data_dir() -> Path:
    """`../shared/data` beside the repository, or $GOLF_JAX_SHARED_DATA."""
    env = os.environ.get("GOLF_JAX_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def cache_dir() -> Path:
    """Generated corpora and shards ($GOLF_JAX_CACHE, default `build/` in the repo)."""
    env = os.environ.get("GOLF_JAX_CACHE")
    return Path(env) if env else REPO_ROOT / "build"
