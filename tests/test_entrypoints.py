"""What a new user hit (issue 25): configs that load from anywhere, a run's config.json read as
data, settings refused before training, `export` packing as the run did, `evaluate` with the
artifact's own run, data identity (tokenizer and val shards against their record, the
artifact's tokenizer against the evaluation's), and atomic writes on a full disk."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tiny_run
from golf_jax.submission import codebytes, build
from golf_jax import pipeline
from golf_jax.config import sibling_config
from golf_jax.data import identity, prepare, shards, synthetic
from golf_jax.core.errors import UserError
from golf_jax.core.paths import REPO_ROOT

CONFIGS = sorted(p for p in (REPO_ROOT / "configs").glob("*.py") if p.name != "__init__.py")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tiny_run.make_run(tmp_path_factory.mktemp("runs"))


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads_without_the_configs_package(path, monkeypatch):
    """From outside the repository root `configs` is not importable; configs load each other by path."""
    monkeypatch.setitem(sys.modules, "configs", None)  # `import configs...` now raises ModuleNotFoundError
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != REPO_ROOT])
    cfg = sibling_config(str(path), path.stem)
    assert cfg.name and "eval" in cfg


def test_the_config_flag_reads_a_runs_config_json_as_data(run_dir, tmp_path):
    from golf_jax.core import cli

    parser = cli._ConfigParser("config")
    for arg in (run_dir, run_dir / "config.json"):
        cfg = parser.parse(str(arg))
        assert cfg.model.model_dim == 64 and cfg.audit.enabled is False  # JSON's false, not executed as Python
        assert cfg.data.source == "dir" and cfg.data.dir == json.loads((run_dir / "data.json").read_text())["data_dir"]
        with pytest.raises(AttributeError):
            cfg.train.no_such_key = 1  # locked
    (tmp_path / "config.json").write_text('{"name": "x",')
    with pytest.raises(ValueError, match=r"config.json: not a run's config.json \(.*JSONDecodeError"):
        parser.parse(str(tmp_path))
    with pytest.raises(ValueError, match=r"nope.json: no such file"):
        parser.parse(str(tmp_path / "nope.json"))


@pytest.mark.parametrize("key, value, says", [
    ("eval.stages", "", r"eval.stages='' lists no stage"),
    ("eval.stages", " , ", r"lists no stage"),
    ("opt.matrix_lr", float("nan"), r"opt.matrix_lr=nan: use a finite number"),
    ("opt.scalar_lr", float("inf"), r"opt.scalar_lr=inf: use a finite number"),
    ("eval.ttt.lr", -0.1, r"eval.ttt.lr=-0.1: a learning rate must be >= 0"),
    ("schedule.min_lr", float("-inf"), r"schedule.min_lr=-inf"),
    ("export.budget_bytes", 1000, r"export.budget_bytes=1,000 leaves no room for weights: this config's submission "
                                  r"script alone is [\d,]+ B"),
])
def test_settings_that_would_fail_after_training_are_refused_up_front(key, value, says):
    cfg = tiny_run.tiny_config(**{key: value})
    with pytest.raises(UserError, match=says):
        pipeline.check_config(cfg, 8)


def test_export_packs_and_counts_as_the_run_did_and_keeps_its_script(run_dir, tmp_path, capsys):
    from golf_jax.quant import __main__ as export_cli

    run = _copy(run_dir, tmp_path)
    script = (run / "submission.py").read_bytes()
    assert export_cli.main([str(run)]) == 0
    out = json.loads((run / "export.json").read_text())
    assert (run / "submission.py").read_bytes() == script  # the default corpus's generator stays packed
    assert out["code_bytes"] == len(script) == codebytes.code_bytes(tiny_run.tiny_config())
    assert "golf_jax.data.synthetic" in build.packed_modules(tiny_run.tiny_config())
    assert f"code {len(script):,} B" in capsys.readouterr().out


@pytest.mark.parametrize("damage, says", [
    (lambda r: (r / "params.msgpack").write_bytes((r / "params.msgpack").read_bytes()[:1000]),
     r"params.msgpack: damaged, not the params a run saved"),
    (lambda r: (r / "params.msgpack").write_bytes(b""), r"params.msgpack: damaged"),
    (lambda r: (r / "config.json").write_bytes(b""), r"config.json: not a run's config.json"),
    (lambda r: (r / "config.json").unlink(), r"config.json: no such config.json"),
    (lambda r: (r / "params.msgpack").unlink(), r"params.msgpack: no such file"),
])
def test_export_of_a_damaged_run_is_one_line(run_dir, tmp_path, capsys, damage, says):
    from golf_jax.quant import __main__ as export_cli
    from golf_jax.core.errors import exit_code

    run = _copy(run_dir, tmp_path)
    artifact = (run / "model.golfjax").read_bytes()
    damage(run)
    assert exit_code(lambda: export_cli.main([str(run)])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and __import__("re").search(says, err), err
    assert (run / "model.golfjax").read_bytes() == artifact  # the run's outputs are kept


def _evaluate(cfg, artifact):
    from golf_jax.eval import __main__ as evaluate

    return evaluate.evaluate(cfg, str(artifact))


@pytest.mark.parametrize("change, says", [
    ({"model.model_dim": 128}, r"model.golfjax holds another model \(.*\); pass the config of the run that wrote it"),
    ({"model.num_layers": 3}, r"model.golfjax holds another model"),
])
def test_evaluate_refuses_an_artifact_of_another_model_before_making_its_run_dir(run_dir, tmp_path, change, says):
    cfg = tiny_run.tiny_config(**change, **{"train.run_dir": str(tmp_path / "evals")})
    with pytest.raises(UserError, match=says):
        _evaluate(cfg, run_dir / "model.golfjax")
    assert not (tmp_path / "evals").exists()  # checked before the run dir: nothing to clean up


def test_evaluate_refuses_an_artifact_trained_with_another_tokenizer(run_dir, tmp_path):
    run = _copy(run_dir, tmp_path)
    data = json.loads((run / "data.json").read_text())
    (run / "data.json").write_text(json.dumps({**data, "tokenizer": "/data/sp1024.model", "tokenizer_sha256": "ab" * 32}))
    cfg = tiny_run.tiny_config(**{"train.run_dir": str(tmp_path / "evals")})
    with pytest.raises(UserError, match=r"was trained with the tokenizer /data/sp1024.model \(sha256 abababababab"):
        _evaluate(cfg, run / "model.golfjax")
    assert not (tmp_path / "evals").exists()


@pytest.mark.parametrize("damage", ["truncated", "bit_flipped", "empty", "text"])
def test_a_corrupt_artifact_is_one_line_naming_the_file(run_dir, tmp_path, damage):
    run = _copy(run_dir, tmp_path)
    artifact = run / "model.golfjax"
    blob = bytearray(artifact.read_bytes())
    if damage == "bit_flipped":
        blob[len(blob) // 2] ^= 0xFF
    new = {"truncated": bytes(blob[: len(blob) // 2]), "bit_flipped": bytes(blob), "empty": b"",
           "text": b"not an artifact\n"}[damage]
    artifact.write_bytes(new)
    cfg = tiny_run.tiny_config(**{"train.run_dir": str(tmp_path / "evals")})
    with pytest.raises(UserError, match=rf"{artifact}: (not a readable artifact|holds another model)") as e:
        _evaluate(cfg, artifact)
    assert e.value.__cause__ is None or "\n" not in str(e.value)
    assert not (tmp_path / "evals").exists()


def test_evaluate_without_config_uses_the_artifacts_run_and_says_where_it_writes(run_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    argv = [sys.executable, "-m", "golf_jax.eval", f"--artifact={run_dir / 'model.golfjax'}",
            f"--config.train.run_dir={tmp_path}"]
    proc = subprocess.run(argv, cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (eval_dir,) = tmp_path.iterdir()
    assert proc.stdout.splitlines()[0] == f"writing {eval_dir}"
    out = json.loads((eval_dir / "eval.json").read_text())
    assert out["status"] == "ok" and list(out["eval"]) == ["roundtrip"]
    assert out["data_check"].startswith("tokenizer sha256") and "eval roundtrip: val_bpb" in proc.stdout
    assert json.loads((eval_dir / "config.json").read_text())["model"]["model_dim"] == 64  # the run's own config
    assert [p.name[:19] for p in (eval_dir / "tensorboard").iterdir()] == ["events.out.tfevents"]  # its observer


# -- data identity ---------------------------------------------------------------------------


def _download_layout(root: Path, tokenizer_entry) -> tuple[Path, Path]:
    """A download.json layout (OUT/datasets/fineweb10B_sp1024/, OUT/tokenizers/) with no manifest.json."""
    corpus = synthetic.ensure_default_corpus()
    data_dir = root / "datasets" / "fineweb10B_sp1024"
    data_dir.mkdir(parents=True)
    shutil.copy(sorted(corpus.data_dir.glob("fineweb_val_*.bin"))[0], data_dir / "fineweb_val_000000.bin")
    (root / "tokenizers").mkdir()
    tok = root / "tokenizers" / "fineweb_1024_bpe.model"
    shutil.copy(corpus.tokenizer_path, tok)
    val = data_dir / "fineweb_val_000000.bin"
    files = {"datasets/fineweb10B_sp1024/fineweb_val_000000.bin": {"sha256": shards.sha256_file(val),
                                                                   "blob_id": identity.git_blob_id(val)},
             "tokenizers/fineweb_1024_bpe.model": tokenizer_entry(tok)}
    (root / "download.json").write_text(json.dumps({"files": files}))
    return data_dir, tok


@pytest.mark.parametrize("hash_kind", ["sha256", "blob_id"])
def test_the_download_layout_checks_tokenizer_and_val_shards(tmp_path, hash_kind):
    digest = {"sha256": shards.sha256_file, "blob_id": identity.git_blob_id}[hash_kind]
    data_dir, tok = _download_layout(tmp_path, lambda t: {hash_kind: digest(t), "size": t.stat().st_size})
    cfg = tiny_run.tiny_config(**{"data.source": "dir", "data.dir": str(data_dir), "data.tokenizer": str(tok)})
    assert len(pipeline.load_data(cfg).val_tokens) == 4097  # the recorded tokenizer and shard pass
    other = tmp_path / "other.model"  # another tokenizer of the same size
    spm_bytes = bytearray(tok.read_bytes())
    spm_bytes[-1] ^= 1
    other.write_bytes(bytes(spm_bytes))
    cfg.data.tokenizer = str(other)
    with pytest.raises(UserError, match=r"data.tokenizer=.*other.model is not the tokenizer the shards in .* were "
                                        r"built with \(tokenizers/fineweb_1024_bpe.model, .* in download.json\)"):
        pipeline.load_data(cfg)
    cfg.data.tokenizer = str(tok)
    val = data_dir / "fineweb_val_000000.bin"
    tokens = np.array(shards.read_shard(val))
    tokens[:4000] = (tokens[:4000] + 1) % 1024  # 4,000 ids rewritten, header intact
    prepare.write_shard(val, tokens)
    with pytest.raises(UserError, match=r"fineweb_val_000000.bin: not the val shard recorded in .*download.json"):
        pipeline.load_data(cfg)


def test_prepares_manifest_records_val_shards_and_a_changed_or_extra_one_is_refused(tmp_path):
    corpus = synthetic.ensure_default_corpus()
    data_dir = Path(shutil.copytree(corpus.data_dir, tmp_path / "corpus"))
    cfg = tiny_run.tiny_config(**{"data.source": "dir", "data.dir": str(data_dir),
                                  "data.tokenizer": str(data_dir / "tokenizer.model")})
    pipeline.load_data(cfg)
    val = sorted(data_dir.glob("fineweb_val_*.bin"))[0]
    shutil.copy(val, data_dir / "fineweb_val_000099.bin")
    with pytest.raises(UserError, match=r"fineweb_val_000099.bin: a val shard that .*manifest.json does not record"):
        pipeline.load_data(cfg)
    (data_dir / "fineweb_val_000099.bin").unlink()
    tokens = np.array(shards.read_shard(val))
    tokens[-10:] = 0
    prepare.write_shard(val, tokens)
    with pytest.raises(UserError, match=r"not the val shard recorded in .*manifest.json \(sha256 "):
        pipeline.load_data(cfg)


def test_prepare_given_a_vocab_file_is_one_line(tmp_path, capsys):
    corpus = synthetic.ensure_default_corpus()
    vocab = tmp_path / "tok.vocab"
    vocab.write_text("<unk>\t0\n<s>\t0\n")
    (tmp_path / "val.jsonl").write_text('{"text": "hello"}\n')
    assert prepare.main(["--tokenizer", str(vocab), "--val", str(tmp_path / "val.jsonl"), "--out",
                         str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--tokenizer={vocab} is not a SentencePiece .model file" in err
    assert "tok.model" in err and not (tmp_path / "out").exists()
    assert corpus.tokenizer_path.is_file()


# -- atomic writes ---------------------------------------------------------------------------


def _full_disk(monkeypatch):
    """Every Path.write_bytes writes half its data, then fails as a full disk does."""
    real = Path.write_bytes

    def write_bytes(self, data):
        real(self, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


def _writers():
    from golf_jax.eval.ledger import Ledger
    from golf_jax.quant import export
    from golf_jax.core.rundir import RunDir

    def summary(run: Path):
        r = object.__new__(RunDir)  # only what write_json reads
        r.is_writer, r.path = True, run
        r.write_json("summary.json", {"status": "ok", "new": True})
        return run / "summary.json"

    def artifact(run: Path):
        from flax import serialization

        from golf_jax import model as model_lib

        cfg = tiny_run.tiny_config()
        params = serialization.msgpack_restore((run / "params.msgpack").read_bytes())
        export.export_artifact(params, model_lib.param_labels(cfg.model, params, cfg.compat), cfg, run, 1000)
        return run / "model.golfjax"

    def ledger(run: Path):
        Ledger("x", 10).write(run / "ledger_x.json")
        return run / "ledger_x.json"

    return {"summary": summary, "artifact": artifact, "ledger": ledger}


@pytest.mark.parametrize("writer", ["summary", "artifact", "ledger"])
def test_a_full_disk_keeps_the_last_good_file_and_is_one_line(run_dir, tmp_path, monkeypatch, writer):
    run = _copy(run_dir, tmp_path)
    write = _writers()[writer]
    (run / "ledger_x.json").write_text("{}\n")  # a stage's last good ledger
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    _full_disk(monkeypatch)
    with pytest.raises(UserError, match=r": cannot write \(No space left on device\); free disk space") as e:
        write(run)
    assert "\n" not in str(e.value)
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before  # the last good files, and no temporary file left


def test_a_full_disk_at_the_end_of_a_run_keeps_its_last_summary(tmp_path, monkeypatch):
    """The job's own writes on a full disk: summary.json keeps its last good content."""
    from golf_jax.core.rundir import RunDir

    cfg = tiny_run.tiny_config()
    run = RunDir(tmp_path, "full", cfg)
    run.write_json("summary.json", {"status": "running"})
    _full_disk(monkeypatch)
    with pytest.raises(UserError, match="summary.json: cannot write"):
        with run.recording({"status": "running"}, "summary.json"):
            pass
    assert json.loads((run.path / "summary.json").read_text()) == {"status": "running"}
    assert not [p for p in run.path.iterdir() if ".tmp" in p.name]


# -- the report ------------------------------------------------------------------------------


def test_summary_md_warns_of_a_warmdown_longer_than_the_run_and_a_single_chunk_ttt(tmp_path):
    from test_report import _synthetic_run

    from golf_jax.report.write import write_report

    run = tmp_path / "run"
    _synthetic_run(run)  # 20 steps, warmdown_iters of the config below
    cfg = json.loads((run / "config.json").read_text())
    cfg["schedule"].update(warmdown_iters=1200, warmdown_frac=0.0)
    (run / "config.json").write_text(json.dumps(cfg))
    write_report(run)
    md = (run / "report" / "summary.md").read_text()
    assert "## Warnings" in md and "schedule.warmdown_iters=1,200 is at least the run's 20 steps" in md
    assert "single chunk" not in md
    np.save(run / "blocks_ttt.npy", np.array([[2048 * 1.4, 2048.0, 4096.0]]))  # TTT that scored one chunk
    cfg["schedule"]["warmdown_iters"] = 8
    (run / "config.json").write_text(json.dumps(cfg))
    write_report(run)
    md = (run / "report" / "summary.md").read_text()
    assert "the ttt stage scored a single chunk" in md and "warmdown_iters" not in md


def test_quant_error_marks_exact_tensors(tmp_path):
    from golf_jax.report import plots
    from golf_jax.report.rundata import Run

    rows = [{"name": "a", "kind": "int8", "rel_error": 0.01}, {"name": "b", "kind": "fp16", "rel_error": 0.0}]
    run = Run(tmp_path, {}, {}, None, None)
    path = plots.quant_errors(rows, run, tmp_path / "q.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    plots.quant_errors([rows[1]], run, tmp_path / "q0.png")  # every tensor exact: still a figure


def test_tensorboard_gets_the_eval_scores_and_the_audit_verdict(tmp_path):
    from golf_jax.config import base_config
    from golf_jax.report.tensorboard import Events
    from golf_jax.core.rundir import RunDir
    from test_report import read_events

    run = RunDir(tmp_path, "tb", base_config(), observers=(Events,))  # as python -m golf_jax.eval makes it
    run.write_json("summary.json", {"status": "ok", "steps": 7, "val_bpb": 1.25, "compliance": "val_bpb (official)",
                                    "eval": {"roundtrip": {"val_bpb": 1.5, "val_loss": 3.0}, "ttt": {"val_bpb": 1.25}},
                                    "audit": {"verdict": "PASS", "checks": {"flip test": "PASS: ok"}}})
    run.close()
    (events,) = (run.path / "tensorboard").iterdir()
    got = {(v.tag, e.step): v.simple_value for e in read_events(events) if e.HasField("summary")
           for v in e.summary.value if v.HasField("simple_value")}
    assert got == {("eval/roundtrip/val_bpb", 7): 1.5, ("eval/roundtrip/val_loss", 7): 3.0,
                   ("eval/ttt/val_bpb", 7): 1.25, ("eval/final_val_bpb", 7): 1.25, ("audit/pass", 7): 1.0}


def test_the_audit_cli_refuses_bad_input_up_front(run_dir, tmp_path):
    from golf_jax.audit.__main__ import check_inputs, load_factory

    artifact = str(run_dir / "model.golfjax")
    with pytest.raises(UserError, match=r"audit.weights=artifact audits the artifact's weights: pass --artifact"):
        check_inputs(tiny_run.tiny_config(**{"audit.weights": "artifact"}), None)
    with pytest.raises(UserError, match=r"eval.stages='roundtrip,nope': unknown stage\(s\) \['nope'\]"):
        check_inputs(tiny_run.tiny_config(**{"eval.stages": "roundtrip,nope"}), artifact)
    with pytest.raises(UserError, match=r"audit.tokens=0"):  # the audit's keys, whatever audit.enabled says
        check_inputs(tiny_run.tiny_config(**{"audit.tokens": 0}), artifact)
    with pytest.raises(UserError, match=r"--json=.* is a folder"):
        check_inputs(tiny_run.tiny_config(), artifact, str(tmp_path))
    with pytest.raises(UserError, match=r"holds another model"):
        check_inputs(_artifact_weights(tiny_run.smoke.get_config()), artifact)
    with pytest.raises(UserError, match=r"--evaluator='no_such_module:f': no_such_module does not import"):
        load_factory("no_such_module:f")
    (tmp_path / "broken.py").write_text("def f(:\n")
    with pytest.raises(UserError, match=r"broken.py:f'.* does not import \(SyntaxError"):
        load_factory(f"{tmp_path / 'broken.py'}:f")


def _artifact_weights(cfg):
    cfg.audit.weights = "artifact"
    return cfg


# -- the command-line convention (golf_jax/core/cli.py; the bad-input matrix runs it on every entry point) --


def test_the_cli_convention_in_process(capsys):
    """A command's own flags: `--name=value` or `--name value`, a hyphenated name read as the
    underscored one, a required flag and the positionals as one line each, and a second call in
    one process starting from the defaults."""
    from absl import flags

    from golf_jax.core import cli

    fv = cli.flag_values()
    count = cli.required(flags.DEFINE_integer("shard_tokens", None, "Tokens.", flag_values=fv), "a count")
    seen = []

    def main(args):
        (run,) = cli.positionals(args, "RUN_DIR", 1, 1)
        if run == "bad":
            raise UserError("RUN_DIR=bad: pass a good one")
        seen.append((count.value, run))

    assert cli.run(main, fv, ["--shard-tokens", "7", "r"]) == 0 and seen == [(7, "r")]
    assert cli.run(main, fv, ["r2", "--shard_tokens=8"]) == 0 and seen[-1] == (8, "r2")
    capsys.readouterr()
    for argv, says in [(["r"], "error: --shard_tokens is required: pass a count"),  # not the last call's 8
                       (["--shard_tokens=x", "r"], "error: flag --shard_tokens=x: invalid literal"),
                       (["--shard_token=1", "r"], "error: unknown flag --shard_token; did you mean --shard_tokens?"),
                       (["--shard_tokens=1"], "error: RUN_DIR is missing"),
                       (["--shard_tokens=1", "a", "b"], "error: unexpected argument(s) ['b']"),
                       (["--shard_tokens=1", "bad"], "error: RUN_DIR=bad: pass a good one")]:
        assert cli.run(main, fv, argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(says), (argv, err)
    assert cli.run(main, fv, ["--shard_tokens=1", "bad", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.splitlines()[-1] == "error: RUN_DIR=bad: pass a good one"
    assert cli.run(main, fv, ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(__doc__.strip().splitlines()[0]) and "--shard_tokens: Tokens." in out and "debug" in out


SCRIPTS = {  # a developer script run by its path: (a flag it lists, an in-process run needing no GPU, torch nor
    # compile, that run's exit code, what it prints); "{tmp}" is the test's folder
    "bench/gpu_description.py": ("--target", ["--target=h100"], 0, "no GPU here"),
    "bench/target_table.py": ("--train_devices", ["--out={tmp}", "--configs=smoke", "--stages=eval", "--devices=1"],
                              0, "| smoke | eval | 1 | does not compile: read back |"),
    "bench/xla_flags_ab.py": ("--timeout", ["--dry_run", "--rounds=1", "--flags=autotune_0", "--", "--stage=eval"],
                              0, "--xla_gpu_autotune_level=0' -m golf_jax.bench --stage=eval --json="),
    "tools/scaling_bench.py": ("--rounds", ["--impl=flash"], 2, "error: model.attention_impl='flash'"),
    "tools/torch_side_by_side.py": ("--torch_sdpa", ["--ref={tmp}/train_gpt.py"], 0, "skip: the reference"),
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_developer_scripts_follow_the_cli_convention(script, tmp_path, capsys, monkeypatch):
    """tools/*.py and bench/*.py as golf_jax/core/cli.py says, run by their path: `--help` and a
    bad command line without jax or torch (stand-ins that refuse to import), one line naming the
    program by its path; then main(argv) in-process, a UserError with --debug its traceback."""
    import importlib.util

    import jax

    flag, argv, code, says = SCRIPTS[script]
    (tmp_path / "blocked").mkdir()
    for heavy in ("jax", "torch"):
        (tmp_path / "blocked" / f"{heavy}.py").write_text("raise ImportError('not before the work')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "blocked")}
    run = [sys.executable, str(REPO_ROOT / script)]
    shown = subprocess.run([*run, "--help"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert shown.returncode == 0 and f"  {flag}" in shown.stdout and "--[no]debug" in shown.stdout, shown.stderr
    bad = subprocess.run([*run, "--nope"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert (bad.returncode, bad.stderr) == (2, f"error: unknown flag --nope; `python {script} --help` lists the "
                                               "flags\n")
    spec = importlib.util.spec_from_file_location(f"script_{Path(script).stem}", REPO_ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "smoke.eval.h100x1.json").write_text(json.dumps(
        {"config": "smoke", "stage": "eval", "devices": 1, "error": "read back"}))  # target_table's cell, done
    jax.devices()  # the backend started: gpu_description's XLA_FLAGS (restored below) change nothing here
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    capsys.readouterr()
    assert module.main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == code
    out, err = capsys.readouterr()
    assert says in (err if code else out), (out, err)
    if code:  # a user error: one line, its traceback with --debug
        assert err.count("\n") == 1
        assert module.main([*argv, "--debug"]) == code
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and err.splitlines()[-1].startswith(says)
