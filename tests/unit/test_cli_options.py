"""One spelling per option: an option that means the same in several commands is defined once
(in ``wsctl/cli/common.py``), so every command shows it with the same help, env var and type."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from wsctl.cli.main import app

# options that mean the same wherever they appear (common.py's shared definitions)
SHARED = ("--auth-secret", "--junit", "--backup", "--no-backup")


def _commands(command: Any, path: str = "wsctl") -> list[tuple[str, Any]]:
    out = [(path, command)]
    if isinstance(command, TyperGroup):
        ctx = typer.Context(command, info_name=path)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None:
                out += _commands(sub, f"{path} {name}")
    return out


def _spellings(flag: str) -> dict[tuple[Any, ...], list[str]]:
    found: dict[tuple[Any, ...], list[str]] = {}
    for path, command in _commands(typer.main.get_command(app)):
        for param in command.params:
            if flag in getattr(param, "opts", ()):
                spelling = (param.help, param.envvar, param.show_envvar, param.type.name)
                found.setdefault(spelling, []).append(path)
    return found


def test_each_shared_option_is_spelled_the_same_in_every_command() -> None:
    for flag in SHARED:
        found = _spellings(flag)
        assert len(found) == 1, (flag, found)
        (commands,) = found.values()
        assert len(commands) >= 2, (flag, commands)


def test_the_auth_secret_is_read_from_wsctl_auth_secret_wherever_it_is_taken() -> None:
    (spelling,) = _spellings("--auth-secret")
    assert spelling[1] == "WSCTL_AUTH_SECRET" and spelling[2] is True
    commands = next(iter(_spellings("--auth-secret").values()))
    assert {"wsctl gateway", "wsctl token", "wsctl conformance", "wsctl sandbox"} <= set(commands)
