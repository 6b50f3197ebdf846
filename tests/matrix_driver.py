"""Runs the bad-input matrix's cells (tests/test_bad_input.py) in one process: jax, flax and the
golf_jax modules are imported once, then each cell runs in a fork as `python -m MODULE ARGV`
(or the packed `submission.py`) would, with its own working directory, stdout and stderr.

`python tests/matrix_driver.py CELLS.json RESULTS.json`; a cell is
{"id", "module" or "script", "argv", "cwd", "deny": null | {"under": DIR, "errno": "ENOSPC" | "EROFS"}}.
`deny` simulates an output place that is full (files open, every write fails) or read-only
(creating a file or folder fails) under DIR, as a root user cannot make one with chmod.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import runpy
import sys
import time
import traceback
from pathlib import Path

import flax  # noqa: F401 (imported once, before the forks)
import jax  # noqa: F401
import ml_collections  # noqa: F401
import numpy  # noqa: F401
import optax  # noqa: F401
import sentencepiece  # noqa: F401
from absl import app, flags  # noqa: F401

try:  # train and eval write TensorBoard events: tensorboardX imports torch where it is installed (seconds a cell)
    import tensorboardX  # noqa: F401
except ImportError:
    pass

WRITE_MODES = ("w", "a", "x", "+")


def _deny(under: str, code: int) -> None:
    """Make writes under `under` fail with errno `code` (ENOSPC: on write; others: on create)."""
    under = os.path.realpath(under)

    def inside(path) -> bool:
        try:
            return os.path.realpath(os.fspath(path)).startswith(under)
        except TypeError:  # a file descriptor
            return False

    def error(path):
        return OSError(code, os.strerror(code), str(path))

    class Full(io.RawIOBase):
        def __init__(self, f, path):
            self._f, self._path = f, path

        def write(self, *_):
            raise error(self._path)

        def writelines(self, *_):
            raise error(self._path)

        def __enter__(self):
            return self

        def __exit__(self, *_):
            self._f.close()

        def __getattr__(self, name):
            return getattr(self._f, name)

    real_open, real_os_open, real_mkdir = io.open, os.open, os.mkdir

    def fake_open(file, mode="r", *args, **kwargs):
        if any(m in mode for m in WRITE_MODES) and inside(file):
            if code != errno.ENOSPC:
                raise error(file)
            return Full(real_open(file, mode, *args, **kwargs), file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags_, *args, **kwargs):
        if flags_ & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path) and code != errno.ENOSPC:
            raise error(path)
        return real_os_open(path, flags_, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if inside(path) and code != errno.ENOSPC:
            raise error(path)
        return real_mkdir(path, *args, **kwargs)

    builtins.open = io.open = fake_open
    os.open, os.mkdir = fake_os_open, fake_mkdir


def _child(cell: dict, out: Path, err: Path) -> int:
    os.chdir(cell["cwd"])
    fd_out, fd_err = os.open(out, os.O_WRONLY | os.O_CREAT), os.open(err, os.O_WRONLY | os.O_CREAT)
    os.dup2(fd_out, 1)
    os.dup2(fd_err, 2)
    if cell.get("deny"):
        _deny(cell["deny"]["under"], getattr(errno, cell["deny"]["errno"]))
    try:
        if "script" in cell:  # the packed script brings its own golf_jax
            for name in [m for m in sys.modules if m == "golf_jax" or m.startswith("golf_jax.")]:
                del sys.modules[name]
            sys.argv = [cell["script"], *cell["argv"]]
            runpy.run_path(cell["script"], run_name="__main__")
        else:
            sys.argv = [cell["module"], *cell["argv"]]
            runpy.run_module(cell["module"], run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 (a crash: its traceback is the cell's failure)
        traceback.print_exc()
        return 1


def main(cells_json: str, results_json: str) -> None:
    cells = json.loads(Path(cells_json).read_text())
    results = {}
    for cell in cells:
        out, err = Path(cell["cwd"]).parent / f"{cell['id']}.out", Path(cell["cwd"]).parent / f"{cell['id']}.err"
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(cell, out, err)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        results[cell["id"]] = {"rc": os.waitstatus_to_exitcode(status), "stdout": out.read_text(errors="replace"),
                               "stderr": err.read_text(errors="replace"), "seconds": time.perf_counter() - t0}
    Path(results_json).write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
