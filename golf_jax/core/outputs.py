"""Output places checked before any work: a command that writes a report, a JSON or a folder
at its end checks up front that it can (repository tools only; never packed)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from golf_jax.core.errors import UserError


def check_output(path: str | Path, flag: str, folder: bool = False) -> None:
    """An output place the command writes at its end, checked before any work: not of the wrong
    kind, and its nearest existing folder writable (a probe file, created and removed)."""
    target = Path(path)
    if target.exists() and target.is_dir() != folder:
        kind = "a folder" if target.is_dir() else "a file"
        raise UserError(f"{flag}={path} is {kind}; pass {'a folder' if folder else 'a file path'}")
    start = target if folder else target.parent
    parent = next(p for p in [start, *start.parents] if p.exists())
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".golf_jax_probe"):
            pass
    except OSError as e:
        raise UserError(f"{flag}={path}: cannot write in {parent} ({e.strerror or e}); pass a writable place") from e
