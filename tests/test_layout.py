"""The package's shape (docs/architecture.md): `ls golf_jax` reads as the pipeline, every
package says what it holds, every command is a listed `__main__`, and no function is wide."""

from __future__ import annotations

import ast

import pytest

from golf_jax.core.paths import REPO_ROOT
from test_imports import ENTRY_MODULES

PKG = REPO_ROOT / "golf_jax"
LOOSE = {"__init__.py", "config.py", "pipeline.py"}  # the package, the schema, the pipeline: nothing else
MAX_PARAMETERS = 8  # group the rest into a named object
WIDER = {  # function -> why it keeps its width
    "golf_jax/eval/slot/solver.py:_strong_wolfe": "torch's own signature, ported line for line (#1318's SLOT)",
    "golf_jax/optim/build.py:build_adaptation_optimizer": "hyperparameters as keywords, as optax's constructors",
    "golf_jax/optim/muon.py:scale_by_muon": "hyperparameters as keywords, as optax's constructors",
}


def _sources():
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_package_root_holds_only_the_pipeline_the_schema_and_packages():
    loose = {p.name for p in PKG.glob("*.py")}
    assert loose == LOOSE, f"{sorted(loose - LOOSE)}: put each in the package of its stage (docs/architecture.md)"
    packages = {p.name for p in PKG.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert packages == {"core", "data", "model", "optim", "train", "quant", "eval", "audit", "report",
                        "submission", "bench", "records"}


@pytest.mark.parametrize("package", sorted({p.parent.relative_to(REPO_ROOT).as_posix() for p in _sources()}))
def test_every_package_says_what_it_holds(package):
    init = REPO_ROOT / package / "__init__.py"
    assert init.is_file(), f"{package} has no __init__.py"
    if package.count("/") > 1 or package in ("golf_jax/core", "golf_jax/submission"):  # the new ones, at least
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init}: say what the package holds"


def test_every_command_is_a_listed_main():
    mains = {".".join(p.relative_to(REPO_ROOT).with_suffix("").parts) for p in PKG.rglob("__main__.py")}
    assert mains == ENTRY_MODULES


def test_no_function_is_wide():
    wide = []
    for path in _sources():
        rel = path.relative_to(REPO_ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs] + [x.arg for x in (a.vararg, a.kwarg) if x]
                count = len(names) - (names[:1] in (["self"], ["cls"]))
                if count > MAX_PARAMETERS and f"{rel}:{node.name}" not in WIDER:
                    wide.append(f"{rel}:{node.lineno} {node.name} ({count} parameters)")
    assert wide == [], f"group parameters into a named object: {wide}"
    for key in WIDER:  # each exception still exists
        rel, name = key.split(":")
        assert f"def {name}(" in (REPO_ROOT / rel).read_text(), key
