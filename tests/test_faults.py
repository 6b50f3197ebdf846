"""Faults: SIGTERM, damaged checkpoints, a live writer, a changed schedule, diverged weights,
re-exporting a run, and bit-identical reruns. One tiny training subprocess gets a SIGTERM;
the other tests share a run dir with two checkpoints saved in-process, damaging copies of it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import serialization

from configs import smoke
from golf_jax.core import mesh as mesh_lib
from golf_jax import model as model_lib
from golf_jax import pipeline
from golf_jax.config import base_config
from golf_jax.core.errors import UserError
from golf_jax.optim.build import build_optimizer
from golf_jax.core.paths import REPO_ROOT
from golf_jax.quant import export
from golf_jax.train import checkpoint as ckpt_lib
from golf_jax.train import step as step_lib

TINY = {"model.num_layers": 2, "model.model_dim": 64, "train.seq_len": 64, "train.batch_tokens": 1024,
        "train.val_every": 0, "train.log_every": 1, "eval.max_tokens": 4097, "audit.enabled": False,
        "train.iterations": 100_000, "train.checkpoint_every": 1, "schedule.mode": "iterations"}


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """(run dir, exit code, stdout + stderr) of a tiny training job SIGTERMed after its 3rd step."""
    root = tmp_path_factory.mktemp("sigterm")
    argv = [sys.executable, "-m", "golf_jax.train", "--config=configs/smoke.py", f"--config.train.run_dir={root}"]
    argv += [f"--config.{k}={v}" for k, v in TINY.items()]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device: quicker to compile
    out = root / "stdout.txt"
    with open(out, "w") as f, open(root / "stderr.txt", "w") as err:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=f, stderr=err)
        deadline = time.monotonic() + 300
        while "step 3/" not in out.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
    (run_dir,) = (p for p in root.iterdir() if p.is_dir())
    return run_dir, rc, out.read_text() + (root / "stderr.txt").read_text()


@pytest.fixture(scope="module")
def fresh_state():
    """(the TINY smoke config, a freshly initialised TrainState of it)."""
    cfg = smoke.get_config()
    for key, value in TINY.items():
        group, name = key.split(".")
        cfg[group][name] = value
    mesh = mesh_lib.make_mesh()
    model = model_lib.build_model(cfg.model)
    abstract = pipeline.abstract_params(model, cfg.train.seq_len)
    labels = model_lib.param_labels(cfg.model, abstract, cfg.compat)
    tx = build_optimizer(cfg.opt, labels, mesh)
    recipe = step_lib.build_recipe(cfg, abstract, labels)
    return cfg, step_lib.init_state(model, tx, jax.random.PRNGKey(cfg.seed), cfg.train.seq_len, mesh, recipe)


@pytest.fixture(scope="module")
def saved_run(fresh_state, tmp_path_factory):
    """A run dir with config.json and checkpoints of steps 1 and 2 (as the train loop saves them)."""
    cfg, state = fresh_state
    run_dir = tmp_path_factory.mktemp("saved") / "tiny"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(cfg.to_json_best_effort())
    saver = ckpt_lib.Checkpointer(run_dir, 1)
    for step in (1, 2):
        saver.save(step, state, {"step": step, "train_time_s": 0.5 * step, "late_qat_step": None,
                                 "loop_on_step": 0, "loader": {"position": 1024 * step}})
    saver.close()
    return run_dir


def _steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / run_dir.name))


def test_sigterm_leaves_an_interrupted_summary_and_a_resumable_checkpoint(interrupted, fresh_state):
    run_dir, rc, output = interrupted
    assert rc == 128 + signal.SIGTERM, output[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "SIGTERM" in summary["error"], summary
    assert "run interrupted: Interrupted: SIGTERM received at step" in output
    assert "Traceback" not in output
    orbax_info = [line for line in output.splitlines() if line.startswith("I") and "checkpoint" in line]
    assert orbax_info == []  # orbax logs ~45 INFO lines per save through absl; they are filtered out
    steps = _steps(run_dir)
    assert len(steps) == 2 and f"at step {steps[-1]};" in summary["error"]
    assert not (run_dir / ckpt_lib.LOCK_NAME).exists()  # released on the way out
    cfg, state = fresh_state
    restored, meta, step = ckpt_lib.restore(run_dir, state, cfg, log=lambda m: None)
    assert step == meta["step"] == steps[-1] and meta["loader"]
    assert int(restored.step) == step


@pytest.mark.parametrize("damaged, why", [
    ("state/ocdbt.process_0/d/*", "does not load (ValueError: OUT_OF_RANGE"),  # a truncated array file
    ("state/_METADATA", "has unreadable metadata (JSONDecodeError"),  # the state's tree metadata
    ("meta/metadata", "does not load (JSONDecodeError"),  # the loop's counters and loader state
])
def test_a_truncated_checkpoint_falls_back_to_the_previous_one(saved_run, fresh_state, tmp_path, damaged, why):
    run_dir = _copy(saved_run, tmp_path)
    older, newest = _steps(run_dir)
    files = sorted((run_dir / "checkpoints" / str(newest)).glob(damaged))
    for f in files:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    lines = []
    cfg, state = fresh_state
    _, meta, step = ckpt_lib.restore(run_dir, state, cfg, log=lines.append)
    assert step == meta["step"] == older and meta["loader"] == {"position": 1024 * older}
    (line,) = lines
    assert f"checkpoints/{newest} {why}" in line and "trying an older one" in line
    assert "\n" not in line and len(line) < 600 and "tensorstore_spec" not in line


def test_no_loadable_checkpoint_names_each_and_why(saved_run, fresh_state, tmp_path):
    run_dir = _copy(saved_run, tmp_path)
    for step in _steps(run_dir):
        f = run_dir / "checkpoints" / str(step) / "state" / "_METADATA"
        f.write_text(f.read_text()[:100])
    cfg, state = fresh_state
    with pytest.raises(ckpt_lib.CheckpointError, match="no checkpoint loads") as e:
        ckpt_lib.restore(run_dir, state, cfg, log=lambda m: None)
    assert str(e.value).count("unreadable metadata") == 2


def test_resume_refuses_a_run_dir_with_a_live_writer_and_takes_over_a_stale_lock(saved_run, fresh_state, tmp_path):
    run_dir = _copy(saved_run, tmp_path)
    lock = run_dir / ckpt_lib.LOCK_NAME
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({"pid": writer.pid, "host": socket.gethostname()}))
        cfg, state = fresh_state
        with pytest.raises(ckpt_lib.CheckpointError, match=f"in use by process {writer.pid} "):
            ckpt_lib.restore(run_dir, state, cfg, log=lambda m: None)
    finally:
        writer.kill()
        writer.wait()
    lines = []
    _, _, step = ckpt_lib.restore(run_dir, state, cfg, log=lines.append)
    assert step == _steps(run_dir)[-1]
    assert any(f"taking over the stale lock {lock} of process {writer.pid}" in m for m in lines), lines
    assert not lock.exists()  # held while reading, then released


def test_resume_warns_when_the_schedule_changes(saved_run, fresh_state):
    cfg, state = fresh_state
    lines = []
    ckpt_lib.restore(saved_run, state, cfg, log=lines.append)
    assert lines == []  # the same config: nothing to say
    changed = cfg.copy_and_resolve_references()
    changed.train.iterations, changed.schedule.warmdown_iters, changed.train.log_every = 12, 5, 7
    ckpt_lib.restore(saved_run, state, changed, log=lines.append)
    (warning,) = lines
    assert "another schedule" in warning
    assert "train.iterations 100000 → 12" in warning and "schedule.warmdown_iters 50 → 5" in warning
    assert "log_every" not in warning  # logging is not the schedule


def _tiny_params(value: float) -> dict:
    w = np.full((96, 1024), 0.01, np.float32)
    w[3, 5] = value
    return {"tok_emb": {"embedding": w}, "final_norm": {"scale": np.ones(64, np.float32)}}


@pytest.mark.parametrize("value, shown", [(np.inf, "inf"), (np.nan, "nan"), (1e6, "1e+06")])
def test_export_refuses_weights_an_artifact_cannot_hold(tmp_path, value, shown):
    cfg = base_config()
    with pytest.raises(UserError, match="1 of 2 weight tensors .*" + re.escape(f"tok_emb/embedding (max |w| {shown})")):
        export.export_artifact(_tiny_params(value), None, cfg, tmp_path, 1000)
    assert list(tmp_path.iterdir()) == []  # nothing written
    info = export.export_artifact(_tiny_params(60000.0), None, cfg, tmp_path, 1000)  # within fp16: exported
    assert info.path.is_file()


def test_export_cli_reexports_a_run_dir(saved_run, fresh_state, tmp_path, capsys):
    from golf_jax.quant import __main__ as export_cli

    run_dir = _copy(saved_run, tmp_path)
    assert export_cli.main([str(run_dir)]) == 2  # one line, exit code 2 (golf_jax/core/cli.py)
    assert "params.msgpack: no such file" in capsys.readouterr().err
    cfg, state = fresh_state
    params = jax.device_get(state.params)
    (run_dir / "params.msgpack").write_bytes(serialization.to_bytes(params))
    assert export_cli.main([str(run_dir), "--eval"]) == 0
    out = json.loads((run_dir / "export.json").read_text())
    artifact = run_dir / "model.golfjax"
    assert out["weight_bytes"] == artifact.stat().st_size
    assert out["code_bytes"] == (run_dir / "submission.py").stat().st_size
    printed = capsys.readouterr().out
    assert f"= {out['artifact_bytes']:,} B" in printed and "eval roundtrip: val_bpb" in printed
    back = export.load_artifact(artifact, params)
    err = max(float(np.max(np.abs(np.asarray(a, np.float32) - b))) for a, b in
              zip(jax.tree.leaves(back), jax.tree.leaves(params)))
    assert err < 0.05  # int8 rows / fp16 of the same weights
    assert 0 < out["val_bpb"] < 10


def test_same_seed_gives_bit_identical_losses(fresh_state):
    """Two runs from the same seed on CPU (8 simulated devices): every loss and weight bit-identical."""
    cfg, _ = fresh_state
    mesh = mesh_lib.make_mesh()
    model = model_lib.build_model(cfg.model)
    abstract = pipeline.abstract_params(model, cfg.train.seq_len)
    labels = model_lib.param_labels(cfg.model, abstract, cfg.compat)
    tx = build_optimizer(cfg.opt, labels, mesh)
    train_step = step_lib.jit_train_step(step_lib.make_train_step(model, tx), mesh)
    tokens = np.random.default_rng(0).integers(0, cfg.model.vocab_size, (3, 16, 65), dtype=np.int32)

    def run() -> tuple[list[float], bytes]:
        state = step_lib.init_state(model, tx, jax.random.PRNGKey(cfg.seed), cfg.train.seq_len, mesh)
        losses = []
        for rows in tokens:
            batch = {"x": mesh_lib.put_global_batch(mesh, rows[:, :-1]),
                     "y": mesh_lib.put_global_batch(mesh, rows[:, 1:]), **step_lib.schedule_inputs(1.0, 0.9)}
            state, metrics = train_step(state, batch)
            losses.append(float(metrics["loss"]))
        return losses, serialization.to_bytes(jax.device_get(state.params))

    (losses_a, params_a), (losses_b, params_b) = run(), run()
    assert losses_a == losses_b and params_a == params_b
    assert losses_a[-1] != losses_a[0]  # it trained
