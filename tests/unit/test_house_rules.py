"""The house rules that a reader checks by eye, checked by machine: library code (everything
outside ``wsctl/cli/``) never talks to the terminal, and delete outcomes have one vocabulary."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import wsctl
from wsctl.registry.store import DeleteOutcome

ROOT = Path(wsctl.__file__).parent


def _library_files() -> list[Path]:
    return [p for p in sorted(ROOT.rglob("*.py")) if "cli" not in p.relative_to(ROOT).parts]


def _trees() -> list[tuple[Path, ast.AST]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(ROOT.rglob("*.py"))]


def test_library_code_never_imports_typer_or_rich() -> None:
    offenders = []
    for path in _library_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] in ("typer", "rich")]
    assert offenders == [], offenders


def test_library_code_never_prints() -> None:
    offenders = []
    for path in _library_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("print", "input", "breakpoint")
            ):
                offenders.append(f"{path}:{node.lineno}")
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("stdout", "stderr")
                and isinstance(node.value, ast.Name)
                and node.value.id == "sys"
            ):
                offenders.append(f"{path}:{node.lineno} sys.{node.attr}")
    assert offenders == [], offenders


def _int_value(node: ast.AST) -> int | None:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _int_value(node.operand)
        return None if inner is None else -inner
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    return None


def test_no_table_of_delete_outcomes_keyed_by_bare_ints() -> None:
    """A dict literal keyed by -1 and 0/1 is a private copy of DeleteOutcome's values."""
    offenders = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                keys = {_int_value(k) for k in node.keys if k is not None}
                if -1 in keys and keys & {0, 1}:
                    offenders.append(f"{path}:{node.lineno}")
            if isinstance(node, ast.Compare):
                values = [_int_value(c) for c in node.comparators]
                if -1 in values:
                    offenders.append(f"{path}:{node.lineno} compared with -1")
    assert offenders == [], offenders


def test_the_store_reports_delete_outcomes_as_the_enum() -> None:
    assert [o.value for o in DeleteOutcome] == [0, 1, -1, 2]
    # IntEnum members are the scripts' replies, so Redis's integer maps to a member
    assert DeleteOutcome(-1) is DeleteOutcome.GONE


def _declared(path: Path) -> list[str] | None:
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    return None


def _imported_names() -> dict[str, set[tuple[str, str]]]:
    """Per wsctl module, the (name, importer) pairs other wsctl modules import from it."""
    from tests.unit.test_module_graph import _modules

    modules = _modules()
    found: dict[str, set[tuple[str, str]]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module not in modules or modules[module].name == "__init__.py":
                continue
            for alias in node.names:
                if f"{module}.{alias.name}" not in modules:  # a submodule is no name
                    found.setdefault(module, set()).add((alias.name, name))
    return found


def test_modules_others_import_from_declare_all_and_it_holds_what_they_import() -> None:
    """``__all__`` is the module's declared API: it exists where others import from, names
    only what the module defines or re-exports, and covers every name others import."""
    from tests.unit.test_module_graph import _modules

    modules = _modules()
    problems = []
    for module, pairs in sorted(_imported_names().items()):
        declared = _declared(modules[module])
        if declared is None:
            problems.append(f"{module}: no __all__")
            continue
        namespace = vars(importlib.import_module(module))
        problems += [f"{module}: __all__ names missing {n}" for n in declared if n not in namespace]
        problems += [
            f"{module}: {n} (imported by {by}) is not in __all__"
            for n, by in sorted(pairs)
            if n not in declared
        ]
    assert problems == [], "\n".join(problems)


def test_no_suppress_that_could_swallow_the_callers_cancellation() -> None:
    """``suppress(BaseException)`` or ``suppress(CancelledError)`` around an await swallows the
    caller's own cancellation too: wsctl.tasks.settle waits for a task without doing that."""
    offenders = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and ast.unparse(node.func).endswith("suppress")
                and any(
                    ast.unparse(arg).split(".")[-1] in ("BaseException", "CancelledError")
                    for arg in node.args
                )
            ):
                offenders.append(f"{path}:{node.lineno}")
    assert offenders == [], offenders


def test_no_asyncio_wait_for_which_can_drop_the_callers_cancellation() -> None:
    """In Python 3.11 ``asyncio.wait_for`` returns the result and drops the caller's
    cancellation when it arrives as the awaited call completes (a gateway's heartbeat loop
    outlived its stop that way): wsctl.tasks.wait_within bounds an await without that flaw."""
    offenders = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] == "wait_for":
                offenders.append(f"{path}:{node.lineno}")
    assert offenders == [], offenders


def test_every_catch_all_says_why_it_is_a_boundary() -> None:
    """``except Exception`` and ``suppress(Exception)`` are for real boundaries (a loop that
    must survive, a best-effort clean-up, the CLI's exit-code boundary): each carries a comment
    on its line or the line before or after, saying why."""
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            code = line.split("#")[0]
            if "except Exception" in code or "suppress(Exception)" in code:
                near = lines[max(0, i - 1) : i + 2]
                if not any("#" in n for n in near):
                    offenders.append(f"{path}:{i + 1}")
    assert offenders == [], offenders


def test_command_modules_manage_no_processes_and_prune_nothing_themselves() -> None:
    """cli/ stays thin: starting, signalling and waiting for processes is the sandbox's (or
    the kit's) job, and the event log's index is pruned by ops; a command calls them."""
    offenders = []
    for path in sorted((ROOT / "cli").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            elif isinstance(node, ast.Attribute) and node.attr in ("kill", "killpg", "waitpid"):
                names = [f"os.{node.attr}"] if ast.unparse(node.value) == "os" else []
            else:
                continue
            bad = ("subprocess", "os.kill", "os.killpg", "os.waitpid", "wsctl.eventlog.index")
            offenders += [f"{path.name}:{node.lineno} {n}" for n in names if n in bad]
    assert offenders == [], offenders


def test_operations_never_reach_into_the_stores_client() -> None:
    """``ops/`` goes through the methods of :class:`RegistryStore` and of
    :class:`~wsctl.ops.deployment.Deployment` (which adds control-channel requests), so the
    store stays the one handle on the deployment's Redis."""
    files = sorted((ROOT / "ops").glob("*.py"))
    assert len(files) > 5
    found = [
        f"{path.name}:{number}"
        for path in files
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bstore\.client\b", line)
    ]
    assert found == []


def _undocumented(body: list[ast.stmt], prefix: str) -> list[str]:
    """Public functions and classes in ``body`` (and methods of public classes) without a
    docstring, as qualified names."""
    found = []
    for node in body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        if node.name.startswith("_"):
            continue
        if ast.get_docstring(node) is None:
            found.append(prefix + node.name)
        if isinstance(node, ast.ClassDef):
            found += _undocumented(node.body, f"{prefix}{node.name}.")
    return found


def test_undocumented_finds_public_functions_and_methods_without_a_docstring() -> None:
    source = (
        "def f(): pass\n"
        "def _g(): pass\n"
        "class C:\n"
        '    """C."""\n'
        "    def m(self): pass\n"
        "    def _n(self): pass\n"
    )
    assert _undocumented(ast.parse(source).body, "") == ["f", "C.m"]


def test_every_public_function_and_class_has_a_docstring() -> None:
    """What and why, for every name another module or a user may call (rule 7)."""
    missing = [
        f"{path.relative_to(ROOT.parent)}: {name}"
        for path in sorted(ROOT.rglob("*.py"))
        for name in _undocumented(ast.parse(path.read_text(encoding="utf-8")).body, "")
    ]
    assert missing == []
