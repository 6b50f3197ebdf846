"""Resumable training: 6 steps + resume to 12 equals 12 straight steps, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from configs import smoke
from golf_jax import pipeline
from golf_jax.train.checkpoint import CheckpointError


def _tiny(run_dir: Path, iterations: int, **train):
    c = smoke.get_config()
    c.model.num_layers = 2
    c.model.model_dim = 64
    c.train.seq_len = 64
    c.train.batch_tokens = 1024
    c.eval.batch_tokens = 4096
    c.train.val_every = 0
    c.train.log_every = 1
    c.train.iterations = iterations
    c.train.run_dir = str(run_dir)
    c.eval.max_tokens = 4097
    # Constant LR: the legs' `iterations` differ, so a warmdown would differ too.
    c.schedule.mode = "iterations"
    c.schedule.warmdown_iters = 0
    for k, v in train.items():
        setattr(c.train, k, v)
    return c


def test_resume_matches_straight_run(tmp_path):
    straight = pipeline.run(_tiny(tmp_path / "a", 12))
    first = pipeline.run(_tiny(tmp_path / "b1", 6, checkpoint_every=3))
    ckpts = sorted(p.name for p in (Path(first["run_dir"]) / "checkpoints").iterdir() if p.name.isdigit())
    assert ckpts == ["3", "6"] and first["last_checkpoint_step"] == 6
    resumed = pipeline.run(_tiny(tmp_path / "b2", 12, resume_from=first["run_dir"]))

    assert resumed["resumed_from"] == first["run_dir"] and resumed["resumed_step"] == 6
    assert resumed["steps"] == straight["steps"] == 12
    assert resumed["train_time_s"] >= first["train_time_s"]
    summary = json.loads((Path(resumed["run_dir"]) / "summary.json").read_text())
    assert summary["resumed_step"] == 6
    assert "resumed from" in (Path(resumed["run_dir"]) / "log.txt").read_text()
    a = (Path(straight["run_dir"]) / "params.msgpack").read_bytes()
    b = (Path(resumed["run_dir"]) / "params.msgpack").read_bytes()
    assert a == b
    assert resumed["roundtrip_val_bpb"] == straight["roundtrip_val_bpb"]


def test_resume_without_checkpoints_names_the_path(tmp_path):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="not-a-run"):
        pipeline.run(_tiny(tmp_path / "c", 2, resume_from=str(empty)))


def test_resume_with_other_model_shapes_fails_clearly(tmp_path):
    first = pipeline.run(_tiny(tmp_path / "d1", 1, checkpoint_every=1))
    other = _tiny(tmp_path / "d2", 2, resume_from=first["run_dir"])
    other.model.model_dim = 128
    with pytest.raises(CheckpointError, match="model_dim"):
        pipeline.run(other)
