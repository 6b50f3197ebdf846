"""Run directories: config, code version, log, metrics — everything to reproduce a run.

Only process 0 writes. Files are flushed line by line so a crash keeps what ran.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax

from golf_jax.codebytes import package_sources
from golf_jax.paths import REPO_ROOT


def code_version() -> dict:
    digest = hashlib.sha256()
    for path in package_sources():
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


class RunDir:
    def __init__(self, root: str | Path, name: str, config) -> None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.is_writer = jax.process_index() == 0
        self.path = Path(root) / f"{name}-{stamp}"
        self._log = self._metrics = None
        if self.is_writer:
            self.path.mkdir(parents=True, exist_ok=False)
            (self.path / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))
            env = {
                "argv": sys.argv,
                "python": platform.python_version(),
                "jax": jax.__version__,
                "backend": jax.default_backend(),
                "devices": [str(d) for d in jax.devices()],
                "process_count": jax.process_count(),
                "started": dt.datetime.now().isoformat(),
            }
            self.write_json("code_version.json", code_version())
            self.write_json("env.json", env)
            self._log = open(self.path / "log.txt", "a", buffering=1)
            self._metrics = open(self.path / "metrics.jsonl", "a", buffering=1)
        self._t0 = time.time()

    def log(self, message: str) -> None:
        if self.is_writer:
            print(message, flush=True)
            self._log.write(message + "\n")

    def metrics(self, record: dict) -> None:
        if self.is_writer:
            self._metrics.write(json.dumps({"time": round(time.time() - self._t0, 3), **record}) + "\n")

    def write_json(self, name: str, obj: dict) -> None:
        if self.is_writer:
            (self.path / name).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")

    @contextlib.contextmanager
    def recording(self, summary: dict, name: str, what: str = "run"):
        """Fill `summary` inside the block; it is written to `name` even when the block fails."""
        try:
            yield summary
            summary["status"] = "ok"
        except BaseException as e:
            summary.update(status="failed", error=f"{type(e).__name__}: {e}")
            self.log(f"{what} failed: {summary['error']} (outputs kept in {self.path})")
            raise
        finally:
            self.write_json(name, summary)
            self.close()

    def close(self) -> None:
        for f in (self._log, self._metrics):
            if f is not None:
                f.close()
