"""The documentation as tests read it: its pages, their fenced code blocks (with the
``<!-- test:NAME -->`` marker on the line before, if any), and the ``wsctl`` command lines in
shell code, checked against the real command-line interface."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

__all__ = [
    "DOCS",
    "README",
    "ROOT",
    "Block",
    "blocks",
    "check_wsctl",
    "pages",
    "shell_commands",
    "wsctl_commands",
]

_FENCE = re.compile(
    r"^(?P<indent>[ ]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ ]*$", re.M | re.S
)
_MARKER = re.compile(r"<!-- test:([a-z0-9-]+) -->\s*$")
# the shell's control operators and redirections: a command ends at any of them
_OPERATORS = set("|&;<>()")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page: its language, the test marker before it (if any),
    its text, and where it is (``page:line``)."""

    page: Path
    line: int
    lang: str
    marker: str | None
    body: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    """Every Markdown page of the site (the build hook's folder is not part of it)."""
    return sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts)


def blocks(paths: list[Path] | None = None) -> list[Block]:
    """Every fenced code block of ``paths`` (default: every page and README.md)."""
    found = []
    for page in paths if paths is not None else [*pages(), README]:
        text = page.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = _MARKER.search(before)
            indent = len(match["indent"])
            body = "\n".join(line[indent:] for line in match["body"].splitlines())
            found.append(
                Block(
                    page=page,
                    line=text.count("\n", 0, match.start()) + 1,
                    lang=match["info"].strip().split(" ")[0],
                    marker=marker[1] if marker else None,
                    body=body,
                )
            )
    return found


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell script (continuation lines joined, comments dropped,
    pipelines and lists split, redirections and ``VAR=value`` prefixes removed): a list of
    argument vectors as the shell would pass them, variables left unexpanded."""
    commands: list[list[str]] = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        redirect = False
        for token in lexer:
            if token and set(token) <= _OPERATORS:
                if current:
                    commands.append(current)
                current = []
                redirect = token[0] in "<>"  # the next word is a file, not a command
                continue
            if redirect:
                redirect = False
                continue
            if not current and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", token):
                continue  # VAR=value before a command
            current.append(token)
        if current:
            commands.append(current)
    return commands


def wsctl_commands(script: str) -> list[list[str]]:
    """The ``wsctl`` invocations of a shell script, each without the program name
    (``.venv/bin/wsctl`` counts)."""
    return [argv[1:] for argv in shell_commands(script) if Path(argv[0]).name == "wsctl"]


def check_wsctl(args: list[str]) -> None:
    """Parse ``wsctl ARGS`` as the real command-line interface does (every command and group
    on the way, flag names, counts, choices and each flag's own checks, such as durations and
    ``--slo`` expressions), without running it. Raises on anything wsctl would refuse."""
    from wsctl.cli.main import app
    from wsctl.ops.simulate.options import parse_slo

    command: Any = typer.main.get_command(app)
    ctx = command.make_context("wsctl", list(args))
    while hasattr(command, "resolve_command"):
        rest = [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
    for text in ctx.params.get("slo") or ():
        parse_slo(text)
