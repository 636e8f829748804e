"""Text shown to a person, one rule for all of it: registry data may hold shell syntax
(``gw a;touch /tmp/PWNED``), control characters, bidi overrides or bytes that are not UTF-8.

Every character that is not printable (Python's ``str.isprintable``) is written as the bytes
it holds, ``\\xHH`` per UTF-8 byte, and a byte that was not UTF-8 (read as a surrogate escape)
as itself: ``\\x1b``, ``\\xe2\\x80\\xae``, ``\\xff``. That is bash's ``$'...'`` spelling, so an
id printed in a table, an error or a suggested command reads the same everywhere and pastes
back to exactly its bytes. Pure.
"""

from __future__ import annotations

import shlex

__all__ = ["CUT_MARK", "clip", "command", "escaped", "printable", "quote", "quoted", "word"]

# What ends a cell cut for a person; the rest of the value is in -o json/jsonl/csv.
CUT_MARK = "…"


def escaped(ch: str) -> str:
    """One character that is not printable as ``\\xHH`` escapes of the bytes it holds."""
    try:
        raw = ch.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate no byte string decodes to
        raw = ch.encode("utf-8", "surrogatepass")
    return "".join(f"\\x{byte:02x}" for byte in raw)


def printable(text: str) -> str:
    """``text`` with every character that is not printable escaped (see the module): C0/C1
    controls (escape sequences set the window title, clear the screen, fake output), format
    characters (bidi overrides that make text read differently from what it is, zero-width
    spaces and BOMs that make two ids look alike), separators other than the space, and bytes
    that were not UTF-8. Linear in ``text``."""
    if text.isprintable():  # the common case, in C
        return text
    return "".join(ch if ch.isprintable() else escaped(ch) for ch in text)


def quote(arg: str) -> str:
    """``arg`` as one shell word: POSIX single quotes when needed (``shlex.quote``), or for
    text holding characters a terminal would act on, bash's ``$'...'`` with those characters
    escaped as the bytes the id really holds (\\u escapes would depend on the locale), so the
    printed command is safe to show and bash turns it back into exactly that id's bytes."""
    if arg.isprintable():
        return shlex.quote(arg)
    return _dollar_quote(arg)


def quoted(arg: str) -> str:
    """``arg`` always in quotes, for naming a value inside a message: ``'robot-1'``,
    ``'it'"'"'s'``, ``$'bad-\\xff'`` (a shell word too, like :func:`quote`)."""
    if not arg.isprintable():
        return _dollar_quote(arg)
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def word(text: str) -> str:
    """An id in a table cell: as it is when printable, else its ``$'...'`` shell word (so
    ``bad-\\xff`` the literal text and the id holding byte ff do not print alike); the empty
    id (the key that is the bare prefix) as ``''``, never a blank cell."""
    if not text:
        return "''"
    return text if text.isprintable() else _dollar_quote(text)


def _dollar_quote(arg: str) -> str:
    out = []
    for ch in arg:
        if ch in ("\\", "'"):
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(escaped(ch))
    return "$'" + "".join(out) + "'"


def clip(shown: str, limit: int, total: int) -> str:
    """``shown`` (text already made printable) cut to at most ``limit`` characters, ending
    with :data:`CUT_MARK` and how long the value was, when it is longer: ``abc… (10000
    chars)``. An escape (``\\xff``) is never cut in half. ``total`` is the value's length."""
    if len(shown) <= limit:
        return shown
    note = f"{CUT_MARK} ({total:,} chars)"
    keep = max(limit - len(note), 1)
    head = shown[:keep]
    # a cut inside "\xHH" would print a different byte: cut before the escape instead
    slash = head.rfind("\\", max(0, keep - 3))
    if slash >= 0:
        head = head[:slash]
    return head + note


def command(*args: str) -> str:
    """A command line of quoted words: ``command("wsctl", "rm", robot_id)``."""
    return " ".join(quote(arg) for arg in args)
