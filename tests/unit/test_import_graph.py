"""The import structure of securechat/: every module imports on its own, and no import cycle exists anywhere.

The graph is built from the source with `ast`, so it sees every module, not
only those a test happens to load. An edge A -> B means A imports B at module
level (imports inside functions are deliberate deferrals and do not take
part in initialisation order; `if TYPE_CHECKING:` imports never run).
Importing `securechat.x.y` also runs `securechat.x`'s __init__, so it is an
edge to `securechat.x` too -- unless the importer lives inside securechat.x
itself (siblings in one package), and except for the root `securechat`
package, whose __init__ only re-exports.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import securechat

ROOT = Path(securechat.__file__).parent
PACKAGE = "securechat"


def module_names() -> dict[str, Path]:
    """Every module of the package (generated stubs included), by dotted name."""
    names: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


MODULES = module_names()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(tree: ast.Module, *, lazy: bool) -> list[ast.Import | ast.ImportFrom]:
    """Import statements run when the module is imported (plus, if LAZY, those inside functions)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(statements: list[ast.stmt]) -> None:
        for statement in statements:
            if isinstance(statement, ast.Import | ast.ImportFrom):
                found.append(statement)
            elif isinstance(statement, ast.If):
                if not _is_type_checking(statement.test):
                    visit(statement.body)
                visit(statement.orelse)
            elif isinstance(statement, ast.Try):
                for block in (statement.body, statement.orelse, statement.finalbody):
                    visit(block)
                for handler in statement.handlers:
                    visit(handler.body)
            elif isinstance(statement, ast.With):
                visit(statement.body)
            elif lazy and isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                visit(statement.body)

    visit(tree.body)
    return found


def _resolve(module: str, statement: ast.ImportFrom) -> str:
    if not statement.level:
        return statement.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (statement.level - 1)]
    return ".".join(base + ([statement.module] if statement.module else []))


def imported_modules(module: str, *, lazy: bool = False) -> set[str]:
    """The securechat modules MODULE imports (directly), by the rules in the module docstring."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    targets: set[str] = set()
    for statement in _module_level_imports(tree, lazy=lazy):
        if isinstance(statement, ast.Import):
            names = [alias.name for alias in statement.names]
        else:
            base = _resolve(module, statement)
            # `from pkg import sub` imports the submodule pkg.sub when there is one.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in statement.names]
        for name in names:
            if name == PACKAGE or not name.startswith(PACKAGE + "."):
                continue
            targets.add(name)
            parts = name.split(".")
            for depth in range(2, len(parts)):
                ancestor = ".".join(parts[:depth])
                inside = module == ancestor or module.startswith(ancestor + ".")
                if not inside:
                    targets.add(ancestor)
    targets.discard(module)
    return {name for name in targets if name in MODULES}


def import_graph(*, lazy: bool = False) -> dict[str, set[str]]:
    return {module: imported_modules(module, lazy=lazy) for module in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def connect(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        node = todo.pop()
        for target in graph.get(node, ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_no_import_cycle_in_securechat():
    """No two securechat modules import each other, directly or through others, at import time."""
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_planted_cycle():
    """The failing twin: a graph with a cycle through three modules is reported, and only that cycle."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_submodule_import_counts_its_package_init():
    """Importing securechat.config.broker runs securechat.config's __init__ too; a sibling import does not count its own package."""
    jetstream = imported_modules("securechat.broker.jetstream")
    assert {"securechat.config.broker", "securechat.config"} <= jetstream
    store = imported_modules("securechat.pki.store")
    assert "securechat.pki.atomic" in store and "securechat.pki" not in store


def test_doctor_never_imports_server_code():
    """`doctor` checks configs and certificates: nothing it imports, even lazily, is securechat.server."""
    server = {
        name for name in reachable(import_graph(lazy=True), "securechat.doctor") if name.startswith("securechat.server")
    }
    assert server == set()


def test_config_package_imports_no_server_client_cli_or_ca_service_code():
    """Configs are read by everyone: nothing config/ imports, even lazily, is a server, client, CLI or CA-service module.

    (It may reach securechat.pki, lazily, for the one SAN parser.)
    """
    forbidden = ("securechat.server", "securechat.client", "securechat.cli", "securechat.ca", "securechat.broker.")
    forbidden += ("securechat.doctor",)
    graph = import_graph(lazy=True)
    reached: set[str] = set()
    for module in MODULES:
        if module.startswith("securechat.config"):
            reached |= reachable(graph, module)
    assert sorted(name for name in reached if name.startswith(forbidden) and not name.startswith("securechat.config")) == []


FRESH_IMPORTS = """
import importlib, sys
failed = []
for module in sys.argv[1:]:
    for name in [n for n in sys.modules if n == "securechat" or n.startswith("securechat.")]:
        if not name.startswith("securechat._gen"):  # protobuf registers each file once per process
            del sys.modules[name]
    try:
        importlib.import_module(module)
    except Exception as exc:
        failed.append(f"{module}: {type(exc).__name__}: {exc}")
print("\\n".join(failed))
"""


def test_each_module_imports_first_on_its_own():
    """Every module imports as the first securechat module of a process: no import-order dependence.

    One interpreter, with securechat's modules dropped from sys.modules before
    each import (third-party packages stay loaded, so this takes a second, not a minute).
    """
    modules = sorted(m for m in MODULES if m != "securechat.__main__")
    result = subprocess.run(
        [sys.executable, "-c", FRESH_IMPORTS, *modules], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_fresh_import_check_reports_a_module_that_fails():
    """The failing twin: a module that cannot be imported is named in the report."""
    result = subprocess.run(
        [sys.executable, "-c", FRESH_IMPORTS, "securechat.errors", "securechat.no_such_module"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (
        result.stdout.strip()
        == "securechat.no_such_module: ModuleNotFoundError: No module named 'securechat.no_such_module'"
    )
