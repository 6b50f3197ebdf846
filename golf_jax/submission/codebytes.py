"""The counted code of a submission: the bytes of its self-extracting script.

A leaf module (it imports only golf_jax.core.paths and submission/modules.py, and
submission/build.py inside functions): the export stage takes the code bytes as a number,
and `python -m golf_jax.submission` writes the same bytes to a file. submission/build.py
builds the script from the modules submission/modules.py lists for the config. This module is packed
itself, so it holds only what a packed run needs: a packed run counts its own script.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from golf_jax.submission.modules import gates_on, script_codecs
from golf_jax.core.paths import REPO_ROOT

SCRIPT: str | None = None  # set by the bootstrap: the running submission script, whose length is the code bytes


def script(cfg=None) -> bytes:
    """The submission script for `cfg`: the running one when packed, else built (golf_jax/submission/build.py)."""
    if SCRIPT is not None:
        return Path(SCRIPT).read_bytes()
    from golf_jax.submission.build import build_script

    return build_script(cfg)


@functools.lru_cache(maxsize=8)
def _counted(branches: tuple[bool, ...], codecs: tuple[str, ...]) -> int:
    from golf_jax.submission.build import script_for

    return len(script_for(branches, REPO_ROOT, codecs))


def code_bytes(cfg=None) -> int:
    """Bytes of the submission script for `cfg` (None: with every gated module): the running
    script's when packed, else the built one's (once per set of gated branches and process)."""
    if SCRIPT is not None:
        return os.path.getsize(SCRIPT)
    return _counted(gates_on(cfg), script_codecs(cfg))
