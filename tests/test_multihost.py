"""Multi-host runs: joining from the environment, process-0-only writes, and 2 processes ×
4 CPU devices training exactly like 1 process × 8 devices."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from golf_jax.core import multihost
from golf_jax.config import base_config
from golf_jax.core.paths import REPO_ROOT
from golf_jax.quant import export
from golf_jax.core.rundir import RunDir

sys.path.insert(0, str(REPO_ROOT / "tests"))
import multihost_worker  # noqa: E402


def test_distributed_args_from_environment():
    assert multihost.distributed_args({}) is None
    assert multihost.distributed_args({"SLURM_NTASKS": "1", "SLURM_JOB_ID": "7"}) is None
    assert multihost.distributed_args({"SLURM_NTASKS": "16", "SLURM_JOB_ID": "7"}) == {}  # jax reads SLURM
    explicit = {"coordinator_address": "h0:1234", "num_processes": 2, "process_id": 1,
                "cluster_detection_method": "deactivate"}
    env = {"GOLF_JAX_COORDINATOR": "h0:1234", "GOLF_JAX_NUM_PROCESSES": "2", "GOLF_JAX_PROCESS_ID": "1"}
    assert multihost.distributed_args(env) == explicit
    env = {"JAX_COORDINATOR_ADDRESS": "h0:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    assert multihost.distributed_args(env) == explicit
    # Ours win over JAX's; under SLURM a coordinator alone leaves the rest to SLURM.
    assert multihost.distributed_args({**env, "GOLF_JAX_PROCESS_ID": "0"})["process_id"] == 0
    assert multihost.distributed_args({"GOLF_JAX_COORDINATOR": "h0:1", "SLURM_NTASKS": "2"}) == {"coordinator_address": "h0:1"}


@pytest.mark.parametrize("env, message", [
    ({"GOLF_JAX_COORDINATOR": "h0:1"}, "set GOLF_JAX_NUM_PROCESSES, GOLF_JAX_PROCESS_ID too"),
    ({"GOLF_JAX_COORDINATOR": "h0:1", "GOLF_JAX_NUM_PROCESSES": "two", "GOLF_JAX_PROCESS_ID": "0"}, "must be integers"),
    ({"GOLF_JAX_COORDINATOR": "h0:1", "GOLF_JAX_NUM_PROCESSES": "2", "GOLF_JAX_PROCESS_ID": "2"},
     r"GOLF_JAX_PROCESS_ID=2 must be in \[0, GOLF_JAX_NUM_PROCESSES=2\)"),
])
def test_distributed_args_bad_environment(env, message):
    with pytest.raises(ValueError, match=message):
        multihost.distributed_args(env)


def test_only_process_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda *a, **k: 1)
    cfg = base_config()
    run = RunDir(tmp_path / "runs", "p1", cfg)
    run.log("a line")
    run.metrics({"step": 1})
    run.write_json("x.json", {})
    with run.recording({}, "summary.json"):
        info = export.export_artifact({"w": {"kernel": np.ones((4, 4), np.float32)}}, {"w": {"kernel": "muon"}},
                                      cfg, tmp_path, code_bytes=0)
    assert info.weight_bytes > 0 and not info.path.exists()
    assert not (tmp_path / "runs").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(run_dir) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_two_processes_of_four_devices_train_like_one_of_eight(tmp_path):
    data = tmp_path / "data"
    multihost_worker.write_data(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JAX_COORDINATOR", "GOLF_JAX_"))}
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
               GOLF_JAX_COORDINATOR=f"127.0.0.1:{_free_port()}", GOLF_JAX_NUM_PROCESSES="2")
    argv = [sys.executable, str(REPO_ROOT / "tests" / "multihost_worker.py"), str(data), str(tmp_path / "multi")]
    procs = [subprocess.Popen(argv, env={**env, "GOLF_JAX_PROCESS_ID": str(i)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, cwd=tmp_path) for i in range(2)]
    try:
        outs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    single = multihost_worker.fit_tiny(data, tmp_path / "single")  # this process: 8 devices

    (multi,) = (tmp_path / "multi").iterdir()  # one run dir, written by process 0 alone
    assert "training: 3 steps" in outs[0] and "training:" not in outs[1]
    assert (multi / "log.txt").read_text().count("training: 3 steps") == 1
    assert json.loads((multi / "env.json").read_text())["process_count"] == 2
    # Same global batches and math; only the order of the cross-process fp32 sums may differ
    # (a few ulps in the gradients, ~1e-6 in the loss after two updates).
    np.testing.assert_allclose(_losses(multi), _losses(single.path), rtol=1e-5)
    assert len(_losses(multi)) == 3
