"""The import graph of wsctl has no cycles, counting every import statement wherever it is
(function-local and ``TYPE_CHECKING`` imports included); the packages are layers and every
import goes to the same layer or one below (:data:`LAYERS`); the leaf modules stay leaves."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import wsctl

ROOT = Path(wsctl.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
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


@functools.cache  # the tree does not change during a run; tests only read the graph
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
        "wsctl.shell",  # a leaf: names values in its errors as shell words
        "wsctl.timezones",
    }, reachable


def test_command_modules_do_not_import_each_other() -> None:
    """A command module uses the shared CLI modules (common, output, columns, tables, completion_cmd, eventlog,
    fanout, lines, junit) and the library; what two commands share lives in one of those, never in a
    command module."""
    graph = import_graph()
    shared = {
        "wsctl.cli.common",
        "wsctl.cli.output",
        "wsctl.cli.columns",  # a listing's columns and how a cell shows to a person
        "wsctl.cli.tables",  # tables for people, drawn by output.py's renderer
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


# The layers, from the bottom up: a module imports from its own layer and those below, never
# from one above. A name is a module or a package (its modules); the longest match places a
# module. The foundation's modules are leaves; ``redis.target`` is one too (standard library
# only), which is why the settings, a layer below the rest of the Redis package, may use it.
# The wire protocol is pure and low (the Redis layer refuses to publish what it says is too
# large); its clients over Redis (``rpc``: request/reply, ``fanout``: one message to many
# robots) sit above the registry.
LAYERS: list[set[str]] = [
    {
        "wsctl",
        "wsctl.errors",
        "wsctl.durations",
        "wsctl.timezones",
        "wsctl.paths",
        "wsctl.jsonenc",
        "wsctl.tasks",
        "wsctl.eventloop",
        "wsctl.system",
        "wsctl.shell",
        "wsctl.reconnect",
        "wsctl.redis.target",
    },
    {"wsctl.protocol"},
    {"wsctl.config"},
    {"wsctl.redis"},
    {"wsctl.registry"},
    {"wsctl.protocol.rpc", "wsctl.protocol.fanout", "wsctl.eventlog"},
    {"wsctl.gateway"},
    {"wsctl.ops", "wsctl.conformance"},
    {"wsctl.sandbox", "wsctl.api"},
    {"wsctl.cli", "wsctl.__main__"},
]


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of the longest name that is ``module`` or a package of it."""
    best: tuple[int, int] | None = None  # (length of the matching name, layer)
    for index, names in enumerate(LAYERS):
        for name in names:
            # "wsctl" names the package's own __init__ (``__version__``), not its modules
            inside = name != "wsctl" and module.startswith(name + ".")
            if (module == name or inside) and (best is None or len(name) > best[0]):
                best = (len(name), index)
    return None if best is None else best[1]


def test_layer_of_takes_the_longest_matching_name() -> None:
    assert layer_of("wsctl.redis.target") == 0
    assert layer_of("wsctl.redis.factory") == 3
    assert layer_of("wsctl.protocol.rpc") == 5
    assert layer_of("wsctl.protocol.batch") == 1
    assert layer_of("wsctl.ops.top") == layer_of("wsctl.ops")
    assert layer_of("wsctl.newthing") is None


def test_every_module_has_a_layer() -> None:
    """A new top-level module or package is placed in :data:`LAYERS` (or goes into one)."""
    unplaced = sorted(name for name in _modules() if layer_of(name) is None)
    assert unplaced == [], f"add these to LAYERS: {unplaced}"


def test_modules_import_only_from_their_layer_and_below() -> None:
    graph = import_graph()
    upward = sorted(
        f"{name} -> {dep}"
        for name, deps in graph.items()
        for dep in deps
        if (layer_of(dep) or 0) > (layer_of(name) or 0)
    )
    assert upward == [], upward


def test_the_foundation_modules_are_leaves() -> None:
    graph = import_graph()
    for name in sorted(n for n in graph if layer_of(n) == 0):
        assert graph[name] <= {"wsctl.errors"}, (name, graph[name])


def test_control_requests_and_the_event_log_do_not_import_each_other() -> None:
    graph = import_graph()
    for client in ("wsctl.protocol.rpc", "wsctl.protocol.fanout"):
        assert {d for d in graph[client] if d.startswith("wsctl.eventlog.")} == set()
        users = {n for n, deps in graph.items() if client in deps}
        assert {n for n in users if n.startswith("wsctl.eventlog.")} == set()


def test_the_wire_protocol_is_pure() -> None:
    """Envelopes, batches and the codec import only each other and the foundation: only
    ``rpc`` talks to Redis."""
    graph = import_graph()
    for name in ("wsctl.protocol.envelopes", "wsctl.protocol.batch", "wsctl.protocol.codec"):
        outside = {
            d for d in graph[name] if layer_of(d) != 0 and not d.startswith("wsctl.protocol.")
        }
        assert outside == set(), (name, outside)
        assert {"wsctl.protocol.rpc", "wsctl.protocol.fanout"}.isdisjoint(graph[name])


def test_the_registry_depends_only_on_the_layers_below() -> None:
    """The store does registry I/O only: control-channel requests are ops.deployment's."""
    graph = import_graph()
    registry = layer_of("wsctl.registry")
    for name, deps in graph.items():
        if name.startswith("wsctl.registry."):
            assert all((layer_of(d) or 0) <= registry for d in deps), (name, deps)
    assert "wsctl.protocol.rpc" not in graph["wsctl.registry.store"]
