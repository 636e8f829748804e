"""Suggested commands, quoted so a person can paste them: ids from the registry may hold shell
syntax (``gw a;touch /tmp/PWNED``) or control characters. Pure."""

from __future__ import annotations

import shlex

__all__ = ["command", "quote"]


def quote(arg: str) -> str:
    """``arg`` as one shell word: POSIX single quotes (``shlex.quote``), or for text holding
    characters a terminal would act on, bash's ``$'...'`` with those characters escaped, so
    the printed command is safe to show and still names exactly that id."""
    if arg.isprintable():
        return shlex.quote(arg)
    out = []
    for ch in arg:
        if ch in ("\\", "'"):
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "$'" + "".join(out) + "'"


def command(*args: str) -> str:
    """A command line of quoted words: ``command("wsctl", "rm", robot_id)``."""
    return " ".join(quote(arg) for arg in args)
