"""Builds the submission script (`python -m golf_jax.submission`; golf_jax/submission/codebytes.py counts it).
Never packed itself (modules.NOT_PACKED): a packed run counts its own script.

Every code byte is a weight byte lost (artifact = weights + code ≤ 16,000,000), so:

* the script holds only the modules golf_jax/submission/modules.py lists for the config (its
  docstring states the rules: the import closure of golf_jax/submission/script.py, less NOT_PACKED
  and the GATES branches the config does not take). `closure` reads them from the sources and
  raises where a module-level import breaks a rule, rather than pack a module for every config;
* each module then goes through these transforms, each of which leaves the script running the same
  (bytes saved on configs/frontier.py, 2026-12-07, in docs/perf.md, Code bytes):
  - the bodies of the functions marked `@modules.repo_only` are emptied, and the marker and its
    import go (`_emptied`): a config's own checks, run in the repository before it wrote the run's
    config.json and script. What depends on the machine or the data (devices, batch geometry,
    shards, tokenizer, the packed modules: modules.check_packed) is checked elsewhere and stays;
  - docstrings and comments go (`ast.unparse`), field annotations become `int`, and
    python-minifier shortens local names and drops the other annotations (`minify`);
  - what no packed source uses goes (`_unused`, repeated until nothing more goes): a module-level
    `NAME = literal` (tuples, dicts… of constants; -99 B), an undecorated def or class (-344 B),
    whose name is no word anywhere else in the packed sources and the bootstrap, strings included;
    and a name a module-level import binds that its module no longer reads, that no other module
    imports from it or reads as an attribute (-95 B). Whatever only an emptied body used goes with
    it: an allowed-values tuple beside its check costs no byte;
* the sources, joined with \\x1e / \\x1f separators in path order (the best of the orders tried),
  are compressed (lzma or bz2, or ZPAQ where the config's export needs `zpaq` anyway:
  modules.script_codecs; whichever is smallest) and kept as raw bytes in a str literal of a
  latin-1 source file (only backslash, CR, NUL and some quotes escaped: ~1.2 % overhead, where
  base85 adds 25 %).

The bootstrap unpacks them into a temp dir, puts it first on sys.path (ahead of any
installed golf_jax), sets codebytes.SCRIPT and calls `golf_jax.submission.script.main`.
"""

from __future__ import annotations

import ast
import bz2
import collections
import functools
import lzma
import re
from pathlib import Path

from golf_jax.submission.modules import ENTRY, GATES, NOT_PACKED, gates_on, module_file, script_codecs
from golf_jax.core.paths import REPO_ROOT

MARKER = ("golf_jax.submission.modules", "repo_only")  # marks a function the script holds empty
FUTURE = "from __future__ import annotations\n"  # a line in every module, unneeded once minified
MINIFIER = "python-minifier"  # pinned in pyproject.toml: its output is the counted code

_BOOTSTRAP = (
    "#coding:latin-1 golf_jax submission: python submission.py {{train,eval}} --help\n"
    "import {codec} as Z,os,sys,atexit,shutil,tempfile\n"
    'D="""{data}"""\n'
    'if __name__=="__main__":\n'
    ' d=tempfile.mkdtemp(prefix="golf_jax_sub_");atexit.register(shutil.rmtree,d,1)\n'
    ' for r in Z.decompress(D.encode("latin-1")).split(b"\\x1e")[1:]:\n'
    '  p,s=r.split(b"\\x1f",1);f=os.path.join(d,p.decode());os.makedirs(os.path.dirname(f),exist_ok=1)\n'
    '  with open(f,"wb") as h:h.write(s)\n'
    " sys.path.insert(0,d);from golf_jax.submission import codebytes as c;c.SCRIPT=os.path.abspath(__file__)\n"
    " from golf_jax.submission.script import main;sys.exit(main(sys.argv[1:]))\n"
)


def _under(name: str, prefixes) -> str | None:
    """The prefix (a module or package) that `name` is, or is inside."""
    return next((p for p in prefixes if name == p or name.startswith(p + ".")), None)


@functools.lru_cache(maxsize=1024)
def _imports(root: Path, name: str, source: str) -> list[tuple[str, bool, tuple[str, ...]]]:
    """(golf_jax module, imported at module level?, the modules its import statement names) for
    each import that the script's copy of `source` holds (modules.repo_only bodies emptied), the
    packages above them included: a statement that runs only on a branch packs none of them."""
    tree = _emptied(source)
    package = name if module_file(root, name).name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, bool, tuple[str, ...]]] = []

    def add(named: list[str], top: bool) -> None:
        for mod in named:
            parts = mod.split(".")
            if parts[0] == "golf_jax":
                found.extend((".".join(parts[:i]), top, tuple(named)) for i in range(1, len(parts) + 1))

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, ast.Import):
            add([a.name for a in node.names], top)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            rules = {*GATES, *NOT_PACKED}  # a module they name is one even where a packed tree lacks it
            in_rules = base in rules and not root.joinpath(*base.split(".")).with_suffix(".py").is_file()
            subs = [f"{base}.{a.name}" for a in node.names]
            add([m for m in subs if module_file(root, m) or m in rules or in_rules] or [base], top)
        for child in ast.iter_child_nodes(node):
            visit(child, top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, True)
    return found


def packed_modules(cfg=None, root: Path = REPO_ROOT) -> list[str]:
    """The import closure of ENTRY under `root` for `cfg` (None: every gated branch taken), sorted."""
    return closure(gates_on(cfg), root)


def closure(branches: tuple[bool, ...], root: Path) -> list[str]:
    """packed_modules for the gated branches taken (modules.gates_on). Raises where a packed module
    imports a never-packed module, or a gated one of another gate, at module level."""
    on = dict(zip(GATES, branches))
    todo = [(e, True, "the submission", (e,)) for e in ENTRY]
    seen: set[str] = set()
    while todo:
        name, top, by, named = todo.pop()
        never, gate = _under(name, NOT_PACKED), _under(name, GATES)
        if never and top:
            raise ValueError(f"{by} imports {name} at module level, but {never} is not packed "
                             "(golf_jax/submission/modules.py NOT_PACKED): import it inside the function that uses it")
        if gate and top and _setting(by) != GATES[gate][1]:
            raise ValueError(f"{by} imports {name} at module level, but {gate} is packed only for "
                             f"{GATES[gate][1]} (golf_jax/submission/modules.py GATES): import it inside the "
                             "function that runs on that branch")
        if name in seen or (not top and all(_under(m, NOT_PACKED) or (g := _under(m, GATES)) and not on[g]
                                            for m in named)):
            continue  # done, or a lazy import on a branch this config does not take
        path = module_file(root, name)
        if path is None and not root.joinpath(*name.split(".")).is_dir():
            raise ValueError(f"{by} imports {name}, which has no file under {root / 'golf_jax'}")
        seen.add(name)
        if path is None:
            continue  # a packed tree's namespace package: files_for left out its empty __init__.py
        todo += [(m, t, name, n) for m, t, n in _imports(root, name, path.read_text(encoding="utf-8"))]
    return sorted(seen)


def _setting(name: str) -> str | None:
    """The setting of the gate that `name` is in (None: not gated)."""
    gate = _under(name, GATES)
    return GATES[gate][1] if gate else None


def _emptied(source: str) -> ast.Module:
    """The module's tree with the body of every function marked `@repo_only` emptied, and the
    marker gone, its import too where nothing else uses it: what the script holds."""
    tree = ast.parse(source)
    module, marker = MARKER
    names: set[str] = set()  # how this module spells the marker: repo_only, or modules.repo_only
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == module and not node.level:
            names |= {a.asname or a.name for a in node.names if a.name == marker}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names |= {f"{a.asname or a.name}.{marker}" for a in node.names if f"{node.module}.{a.name}" == module}
    if not names:
        return tree
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            kept = [d for d in node.decorator_list if ast.unparse(d) not in names]
            if len(kept) < len(node.decorator_list):
                node.decorator_list, node.body = kept, [ast.Pass()]  # checked before packing (module docstring)
    used = {ast.unparse(n) for n in ast.walk(tree) if isinstance(n, (ast.Name, ast.Attribute))}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == module and not node.level:
            node.names = [a for a in node.names if a.name != marker or (a.asname or a.name) in used]
    tree.body = [n for n in tree.body if not isinstance(n, ast.ImportFrom) or n.names]
    return tree


def _defines(node: ast.stmt) -> str | None:
    """The name a module-level statement defines, if the script may leave it out once nothing
    names it: `NAME = literal` (tuples, dicts… of constants), or an undecorated def or class."""
    if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        try:
            ast.literal_eval(node.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
        return targets[0].id if len(targets) == 1 and isinstance(targets[0], ast.Name) else None
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.decorator_list and \
            not getattr(node, "keywords", None):
        return node.name
    return None


def _bound(alias: ast.alias, node: ast.stmt) -> str | None:
    """The name a module-level import binds, where the script may leave it out (not `import a.b`)."""
    return alias.asname or (alias.name if isinstance(node, ast.ImportFrom) or "." not in alias.name else None)


WORD = re.compile(r"[A-Za-z_]\w*")


@functools.lru_cache(maxsize=1024)
def _facts(path: str, source: str) -> tuple:
    """What `_unused` reads of one minified module: its name, tree, words, the attribute names it
    reads, the (module, name) pairs it imports, and its words outside module-level imports. The
    minifier puts each module-level statement on lines of its own."""
    tree = ast.parse(source)
    imports = {i for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
               for i in range(n.lineno - 1, n.end_lineno)}
    rest = "\n".join(line for i, line in enumerate(source.split("\n")) if i not in imports)
    return (".".join(Path(path).with_suffix("").parts).removesuffix(".__init__"), tree,
            collections.Counter(WORD.findall(source)), {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)},
            {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names},
            set(WORD.findall(rest)))


def _unused(files: dict[str, str]) -> dict[str, str]:
    """`files` less what no packed source uses (strings and the bootstrap count: conservative),
    until nothing more goes: each module-level definition (`_defines`) whose name is no word
    anywhere else, and each name a module-level import binds that is no word of its module outside
    those imports, nor imported from it or read as an attribute (`x.name`) by any other."""
    bootstrap = ("bootstrap", _BOOTSTRAP.format(codec="lzma", data=""))
    while True:
        facts = {path: _facts(path, source) for path, source in [*files.items(), bootstrap]}
        words = sum((f[2] for f in facts.values()), collections.Counter())
        attributes = set().union(*(f[3] for f in facts.values()))
        imported = set().union(*(f[4] for f in facts.values()))
        cut = {}
        for path in files:
            module, tree, _, _, _, used = facts[path]
            lines, changed = files[path].split("\n"), False
            for node in reversed(tree.body):
                if (name := _defines(node)) and words[name] == 1 and not name.startswith("__"):
                    lines[node.lineno - 1:node.end_lineno], changed = [], True
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    kept = [a for a in node.names if not ((name := _bound(a, node)) and name not in used and name
                            not in attributes and (module, name) not in imported and not name.startswith("__"))]
                    if len(kept) < len(node.names):
                        names = ",".join(a.name + (f" as {a.asname}" if a.asname else "") for a in kept)
                        line = f"import {names}" if isinstance(node, ast.Import) else \
                            f"from {'.' * node.level}{node.module or ''} import {names}"
                        lines[node.lineno - 1:node.end_lineno], changed = [line] if kept else [], True
            if changed:
                cut[path] = "\n".join(lines)
        if not cut:
            return files
        files = {**files, **cut}


@functools.lru_cache(maxsize=512)
def minify(source: str) -> str:
    """The source without docstrings and comments, minified (runs the same; the module
    docstring stays where the module reads __doc__). Cached: python-minifier takes ~2 s a package."""
    try:
        import python_minifier
    except ImportError as e:
        raise ImportError(f"{MINIFIER} is not installed (pip install -e .): the counted code is its output") from e
    tree = _emptied(source)
    uses_doc = any(isinstance(n, ast.Name) and n.id == "__doc__" for n in ast.walk(tree))
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) or (
                isinstance(node, ast.Module) and not uses_doc):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    for node in ast.walk(tree):  # field annotations only name the fields: one short, evaluable type
        if isinstance(node, ast.ClassDef):
            for field in node.body:
                if isinstance(field, ast.AnnAssign):
                    field.annotation = ast.Name("int")
    source = python_minifier.minify(ast.unparse(tree), remove_literal_statements=False, hoist_literals=False)
    return source.replace(FUTURE, "", 1)  # nothing is left to defer: the minifier removed the other annotations


def packed_files(cfg=None, root: Path = REPO_ROOT) -> dict[str, str]:
    """{path relative to `root`: minified source} of the packed modules."""
    return files_for(gates_on(cfg), root)


def files_for(branches: tuple[bool, ...], root: Path) -> dict[str, str]:
    """packed_files for the gated branches taken."""
    paths = [module_file(root, name) for name in closure(branches, root)]
    files = _unused({path.relative_to(root).as_posix(): minify(path.read_text(encoding="utf-8")) for path in paths})
    return {path: source for path, source in files.items()  # an empty subpackage unpacks as a namespace package
            if source.strip() or not path.endswith("/__init__.py") or path == "golf_jax/__init__.py"}


def _literal(data: bytes) -> str:
    """The body of a triple-quoted str literal in a latin-1 source whose .encode('latin-1') is `data`."""
    out = []
    for i, b in enumerate(data):
        nxt = data[i + 1] if i + 1 < len(data) else None
        if b == 0x5C:
            out.append("\\\\")
        elif b == 0x0D:
            out.append("\\r")  # a raw CR would be read as a newline
        elif b == 0:
            out.append("\\x00" if nxt is not None and 0x30 <= nxt <= 0x37 else "\\0")  # no NUL in a source file
        elif b == 0x22 and (nxt is None or nxt == 0x22):
            out.append('\\"')  # never two bare quotes in a row, nor one before the closing quotes
        else:
            out.append(chr(b))
    return "".join(out)


def build_script(cfg=None, root: Path = REPO_ROOT) -> bytes:
    """The submission script for `cfg` (None: every gated module), deterministic for fixed sources."""
    return script_for(gates_on(cfg), root, script_codecs(cfg))


def _compressors() -> dict:
    """codec -> compress(bytes); each output is what `import <codec>; <codec>.decompress` reads back."""
    def zpaq_compress(data: bytes) -> bytes:
        import zpaq  # one thread: deterministic output, and the best ratio

        return zpaq.compress(data, level=5, threads=1)

    return {
        "lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE, filters=[
            {"id": lzma.FILTER_LZMA1, "preset": 9 | lzma.PRESET_EXTREME, "pb": 0}]),
        "bz2": lambda d: bz2.compress(d, 9),
        "zpaq": zpaq_compress,
    }


def script_for(branches: tuple[bool, ...], root: Path, codecs: tuple[str, ...] = ("lzma", "bz2")) -> bytes:
    """build_script for the gated branches taken, compressed with the smallest of `codecs`."""
    files = files_for(branches, root)
    bad = [p for p, s in files.items() if "\x1e" in s or "\x1f" in s]
    if bad:
        raise ValueError(f"{bad[0]} contains \\x1e or \\x1f, the packer's separators; write them as escapes")
    payload = "".join(f"\x1e{p}\x1f{s}" for p, s in files.items()).encode("utf-8")
    compressors = _compressors()
    packed = {codec: compressors[codec](payload) for codec in codecs}
    codec = min(packed, key=lambda k: (len(packed[k]), k))
    return _BOOTSTRAP.format(codec=codec, data=_literal(packed[codec])).encode("latin-1")
