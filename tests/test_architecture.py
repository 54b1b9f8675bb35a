"""The shape of the code holds: imports run downward (import-linter's contracts in
pyproject.toml), the library never imports the CLI, the CLI reaches the data only through
the Store, and the tree is lint-clean with line length and complexity rules on."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# What the CLI may import of the library: the Store and what it takes and gives back.
CLI_MAY_IMPORT = {
    "vecstore",
    "vecstore.store",
    "vecstore.params",
    "vecstore.results",
    "vecstore.errors",
    "vecstore.demo",
    "vecstore.web",  # the review service, a front end over the Store like the CLI
}
NEVER_IN_THE_CLI = ("sqlalchemy", "sqlite3", "faiss", "alembic")


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module a file imports, at the top or inside a function, relative imports
    resolved against ``package`` (the file's own package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join([*base, node.module] if node.module else base))
            else:
                found.add(node.module or "")
    return found


def package_of(path: Path) -> str:
    """The dotted package a file of vecstore/ or cli/ is installed in."""
    rel = path.relative_to(REPO).with_suffix("").parts[:-1]
    return ".".join(("vecstore", "cli", *rel[1:])) if rel[0] == "cli" else ".".join(rel)


def test_imports_follow_the_layers_and_the_contracts():
    r = subprocess.run([str(BIN / "lint-imports")], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def test_the_import_checker_reads_lazy_imports(tmp_path):
    """A helper check: imports inside functions count (the library imports heavy modules
    lazily, and a lazy import up the layers is still one)."""
    f = tmp_path / "m.py"
    f.write_text("import os\n\ndef f():\n    from ..store import Store\n    from . import knn\n")
    assert imported_modules(f, "vecstore.learn") == {"os", "vecstore.store", "vecstore.learn"}


@pytest.mark.parametrize("path", sorted((REPO / "vecstore").rglob("*.py")), ids=rel)
def test_the_library_never_imports_the_cli(path):
    mods = imported_modules(path, package_of(path))
    assert not {m for m in mods if m == "click" or m.startswith(("click.", "vecstore.cli"))}


@pytest.mark.parametrize("path", sorted((REPO / "cli").glob("*.py")), ids=rel)
def test_the_cli_reaches_the_data_only_through_the_store(path):
    mods = imported_modules(path, package_of(path))
    ours = {m for m in mods if m.split(".")[0] == "vecstore" and not m.startswith("vecstore.cli")}
    assert ours <= CLI_MAY_IMPORT, f"{path.name} imports {sorted(ours - CLI_MAY_IMPORT)}"
    assert not {m for m in mods if m.split(".")[0] in NEVER_IN_THE_CLI}


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]], ids=" ".join)
def test_ruff_is_clean(args):
    r = subprocess.run([str(BIN / "ruff"), *args], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
