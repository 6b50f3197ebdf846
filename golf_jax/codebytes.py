"""The counted code of a submission: one self-extracting script of golf_jax's sources.

A leaf module (it imports only golf_jax.paths): the export stage takes the code
bytes as a number, the packer writes the same bytes to a file, and the run
directory's code version hashes the same sources.

The script embeds golf_jax/**/*.py as lzma + base85 JSON {relative path: source}
and a bootstrap that unpacks it into a temp dir, puts that dir first on sys.path
(ahead of any installed golf_jax) and calls `golf_jax.pack.submission_main`.
Code bytes = len(build_script()): the script is the whole code.
"""

from __future__ import annotations

import base64
import functools
import json
import lzma
from pathlib import Path

from golf_jax.paths import REPO_ROOT

_BOOTSTRAP = '''#!/usr/bin/env python3
"""golf_jax submission (self-extracting): python submission.py {{eval,train}} --help"""
import atexit, base64, json, lzma, os, shutil, sys, tempfile
_D = b"""{data}"""
def _main():
    d = tempfile.mkdtemp(prefix="golf_jax_sub_")
    atexit.register(shutil.rmtree, d, True)
    for p, s in json.loads(lzma.decompress(base64.b85decode(_D))).items():
        f = os.path.join(d, p)
        os.makedirs(os.path.dirname(f), exist_ok=True)
        with open(f, "w", encoding="utf-8") as fh:
            fh.write(s)
    sys.path.insert(0, d)
    from golf_jax.pack import submission_main
    sys.exit(submission_main(sys.argv[1:]))
if __name__ == "__main__":
    _main()
'''


def package_sources() -> list[Path]:
    """The golf_jax source files, sorted: what the code version and code bytes cover."""
    return sorted((REPO_ROOT / "golf_jax").rglob("*.py"))


def package_files() -> dict[str, str]:
    """{path relative to the repo root: source} of every golf_jax/**/*.py, sorted."""
    return {str(p.relative_to(REPO_ROOT)): p.read_text(encoding="utf-8") for p in package_sources()}


def build_script() -> bytes:
    """The submission script's bytes (deterministic for fixed sources; independent of its file name)."""
    payload = json.dumps(package_files(), sort_keys=True, separators=(",", ":")).encode("utf-8")
    data = base64.b85encode(lzma.compress(payload, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME))
    return _BOOTSTRAP.format(data=data.decode("ascii")).encode("utf-8")


@functools.lru_cache(maxsize=1)
def code_bytes() -> int:
    """len(build_script()), built in memory once per process."""
    return len(build_script())
