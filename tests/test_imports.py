"""The import graph follows the pipeline: no circles, and no import from a stage back up to a later one.

Layers, bottom to top (docs/architecture.md draws them): the foundations (core/, config.py,
and the submission's low part: the code-bytes counter, the packed module set and the script
builder, which the export stage needs) → data → model → optim → train → quant → eval →
audit → report → pipeline → the packed entry (submission/script.py) → bench → records.
Function-level imports count too. Only the command-line entry modules in ENTRY_MODULES
(`python -m golf_jax.<stage>`) may import upward: each runs its stage through the pipeline.
"""

from __future__ import annotations

import ast

from golf_jax.core.paths import REPO_ROOT

PKG = REPO_ROOT / "golf_jax"
LAYERS = [
    {"golf_jax", "golf_jax.core.*", "golf_jax.config", "golf_jax.submission", "golf_jax.submission.codebytes",
     "golf_jax.submission.modules", "golf_jax.submission.build"},
    "data", "model", "optim", "train", "quant", "eval", "audit", "report",
    {"golf_jax.pipeline"},
    {"golf_jax.submission.script"},
    "bench",  # golf_jax/bench/: times the pipeline's compiled functions stage by stage
    "records",  # record folders from finished runs: reads what the pipeline and the audit wrote
]
ENTRY_MODULES = {f"golf_jax.{stage}.__main__" for stage in
                 ("train", "eval", "quant", "audit", "report", "bench", "submission", "records")}


def _modules() -> dict[str, ast.Module]:
    mods = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(REPO_ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        mods[name] = ast.parse(path.read_text())
    return mods


def _graph(mods) -> dict[str, set[str]]:
    graph = {}
    for name, tree in mods.items():
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("golf_jax")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("golf_jax"):
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    deps.add(sub if sub in mods else node.module)
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def _layer(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if isinstance(layer, set) and (name in layer or any(
                p.endswith(".*") and name.startswith(p[:-1]) for p in layer)):
            return i
        if isinstance(layer, str) and (name == f"golf_jax.{layer}" or name.startswith(f"golf_jax.{layer}.")):
            return i
    raise AssertionError(f"{name} is in no layer of tests/test_imports.py; add it where it belongs")


def test_no_import_cycles():
    graph = _graph(_modules())
    state: dict[str, int] = {}

    def visit(n, stack):
        state[n] = 1
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " → ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d, stack + [d])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])


def test_imports_go_down_the_pipeline():
    graph = _graph(_modules())
    upward = [f"{a} imports {b}" for a, deps in graph.items() if a not in ENTRY_MODULES
              for b in deps if _layer(b) > _layer(a)]
    assert upward == [], upward
    assert ENTRY_MODULES <= set(graph)  # each listed entry exists
    assert any("golf_jax.eval" in d for d in graph["golf_jax.pipeline"])  # the graph is really read
