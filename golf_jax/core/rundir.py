"""Run directories: config, code version, log, metrics — everything to reproduce a run.

Only process 0 writes. Files are flushed line by line so a crash keeps what ran; whole files
(summary, config, params, artifact, reports) go through `write_atomic`: a temporary file,
then a rename, so a full disk or a crash leaves the last good file, never half of one.
While a run records, SIGTERM (SLURM, preemption) and SIGINT end it as `Interrupted`:
the summary says "interrupted" and the process exits with 128 + the signal's number.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax

from golf_jax.core.errors import UserError
from golf_jax.core.paths import REPO_ROOT


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write `data` to `path` through a temporary file and a rename; a failed write (a full disk,
    a read-only folder) keeps what `path` held and is a UserError naming it."""
    tmp = Path(f"{path}.tmp")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write ({e.strerror}); free disk space or fix permissions") from e


def code_version() -> dict:
    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "golf_jax").rglob("*.py")):  # every source file
        digest.update(str(path.relative_to(REPO_ROOT)).encode())
        digest.update(path.read_bytes())
    info = {"package_sha256": digest.hexdigest()}
    try:
        git = ["git", "-C", str(REPO_ROOT)]
        info["git_commit"] = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        info["git_dirty"] = bool(subprocess.run(git + ["status", "--porcelain", "golf_jax", "configs"], capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        info["git_commit"] = None
    return info


class Interrupted(SystemExit):
    """SIGTERM or SIGINT stopped the run; a SystemExit, so the process exits with 128 + signum, quietly."""

    def __init__(self, signum: int, detail: str = "") -> None:
        super().__init__(f"{signal.Signals(signum).name} received{detail}")
        self.code = 128 + signum  # the exit status


class RunDir:
    """A run's folder. `observers`: factories (classes) called with the run dir as it is made
    (its path may still move: a multi-host run's does, so read run.path when writing); on
    process 0 each one made is called with every record the run dir writes and the file it
    goes to: `observer("metrics.jsonl", record)`, `observer(name, obj)` for write_json; close()
    closes it with the run dir. TensorBoard is one (golf_jax/report/tensorboard.py Events,
    which the train and eval entry points pass); a submission passes none."""

    stop_signal = None  # a SIGTERM/SIGINT (its number) that the train loop has yet to act on
    defer_signals = False  # set by the train loop: it stops between steps and saves a checkpoint first

    def __init__(self, root: str | Path, name: str, config, observers=()) -> None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.is_writer = jax.process_index() == 0
        self.path = Path(root) / f"{name}-{stamp}"
        self._log = self._metrics = None
        self.observers = [make(self) for make in observers]
        if self.is_writer:
            made = False
            try:
                self.path.mkdir(parents=True, exist_ok=False)
                made = True
                write_atomic(self.path / "config.json", config.to_json_best_effort(indent=2, sort_keys=True))
                self.write_json("code_version.json", code_version())
                self.write_json("env.json", {
                    "argv": sys.argv,
                    "python": platform.python_version(),
                    "jax": jax.__version__,
                    "backend": jax.default_backend(),
                    "devices": [str(d) for d in jax.devices()],
                    "process_count": jax.process_count(),
                    "started": dt.datetime.now().isoformat(),
                })
                self._log = open(self.path / "log.txt", "a", buffering=1)
                self._metrics = open(self.path / "metrics.jsonl", "a", buffering=1)
            except (OSError, UserError) as e:
                if made:  # a run dir that holds nothing yet is never left behind
                    shutil.rmtree(self.path, ignore_errors=True)
                raise UserError(f"train.run_dir={root}: cannot create {self.path} ({getattr(e, 'strerror', 0) or e}); "
                                "pass --config.train.run_dir=<a writable folder>") from e
        if jax.process_count() > 1:  # not packed (submission/modules.py NOT_PACKED): a submission runs on one host
            from golf_jax.core.multihost import shared_run_dir

            self.path = shared_run_dir(self.path)
        self._t0 = time.time()

    def log(self, message: str) -> None:
        if self.is_writer:
            print(message, flush=True)
            self._log.write(message + "\n")

    def metrics(self, record: dict) -> None:
        if self.is_writer:
            self._metrics.write(json.dumps({"time": round(time.time() - self._t0, 3), **record}) + "\n")
            for o in self.observers:
                o("metrics.jsonl", record)

    def write_json(self, name: str, obj: dict) -> None:
        if self.is_writer:
            write_atomic(self.path / name, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
            for o in self.observers:
                o(name, obj)

    @contextlib.contextmanager
    def recording(self, summary: dict, name: str, what: str = "run"):
        """Fill `summary` inside the block; it is written to `name` even when the block fails,
        or when SIGTERM / SIGINT interrupts it (status "interrupted")."""
        main = threading.current_thread() is threading.main_thread()  # signal handlers live there only
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
        try:
            yield summary
            summary["status"] = "ok"
        except BaseException as e:
            status = "interrupted" if isinstance(e, Interrupted) else "failed"
            summary.update(status=status, error=f"{type(e).__name__}: {e}")
            self.log(f"{what} {status}: {summary['error']} (outputs kept in {self.path})")
            raise
        finally:
            for s, h in handlers.items():
                signal.signal(s, h or signal.SIG_DFL)
            self.write_json(name, summary)
            self.close()

    def _on_signal(self, signum: int, frame) -> None:
        """Inside the train loop the first signal is only noted (the loop polls `stop_signal` between
        steps); anywhere else, or a second time, the run stops at once."""
        if self.defer_signals and self.stop_signal is None:
            self.stop_signal = signum
        else:
            raise Interrupted(signum)

    def close(self) -> None:
        for f in (self._log, self._metrics, *self.observers):
            if f is not None:
                f.close()


def load_run_config(path: str | Path):
    """A run's config.json (RunDir writes it) as a ConfigDict; a relative data.dir or
    data.tokenizer in it is taken from the folder of the config.json, not the working directory."""
    import ml_collections

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such config.json (a run directory holds one; or pass --config_json)")
    try:
        cfg = ml_collections.ConfigDict(json.loads(path.read_text()))
        for key in ("dir", "tokenizer"):
            if cfg.data[key]:
                cfg.data[key] = str(path.parent.resolve() / cfg.data[key])
    except (ValueError, TypeError, LookupError, AttributeError) as e:
        raise UserError(f"{path}: not a run's config.json ({e!r})") from e
    return cfg


def recorded_data(cfg, config_json: str | Path, data_dir: str | None = None, tokenizer: str | None = None) -> None:
    """Point cfg at the data to evaluate on: --data_dir / --tokenizer, else the absolute paths that
    the run recorded in data.json beside its config.json (the default corpus's too), else the config's."""
    recorded = Path(config_json).with_name("data.json")
    if recorded.is_file():
        d = json.loads(recorded.read_text())
        cfg.data.source, cfg.data.dir, cfg.data.tokenizer = "dir", d["data_dir"], d["tokenizer"]
    if data_dir:
        cfg.data.source, cfg.data.dir = "dir", data_dir
    if tokenizer:
        cfg.data.tokenizer = tokenizer
