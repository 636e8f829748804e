"""Suggested commands, quoted so a person can paste them: ids from the registry may hold shell
syntax (``gw a;touch /tmp/PWNED``) or control characters. Pure."""

from __future__ import annotations

import shlex

__all__ = ["command", "quote"]


def quote(arg: str) -> str:
    """``arg`` as one shell word: POSIX single quotes (``shlex.quote``), or for text holding
    characters a terminal would act on, bash's ``$'...'`` with those characters escaped as
    the bytes the id really holds (``\\xHH`` per UTF-8 byte; bytes that were not UTF-8, read
    as surrogate escapes, as themselves), so the printed command is safe to show and bash
    turns it back into exactly that id's bytes (``\\u`` escapes would depend on the locale)."""
    if arg.isprintable():
        return shlex.quote(arg)
    out = []
    for ch in arg:
        if ch in ("\\", "'"):
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            try:
                raw = ch.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:  # a lone surrogate no byte string decodes to
                raw = ch.encode("utf-8", "surrogatepass")
            out.append("".join(f"\\x{byte:02x}" for byte in raw))
    return "$'" + "".join(out) + "'"


def command(*args: str) -> str:
    """A command line of quoted words: ``command("wsctl", "rm", robot_id)``."""
    return " ".join(quote(arg) for arg in args)
