"""The import graph of wsctl has no cycles, counting every import statement wherever it is
(function-local and ``TYPE_CHECKING`` imports included), and the leaf modules stay leaves."""

from __future__ import annotations

import ast
from pathlib import Path

import wsctl

ROOT = Path(wsctl.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every wsctl module ``path`` imports, from any statement in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            # ``from wsctl.cli import config_cmd`` imports the submodule wsctl.cli.config_cmd
            found.update(f"{module}.{alias.name}" for alias in node.names)
    # Packages' own __init__ files are empty markers; an edge to one is not a dependency.
    return {m for m in found if m in known and m != name and _modules()[m].name != "__init__.py"}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_function_local_and_type_checking_imports() -> None:
    graph = import_graph()
    # cli.common imports the factory only inside functions (for --help speed)
    assert "wsctl.redis.factory" in graph["wsctl.cli.common"]
    assert "wsctl.cli.config_cmd" in graph["wsctl.cli.main"]


def test_the_module_graph_has_no_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_leaf_modules_import_nothing_from_wsctl_but_errors() -> None:
    graph = import_graph()
    for leaf in ("wsctl.redis.target", "wsctl.errors", "wsctl.timezones"):
        assert graph[leaf] <= {"wsctl.errors"}, (leaf, graph[leaf])


def test_config_depends_on_no_registry_or_client_code() -> None:
    reachable: set[str] = set()
    todo = ["wsctl.config"]
    graph = import_graph()
    while todo:
        for nxt in graph[todo.pop()] - reachable:
            reachable.add(nxt)
            todo.append(nxt)
    assert reachable <= {
        "wsctl.durations",
        "wsctl.errors",
        "wsctl.redis.target",
        "wsctl.timezones",
    }, reachable


def test_command_modules_do_not_import_each_other() -> None:
    """A command module uses the shared CLI modules (common, output, completion_cmd, eventlog,
    fanout, lines, junit) and the library; what two commands share lives in one of those, never in a
    command module."""
    graph = import_graph()
    shared = {
        "wsctl.cli.common",
        "wsctl.cli.output",
        "wsctl.cli.completion_cmd",
        "wsctl.cli.eventlog",
        "wsctl.cli.fanout",
        "wsctl.cli.lines",  # line input in bounded memory (--robots-from, registry import)
        "wsctl.cli.topview",  # wsctl top's words and cells, for --once and the live screen
        "wsctl.cli.tui.app",  # wsctl top's live screen
        "wsctl.cli.junit",
    }
    for name, deps in graph.items():
        if name.startswith("wsctl.cli.") and name.endswith("_cmd"):
            others = {d for d in deps if d.startswith("wsctl.cli.")} - shared
            assert others == set(), (name, others)


def test_library_code_imports_wsctl_modules_at_the_top() -> None:
    """Outside cli/ (whose modules keep imports in functions so ``wsctl --help`` stays fast),
    a function-local import of a wsctl module would only hide a dependency: there are none."""
    found = []
    for name, path in _modules().items():
        if name.startswith("wsctl.cli."):
            continue
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (
                    node.level or (node.module or "").startswith("wsctl")
                ):
                    found.append(f"{name}:{node.lineno} {node.module}")
    assert found == []


def test_the_gateway_adapters_share_through_the_core_and_admission_only() -> None:
    """The websockets shell and the Starlette adapter never import each other: what both need
    lives in the transport-independent modules (gateway.core, gateway.admission)."""
    graph = import_graph()
    adapters = {"wsctl.gateway.server", "wsctl.gateway.asgi"}
    for adapter in adapters:
        assert graph[adapter] & adapters == set(), adapter
    assert {"wsctl.gateway.admission", "wsctl.gateway.core"} <= graph["wsctl.gateway.asgi"]
    # admission is pure: of the gateway it uses only the token check, never the core
    gateway_deps = {m for m in graph["wsctl.gateway.admission"] if m.startswith("wsctl.gateway.")}
    assert gateway_deps <= {"wsctl.gateway.identity"}, gateway_deps


def _importers_of(graph: dict[str, set[str]], package: str) -> set[str]:
    return {name for name, deps in graph.items() if any(d.startswith(package) for d in deps)}


def test_only_cli_and_ops_import_ops() -> None:
    """ops/ is the top library layer (operations that return results): registry/, gateway/
    and the modules under them never reach up into it."""
    graph = import_graph()
    importers = _importers_of(graph, "wsctl.ops.")
    below = {n for n in importers if not n.startswith(("wsctl.ops.", "wsctl.cli."))}
    assert below == set(), below


def test_library_code_never_imports_cli() -> None:
    """Only the CLI talks to the terminal; the library under it (everything but cli/ and the
    ``python -m wsctl`` entry point) never imports it."""
    graph = import_graph()
    importers = _importers_of(graph, "wsctl.cli.")
    library = {n for n in importers if not n.startswith("wsctl.cli.")} - {"wsctl.__main__"}
    assert library == set(), library
