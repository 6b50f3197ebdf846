"""Validation up front: bad settings, data and paths stop a run before anything compiles, as one
line (a UserError) that names the key or file; entry points end on it with exit code 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from configs import smoke
from golf_jax import config as config_lib
from golf_jax.core import errors
from golf_jax import pipeline
from golf_jax.core import rundir
from golf_jax.submission import script as submission
from golf_jax.core import mesh as mesh_lib
from golf_jax.data import prepare, shards, source
from golf_jax.core.errors import UserError
from golf_jax.core.paths import REPO_ROOT
from golf_jax.quant.prune import ArtifactBudgetError
from golf_jax.core.rundir import RunDir
from golf_jax.train import loop


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.run([sys.executable, "-m", "golf_jax.train", "--config=configs/smoke.py", *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("key, value, says", [
    ("train.iterations", -5, r"train.iterations=-5: use a value >= 0"),
    ("train.seq_len", 0, r"train.seq_len=0: use a value >= 1"),
    ("export.format", "int3", r"export.format='int3': known formats are 'int8_zlib'"),
    ("export.compressor", "lzmaa", r"export.compressor='lzmaa': use '' \(the format's default\) or one of"),
    ("export.compressor", "lzma", r"export.compressor='lzma' needs export.format in .*int8_zlib always uses zlib"),
    ("schedule.mode", "cosine", r"schedule.mode='cosine': use one of 'wallclock', 'iterations'"),
    ("train.profile_steps", "5-10", r"train.profile_steps='5-10': use 'START:STOP'"),
    ("opt.muon_ns_dtype", "fp8", r"opt.muon_ns_dtype='fp8': use one of 'bfloat16', 'float32'"),
    ("export.calib_source", "vall", r"export.calib_source='vall': use one of"),
    ("audit.tokens", 0, r"audit.tokens=0 must be >= 1"),
])
def test_bad_settings_are_user_errors_before_anything_is_built(key, value, says):
    cfg = smoke.get_config()
    pipeline.check_config(cfg, 8)  # the smoke config itself is fine
    section, name = key.split(".")
    cfg[section][name] = value
    with pytest.raises(UserError, match=says):
        pipeline.check_config(cfg, 8)


def _val_dir(tmp_path, tokenizer_sha256: str):
    prepare.write_shard(tmp_path / "fineweb_val_000000.bin", np.arange(4097) % 1024)
    (tmp_path / "manifest.json").write_text(json.dumps({"tokenizer": {"path": "sp1024_other.model",
                                                                      "sha256": tokenizer_sha256}}))
    cfg = smoke.get_config()
    cfg.data.source, cfg.data.dir, cfg.eval.max_tokens = "dir", str(tmp_path), 0
    return cfg


def test_a_tokenizer_other_than_the_manifests_is_refused_even_of_the_right_size(tmp_path, shared_data):
    tok = shared_data / "tokenizers" / "fineweb_1024_bpe.model"  # 1024 pieces = model.vocab_size
    other = shards.sha256_file(shared_data / "tokenizers" / "fineweb_1024_bpe.vocab")
    cfg = _val_dir(tmp_path, other)
    cfg.data.tokenizer = str(tok)
    with pytest.raises(UserError, match=r"data.tokenizer=.*fineweb_1024_bpe.model is not the tokenizer the shards "
                                        r".* were built with \(sp1024_other.model, sha256 " + other[:12]):
        pipeline.load_data(cfg)
    (tmp_path / "manifest.json").write_text(json.dumps({"tokenizer": {"sha256": shards.sha256_file(tok)}}))
    assert len(pipeline.load_data(cfg).val_tokens) == 4097  # the manifest's tokenizer passes


def test_a_damaged_late_train_shard_stops_the_sequential_loader_up_front(tmp_path):
    for i in range(3):
        prepare.write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", np.arange(4096) % 1024)
    last = tmp_path / "fineweb_train_000002.bin"
    last.write_bytes(last.read_bytes()[:-10])  # a copy cut short: the stream would reach it mid-run
    cfg = smoke.get_config()
    with pytest.raises(UserError, match=r"fineweb_train_000002.bin: file is truncated"):
        loop.make_loader(cfg, tmp_path, mesh_lib.make_mesh())


def test_an_unwritable_run_dir_is_a_user_error(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserError, match=r"train.run_dir=.*a_file/runs: cannot create .*; pass --config.train.run_dir"):
        RunDir(tmp_path / "a_file" / "runs", "smoke", smoke.get_config())


def test_data_paths_are_recorded_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = smoke.get_config()
    cfg.data.source, cfg.data.dir, cfg.data.tokenizer = "dir", "shards", "tok/sp.model"
    recorded = source.absolute_paths(cfg)
    assert (recorded.data.dir, recorded.data.tokenizer) == (str(tmp_path / "shards"), str(tmp_path / "tok/sp.model"))
    assert cfg.data.dir == "shards"  # the caller's config is left as it was
    assert source.resolve_data(cfg) == (tmp_path / "shards", tmp_path / "tok" / "sp.model")
    # The default corpus under a relative cache dir (a complete one, so nothing is built).
    monkeypatch.setenv("GOLF_JAX_CACHE", "cache")
    from golf_jax.data import synthetic

    corpus = tmp_path / "cache" / "default_corpus" / synthetic.corpus_key()
    corpus.mkdir(parents=True)
    (corpus / "tokenizer.model").write_bytes(b"")
    (corpus / "manifest.json").write_text(json.dumps({"tokenizer": {"file": "tokenizer.model"}, "splits": {}}))
    assert source.resolve_data(smoke.get_config()) == (corpus, corpus / "tokenizer.model")


def test_packed_eval_finds_the_runs_data(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    cfg = smoke.get_config()  # data.source=default: the generated corpus, wherever it was built
    (run / "config.json").write_text(cfg.to_json_best_effort())
    (run / "data.json").write_text(json.dumps({"data_dir": "/corpus/abc", "tokenizer": "/corpus/abc/tokenizer.model"}))
    monkeypatch.chdir(tmp_path)
    loaded = rundir.load_run_config("run/config.json")
    rundir.recorded_data(loaded, "run/config.json")
    assert (loaded.data.source, loaded.data.dir, loaded.data.tokenizer) == ("dir", "/corpus/abc",
                                                                            "/corpus/abc/tokenizer.model")
    rundir.recorded_data(loaded, "run/config.json", data_dir="mine")
    assert loaded.data.dir == "mine"  # --data_dir wins
    # A hand-written config.json's relative data paths are read from its own folder, not the working directory.
    cfg.data.source, cfg.data.dir, cfg.data.tokenizer = "dir", "shards", "/abs/sp.model"
    (run / "data.json").unlink()
    (run / "config.json").write_text(cfg.to_json_best_effort())
    loaded = rundir.load_run_config("run/config.json")
    rundir.recorded_data(loaded, "run/config.json")
    assert (loaded.data.dir, loaded.data.tokenizer) == (str(run / "shards"), "/abs/sp.model")


@pytest.mark.parametrize("extra, named", [
    ({"train": {"nope": 1}}, "train.nope"),  # a group's unknown key
    ({"nope": 1}, "nope"),  # a top-level one
    ({"eval": {"ttt": {"nope": 1}}}, "eval.ttt.nope"),  # a nested group's
    ({"model": {"nope": {"deeper": 1}}}, "model.nope.deeper is not a config key;"),  # a whole unknown group
    ({"train": {"a1": 1, "a2": 2, "a3": 3, "a4": 4, "a5": 5}}, "train.a1 is not a config key (and 4 more"),
])
def test_a_runs_config_json_with_a_key_the_schema_lacks_is_named(tmp_path, extra, named):
    cfg = json.loads(smoke.get_config().to_json_best_effort())

    def merge(node, more):
        for key, value in more.items():
            if isinstance(value, dict) and isinstance(node.get(key), dict):
                merge(node[key], value)
            else:
                node[key] = value
    merge(cfg, extra)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="^" + re.escape(f"{path}: {named}")):
        config_lib.run_config(path)


def test_a_runs_config_json_from_before_a_key_existed_gets_its_default(tmp_path):
    cfg = json.loads(smoke.get_config().to_json_best_effort())
    del cfg["eval"]["budget_seconds"], cfg["audit"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    loaded = config_lib.run_config(path)
    assert loaded.eval.budget_seconds == config_lib.base_config().eval.budget_seconds
    assert loaded.audit == config_lib.base_config().audit
    assert loaded.model.to_dict() == smoke.get_config().model.to_dict()


def test_entry_points_end_a_user_error_as_one_line_and_exit_code_2(tmp_path, capsys):
    argv = ["eval", "--artifact", "model.golfjax", "--config_json", str(tmp_path / "nope.json")]
    assert submission.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'nope.json'}: no such config.json (a run directory holds one; or pass " \
                  "--config_json)\n"
    assert submission.main(argv + ["--debug"]) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        errors.exit_code(lambda: 1 / 0)
    assert issubclass(shards.ShardError, UserError) and issubclass(ArtifactBudgetError, UserError)

    proc = _cli("--config.train.iteratons=5")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("error: unknown config key train.iteratons (--config.train.iteratons=5); did you mean "
                           "train.iterations or train.batch_tokens?\n")
    proc = _cli("--config.train.seq_len=0", f"--config.train.run_dir={tmp_path / 'runs'}")
    assert (proc.returncode, proc.stderr) == (2, "error: train.seq_len=0: use a value >= 1\n"), proc.stderr[-2000:]
    assert not (tmp_path / "runs").exists()  # stopped before the run dir, let alone a compile
