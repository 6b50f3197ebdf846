"""The packed submission script: only the config's import closure, minified, counted exactly,
and it trains and evaluates from its embedded sources alone."""

from __future__ import annotations

import ast
import bz2
import json
import lzma
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from configs import smoke, sp8192_legal
from golf_jax.submission import codebytes, __main__ as pack, build, modules
from golf_jax import pipeline
from golf_jax.config import base_config
from golf_jax.data import prepare
from golf_jax.core.errors import UserError
from golf_jax.core.paths import REPO_ROOT

T = 32
# configs/sp8192_legal.py packed 57,241 B on 2026-12-02 (docs/perf.md, Code bytes); every module
# unminified was 172 KB, and base85 instead of the latin-1 literal would make it 70.5 KB.
SP8192_LEGAL_MAX_BYTES = 66_000
DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
NEVER_IN_A_SUBMISSION = ("golf_jax.audit", "golf_jax.submission.build", "golf_jax.submission.__main__", "golf_jax.bench",
                         "golf_jax.eval.__main__", "golf_jax.quant.__main__", "golf_jax.records", "golf_jax.core.cli",
                         "golf_jax.quant.estimate", "golf_jax.data.prepare", "golf_jax.data.caseops",
                         "golf_jax.train.__main__", "golf_jax.report")


def embedded_files(script: bytes) -> dict[str, str]:
    """{path: source} read back from a script the way its bootstrap does (without running it)."""
    tree = ast.parse(script.decode("latin-1"))
    data = next(n.value.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "D")
    name = re.search(rb"import (\w+) as Z", script).group(1).decode()
    codec = {"lzma": lzma, "bz2": bz2}.get(name) or pytest.importorskip(name)
    records = codec.decompress(data.encode("latin-1")).decode("utf-8").split("\x1e")[1:]
    return dict(r.split("\x1f", 1) for r in records)


def fewest_gates():
    """base_config from shards: the only gated branches it takes are the sequential loader and
    the plain compressor (their alternatives, the other loaders and per-group compression, are
    gated too)."""
    cfg = base_config()
    cfg.data.source = "dir"
    on = [name for name, taken in zip(modules.GATES, modules.gates_on(cfg)) if taken]
    assert on == ["golf_jax.data.sequential", "golf_jax.quant.compress"], on
    return cfg


def test_script_holds_the_closure_minified_and_is_counted(tmp_path, capsys):
    cfg = sp8192_legal.get_config()
    script = build.build_script(cfg)
    assert codebytes.code_bytes(cfg) == len(script)
    assert build.build_script(cfg) == script  # deterministic
    assert len(script) < SP8192_LEGAL_MAX_BYTES, f"{len(script):,} B: what grew? (docs/perf.md, Code bytes)"
    files = embedded_files(script)
    mods = build.packed_modules(cfg)
    assert files == build.packed_files(cfg)
    shipped = {".".join(Path(p).with_suffix("").parts).removesuffix(".__init__") for p in files}
    assert shipped <= set(mods) and all(  # only empty subpackages stay out: they unpack as namespace packages
        m != "golf_jax" and (REPO_ROOT / m.replace(".", "/") / "__init__.py").is_file() for m in set(mods) - shipped)
    assert not [p for p in files if "from __future__" in files[p]]
    assert "golf_jax/pipeline.py" in files and "golf_jax/data/shuffled.py" in files
    assert not [m for m in mods if build._under(m, NEVER_IN_A_SUBMISSION)], mods
    assert not {"golf_jax.data.coprime", "golf_jax.data.synthetic", "golf_jax.eval.ttt.prequant"} & set(mods)
    for path, source in files.items():  # no comments, no docstrings
        assert not re.search(r"^\s*#", source, re.M), path
        tree = ast.parse(source)
        assert not [n for n in ast.walk(tree) if isinstance(n, DOC_NODES) and ast.get_docstring(n) is not None
                    and not (isinstance(n, ast.Module) and "__doc__" in source)], path
        checks = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == build.CONFIG_CHECK]
        assert all(len(n.body) == 1 and isinstance(n.body[0], (ast.Pass, ast.Expr)) for n in checks), path  # run before packing

    (tmp_path / "config.json").write_text(cfg.to_json_best_effort())
    (tmp_path / "model.golfjax").write_bytes(b"weights")
    out = tmp_path / "submission.py"
    assert pack.main([f"--artifact={tmp_path / 'model.golfjax'}", f"--out={out}"]) == 0  # its config.json
    assert out.read_bytes() == script
    cfg.train.iterations = -1  # the script will not check its config, so packing does
    (tmp_path / "config.json").write_text(cfg.to_json_best_effort())
    capsys.readouterr()
    assert pack.main([f"--artifact={tmp_path / 'model.golfjax'}", f"--out={tmp_path / 'bad.py'}"]) == 2
    assert capsys.readouterr().err.startswith("error: train.iterations=-1")
    assert not (tmp_path / "bad.py").exists()


def test_gates_follow_the_config_and_are_lazy(tmp_path):
    off = build.packed_modules(fewest_gates())
    gated = [m for m in off if build._under(m, modules.GATES)]
    assert gated == ["golf_jax.data.sequential", "golf_jax.quant.compress"], \
        "a gated module is imported at module level"
    every = build.packed_modules(None)
    assert set(modules.GATES) <= set(every) and set(off) < set(every)
    assert {"golf_jax.data.synthetic", "golf_jax.data.prepare"} <= set(build.packed_modules(smoke.get_config()))

    # The minified tree has the same closure, and a packed tree refuses a config it was not packed for.
    cfg = sp8192_legal.get_config()
    for path, source in build.packed_files(cfg).items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(source)
    assert build.packed_modules(cfg, root=tmp_path) == build.packed_modules(cfg)
    modules.check_packed(cfg, root=tmp_path)
    cfg.data.loader = "coprime"
    with pytest.raises(ValueError, match="packed without golf_jax.data.coprime, which data.loader=coprime needs"):
        modules.check_packed(cfg, root=tmp_path)


def test_packed_script_trains_and_evaluates_like_in_process(tmp_path, shared_data):
    work = tmp_path / "sub"
    work.mkdir()
    cfg = base_config()
    m = cfg.model
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads, m.compute_dtype = 1, 64, 4, 2, "float32"
    t = cfg.train
    t.seq_len, t.batch_tokens, t.iterations, t.val_every, t.run_dir = T, 8 * 2 * T, 3, 0, str(work / "runs")
    cfg.eval.batch_tokens, cfg.eval.stages, cfg.eval.sliding.stride = 16 * T, "roundtrip,sliding", 16
    cfg.export.format = "rtn_int6"
    tok = shared_data / "tokenizers" / "fineweb_1024_bpe.model"
    cfg.data.source, cfg.data.dir, cfg.data.tokenizer, cfg.data.loader = "dir", str(work), str(tok), "shuffled"
    rng = np.random.default_rng(0)
    prepare.write_shard(work / "fineweb_val_000000.bin", rng.integers(0, 1024, 40 * T + 1).astype(np.uint16))
    for i in range(8):  # the shuffled loader wants a shard per data rank
        prepare.write_shard(work / f"fineweb_train_{i:06d}.bin", rng.integers(0, 1024, 8 * T).astype(np.uint16))
    (work / "config.json").write_text(cfg.to_json_best_effort())
    script = build.build_script(cfg)
    (work / "submission.py").write_bytes(script)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def packed(*argv: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "submission.py", *argv], cwd=work, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc

    summary = json.loads(packed("train", "--config_json", "config.json").stdout.strip().splitlines()[-1])
    assert summary["status"] == "ok" and "audit" not in summary  # the audit is not packed
    assert summary["code_bytes"] == len(script)  # a packed run counts its own script
    assert (Path(summary["run_dir"]) / "submission.py").read_bytes() == script  # and keeps it with the artifact
    artifact = summary["artifact_path"]

    proc = packed("eval", "--artifact", artifact, "--config_json", "config.json", "--data_dir", ".",
                  "--tokenizer", str(tok))
    assert re.search(r"golf_jax from .*golf_jax_sub_", proc.stderr), proc.stderr[-2000:]
    got = {m.group(1): float(m.group(2)) for m in re.finditer(r"eval (\w+): val_loss \S+ val_bpb (\S+)", proc.stdout)}
    want = {k: r.val_bpb for k, r in pipeline.evaluate_artifact(cfg, artifact).items()}
    assert got == want, (got, want)  # the same stages from the same config, bit for bit
    assert got["roundtrip"] == summary["eval"]["roundtrip"]["val_bpb"]
