"""The columns of a listing and how a cell is shown to a person: escaped (registry data is
untrusted) and cut at a bounded length, so that drawing any table is linear in what it prints
(the machine formats carry every value whole)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["TEXT_MAX", "WORD_MAX", "Column", "cell_text", "cut_note", "printable", "shown_text"]


@dataclass(frozen=True)
class Column:
    """One column of a listing: the row key, its header, whether only ``-o wide`` shows it,
    and how the table formats, styles, aligns and wraps its cells (machine formats take
    the raw value)."""

    key: str
    header: str
    wide_only: bool = False
    fmt: Callable[[Any], str] | None = None
    style: Callable[[dict[str, Any]], str | None] | None = None
    justify: str = "left"
    wrap: bool = False  # free text (reasons, details) wraps at words; nothing else does
    # a table (not -o wide) narrower than its columns leaves optional ones out, rightmost first,
    # and says so on stderr: `list instances` in 80 columns drops its heartbeat ages
    optional: bool = False


# Cells longer than this many characters are cut for a person (table, wide), ending with
# "… (N chars)"; json, jsonl and csv carry them whole. Ids, states and ages: every id wsctl
# accepts (256 bytes) fits. Free text (reasons, details) is cut longer and wraps.
WORD_MAX = 256
TEXT_MAX = 512


def cell_text(column: Column, row: dict[str, Any]) -> tuple[str, bool]:
    """The text a person sees in ``column`` of ``row``, and whether it was cut: free text
    escaped inline, any other cell (ids) as its ``$'...'`` shell word when it holds
    characters that are not printable. Work is bounded by the cut, not the value."""
    value = row.get(column.key)
    if column.fmt is not None:
        text = column.fmt(value)
    elif value is None:
        return "-", False
    else:
        text = str(value)
    return shown_text(text, column.wrap)


def shown_text(text: str, free: bool) -> tuple[str, bool]:
    """``text`` as a person sees it, and whether it was cut: free text escaped inline and cut
    at :data:`TEXT_MAX`, anything else (ids) as its shell word cut at :data:`WORD_MAX`."""
    from wsctl.shell import clip, word

    limit = TEXT_MAX if free else WORD_MAX
    part = text[: limit + 1]  # every character shows as one or more: enough to fill the cut
    shown = printable(part) if free else word(part)
    if len(shown) <= limit:
        return shown, False
    return clip(shown, limit, len(text)), True


def cut_note(cut: int) -> str:
    """The line on stderr after a table where ``cut`` cells were cut."""
    return (
        f"wsctl: note: {cut} cell(s) longer than {WORD_MAX} characters ({TEXT_MAX} for "
        "free text) cut, marked …; -o json, jsonl or csv carry them whole"
    )


def printable(text: str) -> str:
    """``text`` with every character that is not printable escaped as the bytes it holds
    (``\\x1b``, ``\\xe2\\x80\\xae``, ``\\xff``): :func:`wsctl.shell.printable`, the one
    rule for everything printed for a person (registry data is untrusted)."""
    from wsctl.shell import printable as escape

    return escape(text)
