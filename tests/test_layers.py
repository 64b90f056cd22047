"""The house's shape (issue 14): arrows point down, no hidden imports, no long module without a reason.

The layer order itself is import-linter's contract (`.importlinter`, run by `make test`); these checks
cover what it cannot see: an import of another first-party package inside a function hides an upward
arrow from readers, and a module past 400 lines must say at its top why it stays whole.
"""

import ast
import configparser
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = configparser.ConfigParser()
CONFIG.read(ROOT / ".importlinter")
PACKAGES = CONFIG["importlinter"]["root_packages"].split()
LONG = 400
REASON = "Long because"  # the words a long module's docstring uses to say why it stays whole


def modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if "tests" in relative.parts or "migrations" in relative.parts:
                continue
            yield relative, path.read_text()


def first_party(name: str) -> str | None:
    top = name.split(".")[0]
    return top if top in PACKAGES else None


def hidden_imports(source: str, own: str):
    """(line, module) of each import of another first-party package made inside a function or class."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for inner in ast.walk(node):
            names = []
            if isinstance(inner, ast.Import):
                names = [alias.name for alias in inner.names]
            elif isinstance(inner, ast.ImportFrom) and inner.level == 0 and inner.module:
                names = [inner.module]
            for name in names:
                if first_party(name) not in (None, own):
                    yield inner.lineno, name


def test_no_package_imports_another_inside_a_function():
    found = []
    for relative, source in modules():
        lines = source.splitlines()
        for line, name in hidden_imports(source, relative.parts[0]):
            said = lines[line - 2].strip() if line >= 2 else ""
            if not said.startswith("# layering:"):
                found.append(f"{relative}:{line} imports {name} inside a function")
    assert not found, "\n".join(found)


def test_a_hidden_import_is_found():
    source = "def f():\n    from gateway import proxy\n"
    assert list(hidden_imports(source, "approvals")) == [(2, "gateway")]
    assert list(hidden_imports(source, "gateway")) == []


def test_every_long_module_says_why_it_stays_whole():
    found = []
    for relative, source in modules():
        if source.count("\n") > LONG:
            docstring = ast.get_docstring(ast.parse(source)) or ""
            if REASON not in docstring:
                found.append(f"{relative}: {source.count(chr(10))} lines and no '{REASON} ...' in its docstring")
    assert not found, "\n".join(found)


def test_the_import_contract_holds():
    linter = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(linter), "--config", str(ROOT / ".importlinter")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
