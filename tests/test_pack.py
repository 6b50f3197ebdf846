"""The packed submission script: only the config's import closure, minified, counted exactly,
and it trains and evaluates from its embedded sources alone."""

from __future__ import annotations

import ast
import bz2
import functools
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from configs import frontier, smoke, sp8192_legal
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
FUTURE = "from __future__ import annotations\n"
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
        assert "repo_only" not in source, path  # the marker costs no byte (test_marked_bodies_are_emptied_...)

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

    # The packed tree has the same closure (a package that only an untaken branch imports is not
    # packed: frontier's eval/ttt/), and a packed tree refuses a config it was not packed for.
    for cfg in (frontier.get_config(), sp8192_legal.get_config()):
        for path, source in build.packed_files(cfg).items():
            (tmp_path / cfg.name / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / cfg.name / path).write_text(source)
        assert build.packed_modules(cfg, root=tmp_path / cfg.name) == build.packed_modules(cfg)
    assert "golf_jax.eval.ttt" not in build.packed_modules(frontier.get_config())
    tmp_path = tmp_path / cfg.name
    modules.check_packed(cfg, root=tmp_path)
    cfg.data.loader = "coprime"
    with pytest.raises(ValueError, match="packed without golf_jax.data.coprime, which data.loader=coprime needs"):
        modules.check_packed(cfg, root=tmp_path)
    cfg.data.loader, cfg.eval.stages = "shuffled", "roundtrip,slot"  # a gated package: found by its folder
    with pytest.raises(ValueError, match="packed without golf_jax.eval.slot, which eval.stages with slot needs"):
        modules.check_packed(cfg, root=tmp_path)


# gate -> (settings that take its branch, settings that do not), on base_config. Each gate needs a row.
BRANCHES = {
    "golf_jax.data.synthetic": ({"data.source": "default"}, {"data.source": "dir"}),
    "golf_jax.data.sequential": ({"data.loader": "sequential"}, {"data.loader": "coprime"}),
    "golf_jax.data.coprime": ({"data.loader": "coprime"}, {"data.loader": "shuffled"}),
    "golf_jax.data.shuffled": ({"data.loader": "shuffled"}, {"data.loader": "sequential"}),
    "golf_jax.train.checkpoint": ({"train.resume_from": "runs/x"}, {"train.checkpoint_every": 0}),
    "golf_jax.eval.ttt.prequant": ({"eval.prequant_ttt.mode": "flat"}, {"eval.prequant_ttt.mode": "off"}),
    "golf_jax.eval.slot": ({"eval.stages": "roundtrip,slot"}, {"eval.stages": "roundtrip,ttt"}),
    "golf_jax.eval.ttt.score_first": ({"eval.stages": "roundtrip,ttt"}, {"eval.stages": "roundtrip,slot"}),
    "golf_jax.eval.phased": ({"eval.ttt.mode": "phased"}, {"eval.ttt.mode": "score_first"}),
    "golf_jax.eval.profile": ({"eval.profile": "sliding"}, {"eval.profile": ""}),
    "golf_jax.quant.lqer": ({"export.lqer_rank": 4}, {"export.lqer_rank": 0}),
    "golf_jax.quant.lowrank": ({"export.lqer_rank": 4}, {"export.lqer_rank": 0}),
    "golf_jax.quant.pergroup": ({"export.compressor": "pergroup_brotli"}, {"export.compressor": "lzma"}),
    "golf_jax.quant.compress": ({"export.compressor": "brotli"}, {"export.compressor": "pergroup_zpaq"}),
    "golf_jax.train.qat": ({"train.late_qat_threshold": 0.15}, {"train.late_qat_threshold": 0.0}),
    "golf_jax.quant.selfgen": ({"export.calib_source": "selfgen"}, {"export.calib_source": "val"}),
}


@pytest.mark.parametrize("gate", list(modules.GATES))
def test_a_gate_packs_its_modules_on_its_branch_only(gate):
    assert gate in BRANCHES, f"{gate} is gated: add the settings that take its branch and not to BRANCHES"
    files = [p.relative_to(REPO_ROOT).with_suffix("").parts for p in (REPO_ROOT / "golf_jax").rglob("*.py")]
    held = {".".join(p[:-1] if p[-1] == "__init__" else p) for p in files} & set(build.packed_modules(None))
    held = {m for m in held if build._under(m, (gate,))}
    assert held, f"{gate} holds no packed module"
    for settings, taken in zip(BRANCHES[gate], (True, False)):
        cfg = base_config()
        for key, value in settings.items():
            section, name = key.rsplit(".", 1)
            setattr(functools.reduce(getattr, section.split("."), cfg), name, value)
        assert modules.GATES[gate][0](cfg) is taken, settings
        packed = set(build.packed_modules(cfg))
        assert held <= packed if taken else not held & packed, (settings, held & packed)


def test_a_module_level_import_of_a_gated_or_unpacked_module_raises(tmp_path):
    """The rule is checked against the imports: hoisting a lazy import out of its branch fails the
    build instead of packing the module for every config. Within one gate it is allowed."""
    build.packed_modules(None)  # the repository keeps the rule (slot.stage imports slot.solver at module level)
    shutil.copytree(REPO_ROOT / "golf_jax", tmp_path / "golf_jax", ignore=shutil.ignore_patterns("__pycache__"))
    for importer, hoisted, error in [
            ("eval/stages.py", "from golf_jax.eval.slot import solver", "golf_jax.eval.stages imports golf_jax.eval"
             ".slot.solver at module level, but golf_jax.eval.slot is packed only for eval.stages with slot"),
            ("quant/lqer.py", "from golf_jax.quant import selfgen", "packed only for export.calib_source=selfgen"),
            ("train/loop.py", "import golf_jax.train.qat", "packed only for train.late_qat_threshold > 0"),
            ("model/gpt.py", "from golf_jax.audit import procedure", "but golf_jax.audit is not packed")]:
        path = tmp_path / "golf_jax" / importer
        source = path.read_text()
        path.write_text(source.replace(FUTURE, FUTURE + hoisted + "\n", 1))
        with pytest.raises(ValueError, match=re.escape(error)):
            build.packed_modules(None, root=tmp_path)
        path.write_text(source)
    assert build.packed_modules(None, root=tmp_path) == build.packed_modules(None)


def _function(source: str, name: str) -> ast.FunctionDef:
    return next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == name)


def _empty(fn: ast.FunctionDef) -> bool:
    """A body that does nothing (the minifier writes `pass` as `0`), and no decorator left."""
    body = fn.body[0]
    return len(fn.body) == 1 and not fn.decorator_list and (
        isinstance(body, ast.Pass) or isinstance(body, ast.Expr) and isinstance(body.value, ast.Constant))


def test_marked_bodies_are_emptied_and_only_those(tmp_path):
    """Every function marked @repo_only is empty in the script, the marker and its import gone; every
    other function keeps its body (those the script never calls may be left out whole). And what the
    packer leaves out breaks no module: each one of the fullest script imports from the packed tree."""
    marked, kept = [], 0
    files = build.packed_files(None)
    for path, packed in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(packed)
        names = {n.name for n in ast.parse(packed).body if isinstance(n, ast.FunctionDef)}
        for fn in ast.parse((REPO_ROOT / path).read_text()).body:
            if not isinstance(fn, ast.FunctionDef):
                continue
            if any(ast.unparse(d).endswith("repo_only") for d in fn.decorator_list):
                marked.append(fn.name)
                assert _empty(_function(packed, fn.name)), (path, fn.name)
            elif fn.name in names and not all(isinstance(b, ast.Pass) or isinstance(b, ast.Expr) and isinstance(
                    b.value, ast.Constant) for b in fn.body):  # not a body that does nothing anyway
                kept += 1
                assert not _empty(_function(packed, fn.name)), (path, fn.name)
        assert "repo_only" not in packed, path
    assert len(marked) >= 11 and kept > 100, (marked, kept)
    names = [".".join(Path(p).with_suffix("").parts).removesuffix(".__init__") for p in files]
    code = ("import importlib, golf_jax; assert golf_jax.__file__.startswith(%r), golf_jax.__file__\n"
            "for m in %r: importlib.import_module(m)" % (str(tmp_path), names))
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_what_no_packed_source_uses_is_left_out():
    """Conservative: a name that any packed source (strings included) or the bootstrap still names stays."""
    files = {
        "golf_jax/a.py": "import os,re\nfrom typing import Any,Callable\nMODES='x','y'\nUSED=1\nLIMIT=2**20\n"
                         "def f():return USED\ndef g():0\ndef helper():return TABLE\nTABLE={'k':(1,2)}\n"
                         "class K:0\nclass Unused:0\nx=os.sep",
        "golf_jax/b.py": "from golf_jax import a\nfrom golf_jax.a import Callable\nprint(a.f(),'g',a.K,Callable)",
    }
    assert build._unused(files) == {  # helper goes, then TABLE; LIMIT is no literal; g is named in a string
        "golf_jax/a.py": "import os\nfrom typing import Callable\nUSED=1\nLIMIT=2**20\ndef f():return USED\n"
                         "def g():0\nclass K:0\nx=os.sep",
        "golf_jax/b.py": files["golf_jax/b.py"]}


@pytest.mark.parametrize("edit, name, emptied", [
    ({"def check_config(": "def check_schedule("}, "check_schedule", True),  # renamed: still marked
    ({"@repo_only\n": ""}, "check_config", False),  # unmarked: packed whole, whatever its name
    ({"from golf_jax.submission.modules import repo_only": "from golf_jax.submission import modules as m",
      "@repo_only": "@m.repo_only"}, "check_config", True),
])
def test_the_marker_not_the_name_empties_a_body(edit, name, emptied):
    source = (REPO_ROOT / "golf_jax/optim/schedule.py").read_text()
    for old, new in edit.items():
        assert old in source
        source = source.replace(old, new)
    packed = build.minify(source)
    assert _empty(_function(packed, name)) is emptied
    assert ("LR_MODES" in ast.unparse(_function(packed, name))) is not emptied


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
