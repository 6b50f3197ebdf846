"""The bad-input matrix: every command-line entry point × every way an input goes wrong.

Each applicable cell must end with exit code 2 and one line on stderr (`error: ...`) that
names the file, key or flag and says how to fix it, before anything is compiled
(JAX_LOG_COMPILES=1 would print a line per compile), leaving nothing behind: the cell's
working folder is the same after it as before. A cell that cannot apply says why.

The cells run in tests/matrix_driver.py, one process that imports jax once and forks per
cell, so the whole matrix costs about one import per cell's own work. To add an entry point,
add a row to ENTRIES; to add a fault, a column to FAULTS and a cell (or NA) to each row. `run_key`
is a run's config.json holding a key the schema lacks (a hand edit, or a run of another version),
for every command that reads one.

Three columns check the command-line convention itself (golf_jax/core/cli.py) on every entry
point: `help` (`--help` exits 0 and lists the flags), `unknown_flag` (`--nope`: exit code 2,
one line naming it) and `debug` (a user error with `--debug`: its traceback, then the same line).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

import tiny_run
from golf_jax.data import synthetic
from golf_jax.core.paths import REPO_ROOT, cache_dir

FILE_FAULTS = ("missing", "empty", "truncated", "bit_flipped", "wrong_kind", "dir_for_file")
FAULTS = FILE_FAULTS + ("file_for_dir", "unknown_key", "run_key", "out_of_range", "nan", "inf", "mismatch",
                        "out_readonly", "out_exists", "out_full", "help", "unknown_flag", "debug")


@dataclass
class Cell:
    argv: Callable[[], list[str]] | list[str]  # relative to the cell's folder
    names: str  # what the error line must name (a file, a key, a flag)
    setup: Callable[[Path], None] | None = None
    deny: tuple[str, str] | None = None  # (folder, "EROFS" | "ENOSPC"): a read-only or full output place
    drop: tuple[str, ...] = ()  # arguments of the entry's base invocation that this cell leaves out


@dataclass
class NA:
    why: str


@dataclass
class Entry:
    module: str  # python -m MODULE, or "run/submission.py" (the packed script)
    base: list[str]  # the arguments of a valid invocation
    file: str | None  # the input that the file faults damage
    needs: tuple[str, ...]  # what the cell's folder holds: "run", "corpus", "cfg.py", "report.json"
    cells: dict[str, Cell | NA] = field(default_factory=dict)
    debug: str = "missing"  # the fault whose cell `debug` reruns with --debug


def _edit_json(path: str, **changes) -> Callable[[Path], None]:
    def edit(ws: Path) -> None:
        cfg = json.loads((ws / path).read_text())
        for key, value in changes.items():
            node = cfg
            *groups, name = key.split("__")
            for g in groups:
                node = node[g]
            node[name] = value
        (ws / path).write_text(json.dumps(cfg))
    return edit


def _mkdir(*names: str) -> Callable[[Path], None]:
    return lambda ws: [(ws / n).mkdir(parents=True, exist_ok=True) for n in names] and None


TINY = [f"--config.{k}={v}" for k, v in tiny_run.TINY.items()]
DATA = ["--config.data.source=dir", "--config.data.dir=corpus", "--config.data.tokenizer=corpus/tokenizer.model"]
NO_FLOATS = NA("no setting of this command is a number the user types")
NO_OUTPUT = NA("writes nothing")
REWRITTEN = NA("its output is derived and rewritten on purpose (a report, a script, a verified download)")
NEW_DIR = NA("each run writes a new timestamped run directory")
NO_CONFIG = NA("takes no config: its flags are checked by unknown_flag")
RUN_KEY = _edit_json("run/config.json", train__nope=1)  # a run's config.json with a key the schema lacks
PACKED_CHECKS = NA("the packed script carries no config checks: the repository ran them before it wrote the script "
                   "(golf_jax/submission/build.py); the run's config.json is what `pack` and the job checked")

ENTRIES = {
    "train": Entry("golf_jax.train", ["--config=cfg.py", "--config.train.run_dir=runs", *TINY, *DATA],
                   "corpus/tokenizer.model", ("corpus", "cfg.py", "runs", "run"), {
        "file_for_dir": Cell(["--config.data.dir=corpus/tokenizer.model"], "tokenizer.model/fineweb_val_"),
        "unknown_key": Cell(["--config.train.nope=1"], "train.nope"),
        "run_key": Cell(["--config=run"], "train.nope", setup=RUN_KEY, drop=("--config=cfg.py",)),
        "out_of_range": Cell(["--config.train.seq_len=0"], "train.seq_len"),
        "nan": Cell(["--config.opt.matrix_lr=nan"], "opt.matrix_lr"),
        "inf": Cell(["--config.opt.scalar_lr=inf"], "opt.scalar_lr"),
        "mismatch": Cell(["--config.model.vocab_size=2048"], "model.vocab_size"),
        "out_readonly": Cell([], "train.run_dir=runs", deny=("runs", "EROFS")),
        "out_exists": NEW_DIR,
        "out_full": Cell([], "train.run_dir=runs", deny=("runs", "ENOSPC")),
    }),
    "evaluate": Entry("golf_jax.eval", ["--artifact=run/model.golfjax", "--config.train.run_dir=evals"],
                      "run/model.golfjax", ("run", "evals", "cfg.py"), {
        "file_for_dir": Cell(["--config.train.run_dir=run/model.golfjax"], "train.run_dir=run/model.golfjax"),
        "unknown_key": Cell(["--config.eval.nope=1"], "eval.nope"),
        "run_key": Cell([], "train.nope", setup=RUN_KEY),
        "out_of_range": Cell(["--config.eval.batch_tokens=0"], "eval.batch_tokens"),
        "nan": Cell(["--config.eval.ttt.lr=nan"], "eval.ttt.lr"),
        "inf": Cell(["--config.eval.budget_seconds=inf"], "eval.budget_seconds"),
        "mismatch": Cell(["--config=cfg.py"], "model.golfjax holds another model"),
        "out_readonly": Cell([], "train.run_dir=evals", deny=("evals", "EROFS")),
        "out_exists": NEW_DIR,
        "out_full": Cell([], "train.run_dir=evals", deny=("evals", "ENOSPC")),
    }),
    "audit": Entry("golf_jax.audit", ["--config=run", "--artifact=run/model.golfjax",
                                      "--config.audit.weights=artifact"], "run/model.golfjax", ("run", "cfg.py"), {
        "file_for_dir": Cell(["--json=run"], "--json=run is a folder"),
        "unknown_key": Cell(["--config.audit.nope=1"], "audit.nope"),
        "run_key": Cell([], "train.nope", setup=RUN_KEY),
        "out_of_range": Cell(["--config.audit.tokens=0"], "audit.tokens"),
        "nan": Cell(["--config.opt.matrix_lr=nan"], "opt.matrix_lr"),
        "inf": Cell(["--config.eval.sliding.stride=inf"], "eval.sliding.stride"),
        "mismatch": Cell(["--config=cfg.py"], "model.golfjax holds another model", drop=("--config=run",)),
        "out_readonly": Cell(["--json=ro/a.json"], "--json=ro/a.json", setup=_mkdir("ro"), deny=("ro", "EROFS")),
        "out_exists": REWRITTEN,
        "out_full": NA("the report is written after the audit ran (atomically: tests/test_entrypoints.py)"),
    }),
    "bench": Entry("golf_jax.bench", ["--config=cfg.py", "--stage=train", *TINY], "cfg.py", ("cfg.py", "run"), {
        "file_for_dir": NA("takes no input folder"),
        "unknown_key": Cell(["--config.model.nope=1"], "model.nope"),
        "run_key": Cell(["--config=run"], "train.nope", setup=RUN_KEY, drop=("--config=cfg.py",)),
        "out_of_range": Cell(["--config.eval.batch_tokens=0"], "eval.batch_tokens"),
        "nan": Cell(["--config.opt.matrix_lr=nan"], "opt.matrix_lr"),
        "inf": Cell(["--config.opt.head_lr=inf"], "opt.head_lr"),
        "mismatch": NA("times random weights on random tokens: no artifact or data to mismatch"),
        "out_readonly": Cell(["--json=ro/b.json"], "--json=ro/b.json", setup=_mkdir("ro"), deny=("ro", "EROFS")),
        "out_exists": REWRITTEN,
        "out_full": NA("the report is written after the timing"),
    }),
    "pack": Entry("golf_jax.submission", ["--artifact=run/model.golfjax", "--out=out/sub.py"], "run/config.json",
                  ("run", "out"), {
        "file_for_dir": NA("takes no input folder"),
        "unknown_key": NA("takes no config keys on its command line: it packs the run's config.json as the job wrote it"),
        "run_key": Cell([], "train.nope", setup=RUN_KEY),
        "out_of_range": Cell([], "train.seq_len", setup=_edit_json("run/config.json", train__seq_len=0)),
        "nan": Cell([], "opt.matrix_lr", setup=_edit_json("run/config.json", opt__matrix_lr=float("nan"))),
        "inf": Cell([], "opt.scalar_lr", setup=_edit_json("run/config.json", opt__scalar_lr=float("inf"))),
        "mismatch": NA("the script does not depend on the artifact (golf_jax/submission/__main__.py)"),
        "out_readonly": Cell([], "out/sub.py", deny=("out", "EROFS")),
        "out_exists": REWRITTEN,
        "out_full": Cell([], "out/sub.py", deny=("out", "ENOSPC")),
    }),
    "export": Entry("golf_jax.quant", ["run"], "run/params.msgpack", ("run",), {
        "bit_flipped": NA("params.msgpack has no recorded hash: a flipped bit in a weight is another weight"),
        "file_for_dir": Cell(["run/model.golfjax"], "model.golfjax/params.msgpack", drop=("run",)),
        "unknown_key": NA("takes the run's config, which the job checked"),
        "run_key": Cell([], "train.nope", setup=RUN_KEY),
        "out_of_range": NA("takes the run's config, which the job checked"),
        "nan": NO_FLOATS, "inf": NO_FLOATS,
        "mismatch": Cell(["--eval"], "fineweb_val_", setup=_edit_json("run/data.json", data_dir="/nonexistent")),
        "out_readonly": Cell([], "submission.py", deny=("run", "EROFS")),
        "out_exists": NA("rewrites the run's artifact on purpose"),
        "out_full": Cell([], "submission.py", deny=("run", "ENOSPC")),
    }),
    "report": Entry("golf_jax.report", ["--out=rep", "run"], "run/summary.json", ("run",), {
        "missing": NA("the report skips what a run lacks (an evaluation run has no summary.json) and says so"),
        "dir_for_file": NA("the report skips what a run lacks and says so"),
        "file_for_dir": Cell(["run/model.golfjax"], "model.golfjax", drop=("run",)),
        "unknown_key": NO_CONFIG,
        "run_key": NA("reads what a run wrote for its plots and tables, and runs nothing from its config"),
        "out_of_range": NO_FLOATS, "nan": NO_FLOATS, "inf": NO_FLOATS,
        "mismatch": NA("reads one run"),
        "out_readonly": Cell([], "rep", deny=("rep", "EROFS")),
        "out_exists": REWRITTEN,
        "out_full": Cell([], "rep", setup=_mkdir("rep"), deny=("rep", "ENOSPC")),
    }, debug="file_for_dir"),
    "submit": Entry("golf_jax.records", ["--sota=1.0", "--out=rec", "run"], "run/summary.json", ("run",), {
        "file_for_dir": Cell(["run/model.golfjax"], "model.golfjax", drop=("run",)),
        "unknown_key": NO_CONFIG,
        "run_key": Cell([], "train.nope", setup=RUN_KEY),
        "out_of_range": Cell(["--sota=-1"], "--sota"),
        "nan": Cell(["--sota=nan"], "--sota"),
        "inf": Cell(["--sota", "inf"], "--sota"),  # `--name value` is read as `--name=value`
        "mismatch": Cell(["run2"], "config", setup=lambda ws: (shutil.copytree(ws / "run", ws / "run2"),
                                                                _edit_json("run2/config.json", name="other", seed=7)(ws))),
        "out_readonly": Cell([], "rec", deny=(".", "EROFS")),
        "out_exists": Cell([], "rec", setup=lambda ws: (ws / "rec").mkdir() or (ws / "rec" / "x").write_text("")),
        "out_full": Cell([], "rec", deny=(".", "ENOSPC")),
    }),
    "data.prepare": Entry("golf_jax.data.prepare", ["--tokenizer=corpus/tokenizer.model", "--val=val.jsonl",
                                                    "--out=shards"], "val.jsonl", ("corpus", "val.jsonl"), {
        "file_for_dir": Cell(["--out=val.jsonl"], "val.jsonl"),
        "unknown_key": NO_CONFIG,
        "run_key": NO_CONFIG,
        "out_of_range": Cell(["--shard-tokens=0"], "--shard_tokens"),  # the hyphenated spelling is the same flag
        "nan": NO_FLOATS, "inf": NO_FLOATS,
        "mismatch": Cell(["--vocab_size=2048"], "tokenizer.model"),
        "out_readonly": Cell([], "shards", deny=("shards", "EROFS")),
        "out_exists": Cell([], "shards", setup=lambda ws: (ws / "shards").mkdir() or
                           (ws / "shards" / "fineweb_val_000000.bin").write_bytes(b"x")),
        "out_full": Cell([], "shards", deny=("shards", "ENOSPC")),
    }),
    "data.download": Entry("golf_jax.data.download", ["--variant=sp1024", "--out=data"], None, (), {
        "file_for_dir": Cell(["--out=afile"], "--out=afile", setup=lambda ws: (ws / "afile").write_text("")),
        "unknown_key": NO_CONFIG,
        "run_key": NO_CONFIG,
        "out_of_range": Cell(["--train_shards=-1"], "--train_shards"),
        "nan": NO_FLOATS, "inf": NO_FLOATS,
        "mismatch": NA("verifies every file against the hub's hashes (tests/test_download.py)"),
        "out_readonly": Cell([], "--out=data", deny=(".", "EROFS")),
        "out_exists": NA("a rerun verifies what is there and fetches only what is missing"),
        "out_full": NA("a full disk shows mid-transfer (huggingface_hub's writes); tests/test_download.py"),
    }, debug="out_of_range"),
    "estimate": Entry("golf_jax.quant.estimate", ["--config=cfg.py"], "cfg.py", ("cfg.py", "run"), {
        "file_for_dir": NA("takes no input folder"),
        "unknown_key": Cell(["--config.export.nope=1"], "export.nope"),
        "run_key": Cell(["--config=run"], "train.nope", setup=RUN_KEY, drop=("--config=cfg.py",)),
        "out_of_range": Cell(["--config.export.embed_bits=5"], "export.embed_bits"),
        "nan": Cell(["--config.export.sdclip_k_mlp=nan"], "export.sdclip_k_mlp"),
        "inf": Cell(["--config.export.sdclip_k_attn=inf"], "export.sdclip_k_attn"),
        "mismatch": NA("estimates random weights: no artifact or data to mismatch"),
        "out_readonly": NO_OUTPUT, "out_exists": NO_OUTPUT, "out_full": NO_OUTPUT,
    }),
    "audit.doc": Entry("golf_jax.audit.doc", ["report.json", "--out=out/compliance.md"], "report.json",
                       ("report.json", "out"), {
        "file_for_dir": NA("takes no input folder"),
        "unknown_key": NO_CONFIG,
        "run_key": NO_CONFIG,
        "out_of_range": NO_FLOATS, "nan": NO_FLOATS, "inf": NO_FLOATS,
        "mismatch": Cell([], "report.json", setup=lambda ws: (ws / "report.json").write_text('{"config": "x"}')),
        "out_readonly": Cell([], "--out=out/compliance.md", deny=("out", "EROFS")),
        "out_exists": REWRITTEN,
        "out_full": Cell([], "compliance.md", deny=("out", "ENOSPC")),
    }),
    "submission train": Entry("run/submission.py", ["train", "--config_json=run/config.json"], "run/config.json",
                              ("run", "runs"), {
        "file_for_dir": NA("takes no input folder"),
        "unknown_key": PACKED_CHECKS,
        "run_key": NA("the packed script carries no schema (golf_jax/config.py is not packed); `pack` and the "
                      "records command, which hand it its config.json, reject such a key"),
        "out_of_range": PACKED_CHECKS, "nan": PACKED_CHECKS, "inf": PACKED_CHECKS,
        "mismatch": NA("trains on the data its config names (checked by the repository's job)"),
        "out_readonly": Cell([], "train.run_dir", setup=_edit_json("run/config.json", train__run_dir="runs"),
                             deny=("runs", "EROFS")),
        "out_exists": NEW_DIR,
        "out_full": Cell([], "train.run_dir", setup=_edit_json("run/config.json", train__run_dir="runs"),
                         deny=("runs", "ENOSPC")),
    }),
    "submission eval": Entry("run/submission.py", ["eval", "--artifact=run/model.golfjax",
                                                   "--config_json=run/config.json"], "run/model.golfjax", ("run",), {
        "file_for_dir": Cell(["--data_dir=run/model.golfjax"], "model.golfjax/fineweb_val_"),
        "unknown_key": PACKED_CHECKS,
        "run_key": NA("the packed script carries no schema (golf_jax/config.py is not packed); `pack` and the "
                      "records command, which hand it its config.json, reject such a key"),
        "out_of_range": PACKED_CHECKS, "nan": PACKED_CHECKS, "inf": PACKED_CHECKS,
        "mismatch": Cell(["--config_json=run/other.json"], "model.golfjax holds another model",
                         setup=lambda ws: (shutil.copy(ws / "run/config.json", ws / "run/other.json"),
                                           _edit_json("run/other.json", model__model_dim=128)(ws))),
        "out_readonly": NO_OUTPUT, "out_exists": NO_OUTPUT, "out_full": NO_OUTPUT,
    }),
}


def _damage(path: Path, fault: str) -> None:
    blob = path.read_bytes()
    path.unlink()
    if fault == "empty":
        path.write_bytes(b"")
    elif fault == "truncated":
        path.write_bytes(blob[: len(blob) // 2])
    elif fault == "bit_flipped":
        path.write_bytes(blob[: len(blob) // 2] + bytes([blob[len(blob) // 2] ^ 0xFF]) + blob[len(blob) // 2 + 1:])
    elif fault == "wrong_kind":
        path.write_bytes(b"\x00\x01 this is not the file you are looking for\n" * 3)
    elif fault == "dir_for_file":
        path.mkdir()


def cell_of(entry: Entry, fault: str) -> Cell | NA:
    if fault == "help":
        return Cell(["--help"], "--help", drop=tuple(entry.base[1:] if entry.module.endswith(".py") else entry.base))
    if fault == "unknown_flag":
        return Cell(["--nope"], "--nope")
    if fault == "debug":  # the entry's user error again, with --debug
        cell = cell_of(entry, entry.debug)
        return Cell([*cell.argv, "--debug"], cell.names, cell.setup, cell.deny, cell.drop)
    if fault in FILE_FAULTS and fault not in entry.cells:
        if entry.file is None:
            return NA("reads no input file")
        return Cell([], Path(entry.file).name, setup=lambda ws: _damage(ws / entry.file, fault))
    return entry.cells[fault]


CELLS = [(e, f) for e in ENTRIES for f in FAULTS]
DRIVERS = 2  # driver processes, run side by side


def _tree(ws: Path) -> dict[str, tuple]:
    return {str(p.relative_to(ws)): (True,) if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(ws.rglob("*"))}


def _prepare(ws: Path, entry: Entry, run: Path, corpus: Path) -> None:
    ws.mkdir(parents=True)
    if "run" in entry.needs:
        shutil.copytree(run, ws / "run")
        if entry.module.endswith("submission.py"):
            _edit_json("run/config.json", data__source="dir", data__dir=str(corpus),
                       data__tokenizer=str(corpus / "tokenizer.model"))(ws)
    if "corpus" in entry.needs:
        (ws / "corpus").mkdir()
        for f in corpus.iterdir():
            if f.name.startswith("fineweb_train_"):
                (ws / "corpus" / f.name).symlink_to(f)
            else:
                shutil.copy(f, ws / "corpus" / f.name)
    if "cfg.py" in entry.needs:
        shutil.copy(REPO_ROOT / "configs" / "smoke.py", ws / "cfg.py")
    if "report.json" in entry.needs:  # what `python -m golf_jax.audit --json=...` writes, cut to what the doc reads
        checks = [{"name": "flip test", "status": "PASS", "evidence": "ok", "details": {}}]
        (ws / "report.json").write_text(json.dumps({
            "config": "smoke", "argv": ["--config=configs/smoke.py"], "verdict": "PASS", "checks": checks,
            "procedure": ["sliding"], "model": "random", "runs": 1, "seconds": 1.0,
            "slice": {"targets": 10, "source": "x", "documents": 1}}))
    if "val.jsonl" in entry.needs:
        (ws / "val.jsonl").write_text("".join(json.dumps({"text": f"document {i} about golf"}) + "\n"
                                              for i in range(20)))
    for name in ("runs", "evals", "out"):
        if name in entry.needs:
            (ws / name).mkdir()


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> dict:
    """{(entry, fault): (result, tree before, tree after)} of every applicable cell, run in one driver."""
    root = tmp_path_factory.mktemp("matrix")
    run = tiny_run.make_run(root / "source")
    corpus = synthetic.ensure_default_corpus().data_dir
    cells, trees = [], {}
    for name, fault in CELLS:
        entry = ENTRIES[name]
        cell = cell_of(entry, fault)
        if isinstance(cell, NA):
            continue
        cid = f"{name.replace(' ', '_')}-{fault}"
        ws = root / "cells" / cid
        _prepare(ws, entry, run, corpus)
        if cell.setup:
            cell.setup(ws)
        trees[cid] = _tree(ws)
        config = [a for a in cell.argv if a.startswith("--config=")]  # before the overrides of its keys
        argv = config + [a for a in entry.base if a not in cell.drop] + [a for a in cell.argv if a not in config]
        spec = {"id": cid, "argv": argv, "cwd": str(ws)}
        spec["script" if entry.module.endswith(".py") else "module"] = (
            str(ws / entry.module) if entry.module.endswith(".py") else entry.module)
        if cell.deny:
            spec["deny"] = {"under": str(ws / cell.deny[0]), "errno": cell.deny[1]}
        cells.append(spec)
    env = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, "JAX_LOG_COMPILES": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")]),
           "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1", "GOLF_JAX_CACHE": str(cache_dir())}
    procs = []
    for i in range(DRIVERS):  # CI's cores each take a share of the cells
        (root / f"cells{i}.json").write_text(json.dumps(cells[i::DRIVERS]))
        argv = [sys.executable, str(REPO_ROOT / "tests" / "matrix_driver.py"), str(root / f"cells{i}.json"),
                str(root / f"results{i}.json")]
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = {}
    for i, proc in enumerate(procs):
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        results.update(json.loads((root / f"results{i}.json").read_text()))
    slow = sorted(results.items(), key=lambda kv: -kv[1]["seconds"])[:8]
    print("slowest cells:", ", ".join(f"{cid} {r['seconds']:.1f} s" for cid, r in slow))
    return {cid: (results[cid], trees[cid], _tree(root / "cells" / cid)) for cid in results}


# jax's and absl's start-up and log lines (with JAX_LOG_COMPILES=1 a trace is logged too: tracing is not
# compiling), and the packed script's start-up line naming where its golf_jax was unpacked.
NOISE = re.compile(r"^(WARNING:|INFO:|[IW]\d{4} |Platform '|An NVIDIA GPU|Finished tracing |golf_jax from /)")


def error_lines(stderr: str) -> list[str]:
    """stderr less jax's and absl's start-up lines."""
    return [line for line in stderr.splitlines() if line.strip() and not NOISE.match(line)]


@pytest.mark.parametrize("name, fault", CELLS, ids=[f"{e}-{f}".replace(" ", "_") for e, f in CELLS])
def test_bad_input(matrix, name, fault):
    cell = cell_of(ENTRIES[name], fault)
    if isinstance(cell, NA):
        pytest.skip(f"not applicable: {cell.why}")
    result, before, after = matrix[f"{name.replace(' ', '_')}-{fault}"]
    lines = error_lines(result["stderr"])
    assert after == before, sorted(set(after) ^ set(before))  # nothing left behind, nothing changed
    if fault == "help":  # the usage and the flags of a valid invocation, on stdout
        assert result["rc"] == 0 and not lines, result["stderr"][-3000:]
        named = [a.split("=")[0] for a in ENTRIES[name].base if a.startswith("--") and not a.startswith("--config.")]
        assert all(flag in result["stdout"] for flag in named), result["stdout"][-3000:]
        assert "debug" in result["stdout"] or ENTRIES[name].module.endswith(".py"), result["stdout"][-3000:]
        return
    assert result["rc"] == 2, result["stderr"][-3000:]
    assert "Compiling" not in result["stderr"]
    if fault == "debug":  # the traceback of the user error, then its line
        assert "Traceback (most recent call last)" in result["stderr"], result["stderr"][-3000:]
        lines = lines[-1:]
    assert len(lines) == 1, result["stderr"][-3000:]
    (line,) = lines
    assert line.startswith("error: ") and cell.names in line, line
