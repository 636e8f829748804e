"""The command reference of the documentation site, generated from the Typer app.

Every command's ``--help`` is its docstring and option help (house rule: a command's docstring
is its ``--help``), so the reference is never written twice: the site's build hook
(``docs/hooks/reference.py``) puts :func:`reference_markdown` into
``docs/reference/commands.md``, and a test compares each generated section with what
``wsctl ... --help`` prints. ``python -m wsctl.cli.reference`` prints the page's Markdown.

Help is rendered at :data:`WIDTH` columns, as on an 80-column terminal (``COLUMNS=80``), so the
page does not depend on the terminal that built it.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from wsctl.cli.main import app

__all__ = ["WIDTH", "anchor", "command_paths", "help_text", "reference_markdown"]

WIDTH = 80


def _root() -> Any:
    return typer.main.get_command(app)


def _walk(command: Any, path: tuple[str, ...], out: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    out.append(path)
    if isinstance(command, TyperGroup):
        ctx = typer.Context(command, info_name="wsctl")
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                _walk(sub, (*path, name), out)
    return out


def command_paths() -> list[tuple[str, ...]]:
    """Every command and command group, in the order ``wsctl --help`` lists them: ``()`` is
    ``wsctl`` itself, ``("list", "connections")`` is ``wsctl list connections``."""
    return _walk(_root(), (), [])


def _context(path: tuple[str, ...]) -> typer.Context:
    """The context ``wsctl PATH --help`` runs in (the app's context settings included, so the
    help option reads ``-h, --help`` as it does there)."""
    command = _root()
    ctx = typer.Context(
        command,
        info_name="wsctl",
        # click formats help two columns narrower than the terminal it measures
        terminal_width=WIDTH - 2,
        max_content_width=WIDTH,
        **command.context_settings,
    )
    for name in path:
        sub = command.get_command(ctx, name) if isinstance(command, TyperGroup) else None
        if sub is None:
            raise KeyError(" ".join(("wsctl", *path)))
        command = sub
        ctx = typer.Context(command, info_name=name, parent=ctx, **command.context_settings)
    return ctx


def help_text(path: tuple[str, ...]) -> str:
    """Exactly what ``wsctl PATH --help`` prints on an 80-column terminal (without the final
    newline)."""
    return _context(path).get_help()


def summary(path: tuple[str, ...]) -> str:
    """The command's one-line description (the first sentence of its help)."""
    ctx = _context(path)
    return ctx.command.get_short_help_str(limit=200)


def anchor(path: tuple[str, ...]) -> str:
    """The anchor of a command's section on the reference page: ``wsctl-list-connections``."""
    return "-".join(("wsctl", *path))


def reference_markdown() -> str:
    """The generated part of the command reference page: a table of every command with its
    summary, then one section per command holding its ``--help``."""
    paths = command_paths()
    lines = ["| command | what it does |", "| --- | --- |"]
    for path in paths[1:]:
        name = " ".join(("wsctl", *path))
        lines.append(f"| [`{name}`](#{anchor(path)}) | {_cell(summary(path))} |")
    lines.append("")
    for path in paths:
        name = " ".join(("wsctl", *path))
        level = "##" if len(path) <= 1 else "###"
        lines += [
            f"{level} `{name}` {{#{anchor(path)}}}",
            "",
            "```text",
            help_text(path),
            "```",
            "",
        ]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


if __name__ == "__main__":
    typer.echo(reference_markdown())
