"""The knowledge the code cites lives in the repository: every `docs/reference-notes.md#<anchor>`
named in the code, configs, tests and docs is an entry there, and no section-sign citation
points at a spec outside the repository."""

import re

from golf_jax.core.paths import REPO_ROOT

NOTES = REPO_ROOT / "docs" / "reference-notes.md"
SECTION = "\N{SECTION SIGN}"
TREES = ("golf_jax", "configs", "tests", "docs")


def _files():
    for tree in TREES:
        for path in sorted((REPO_ROOT / tree).rglob("*")):
            if path.suffix in (".py", ".md") and path.is_file():
                yield path
    yield REPO_ROOT / "README.md"


def _cited() -> dict[str, list[str]]:
    """anchor -> where it is cited; `#a, #b` after a notes link names more anchors of it."""
    cited: dict[str, list[str]] = {}
    for path in _files():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in re.finditer(r"reference-notes\.md#([\w-]+)((?:,? #[\w-]+)*)", line):
                for anchor in [m[1], *re.findall(r"#([\w-]+)", m[2])]:
                    cited.setdefault(anchor, []).append(f"{path.relative_to(REPO_ROOT)}:{n}")
            for anchor in re.findall(r"\]\(#([\w-]+)\)", line) if path == NOTES else []:
                cited.setdefault(anchor, []).append(f"docs/reference-notes.md:{n}")
    return cited


def test_every_cited_anchor_is_an_entry():
    entries = set(re.findall(r"^## ([\w-]+)$", NOTES.read_text(encoding="utf-8"), re.M))
    cited = _cited()
    assert len(cited) >= 40, sorted(cited)
    missing = {a: where for a, where in cited.items() if a not in entries}
    assert not missing, missing


def test_no_section_citation_points_outside_the_repository():
    found = [f"{p.relative_to(REPO_ROOT)}:{n}: {line.strip()}" for p in _files() if p != NOTES
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if SECTION in line]
    assert not found, "cite docs/reference-notes.md#<anchor> instead:\n" + "\n".join(found)
