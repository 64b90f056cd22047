"""Which environment variables Airlock's code reads, and their defaults, found in the source with ``ast``.

``airlock/settings.py`` reads through ``env``, ``env_bool``, ``env_list`` and ``os.environ.get``,
sometimes with the name and default in a tuple a loop walks (``postgres_options``);
``airlock/server.py`` reads its listener limits from a tuple of names.  Used by
tests/deploy/test_configuration_reference.py (docs/configuration.md must list exactly these) and
the Kubernetes manifest tests (every name they set must be one of these).
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ROOT / "airlock" / "settings.py"
SERVER = ROOT / "airlock" / "server.py"
READERS = {"env", "env_bool", "env_list"}
NAME = re.compile(r"[A-Z][A-Z0-9_]*\Z")
UNKNOWN = object()  # a default that is an expression of other settings, not a constant


@dataclass(frozen=True)
class Read:
    name: str
    default: object  # a str / bool / None constant, or UNKNOWN
    reader: str


def _constant(node: ast.AST | None):
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass
    # str(3 * 1024 * 1024): arithmetic on constants, in a str() call
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "str" and len(node.args) == 1:
        try:
            return str(eval(compile(ast.Expression(node.args[0]), "<default>", "eval"), {"__builtins__": {}}))
        except Exception:
            return UNKNOWN
    return UNKNOWN


def _rank(default) -> int:
    return 0 if default is None else 1 if default is UNKNOWN else 2


def _reader(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name) and func.id in READERS:
        return func.id
    # os.environ.get(...)
    if (isinstance(func, ast.Attribute) and func.attr == "get" and isinstance(func.value, ast.Attribute)
            and func.value.attr == "environ"):
        return "os.environ.get"
    return None


def settings_reads(path: Path = SETTINGS) -> dict[str, Read]:
    tree = ast.parse(path.read_text())
    reads: dict[str, Read] = {}
    indirect = False
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in READERS:
            continue
        if not isinstance(node, ast.Call) or not (reader := _reader(node)) or not node.args:
            continue
        first = node.args[0]
        default_node = node.args[1] if len(node.args) > 1 else next(
            (kw.value for kw in node.keywords if kw.arg == "default"), None)
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            default = _constant(default_node)
            if reader == "env_bool" and default_node is None:
                default = False
            if reader == "env_list" and default_node is None:
                default = ""
            # Read more than once (a check, then the value): the read with a default says what it is.
            previous = reads.get(first.value)
            if previous is None or _rank(default) > _rank(previous.default):
                reads[first.value] = Read(first.value, default, reader)
        elif isinstance(first, ast.Name):
            indirect = True
    if indirect:
        # env(variable, default) in a loop over (option, "NAME", "default") tuples.
        for node in ast.walk(tree):
            if isinstance(node, ast.Tuple) and len(node.elts) == 3 and all(
                    isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                _, name, default = (e.value for e in node.elts)
                if NAME.match(name) and name.startswith("AIRLOCK_"):
                    reads.setdefault(name, Read(name, default, "env"))
    # The wrappers themselves read os.environ.get(name): not a setting.
    return reads


def server_reads(path: Path = SERVER) -> dict[str, Read]:
    """airlock/server.py: Limits.from_env's (field, "NAME", type) tuples; defaults are the dataclass's."""
    tree = ast.parse(path.read_text())
    defaults: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Limits":
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    value = item.value
                    try:
                        value = ast.literal_eval(value)
                    except ValueError:
                        value = eval(compile(ast.Expression(value), "<default>", "eval"), {"__builtins__": {}})
                    defaults[item.target.id] = value
    reads = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple) and len(node.elts) == 3 and all(
                isinstance(e, ast.Constant) for e in node.elts[:2]):
            field, name = node.elts[0].value, node.elts[1].value
            if isinstance(name, str) and name.startswith("AIRLOCK_") and field in defaults:
                value = defaults[field]
                reads[name] = Read(name, str(int(value)) if float(value).is_integer() else str(value), "server")
    return reads


@functools.cache
def read_by_code() -> dict[str, Read]:
    return {**settings_reads(), **server_reads()}
