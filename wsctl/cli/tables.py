"""Tables for people: drawn to fit ``COLUMNS`` (free text wrapped or put under each row,
optional columns left out, ids never broken), without trailing padding, in time linear in
the output; and a table streamed a row at a time for listings of any length."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

from wsctl.cli.columns import Column, cell_text, cut_note, shown_text

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = [
    "UNWRAPPED",
    "WRAP_MIN",
    "FitTable",
    "StreamedTable",
    "build_table",
    "hidden_note",
    "make_console",
    "output_width",
    "print_table",
]


# A wrapping column is never narrower than its longest word, up to this many characters; a
# table whose last column wraps and cannot give it that much within COLUMNS puts that column
# under each row instead (see FitTable).
WRAP_MIN = 20
# Piped output without COLUMNS is not wrapped at all (a table is as wide as its rows).
UNWRAPPED = 100_000


def output_width(is_tty: bool) -> int | None:
    """``COLUMNS`` when set to a number, else the terminal's width on a TTY (None lets rich
    ask), else no limit when piped."""
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    return None if is_tty else UNWRAPPED


def make_console(stream: IO[str] | None = None, *, stderr: bool = False) -> Console:
    """A rich console: colour on a TTY unless NO_COLOR; COLUMNS honoured; unwrapped when
    piped."""
    from rich.console import Console

    target = stream or (sys.stderr if stderr else sys.stdout)
    is_tty = hasattr(target, "isatty") and target.isatty()
    return Console(
        file=target,
        no_color=bool(os.environ.get("NO_COLOR")) or not is_tty,
        highlight=False,
        soft_wrap=False,
        width=output_width(is_tty),
    )


def hidden_note(headers: Sequence[str], width: int) -> str:
    """The line on stderr after a table that left ``headers`` out to fit ``width``."""
    return (
        f"wsctl: note: {', '.join(headers)} left out to fit {width} columns; "
        "-o wide, json, jsonl or csv show every column"
    )


def print_table(
    table: FitTable, stream: IO[str] | None = None, notes: list[str] | None = None
) -> None:
    """Print a table without trailing padding on any line (rich pads every cell and the
    blank lines around the table to the table's width). Linear in the output. Optional
    columns that do not fit ``COLUMNS`` are left out (a line for stderr saying so is
    appended to ``notes``)."""
    import io

    out = stream or sys.stdout
    console = make_console(out)
    buffer = io.StringIO()
    console.file = buffer
    hidden = table.fit(console.width)
    if hidden and notes is not None:
        notes.append(hidden_note(hidden, console.width))
    # columns that must not wrap (ids, states, ages) are never dropped or cut to fit COLUMNS:
    # the table is then as wide as they need (build_table's min_width), and no wider
    if table.min_width > console.width:
        console.width = table.min_width
    console.print(table)
    lines = [_strip_trailing(line) for line in buffer.getvalue().split("\n")]
    out.write("\n".join(_fit_rules(lines)))


# the longest SGR code rich writes (``\x1b[1;38;2;255;255;255m`` is 22 characters)
_SGR_MAX = 32


def _strip_trailing(line: str) -> str:
    """``line`` without the spaces at its end, also where they sit inside colour codes
    (``DETAIL   \\x1b[0m ``), the codes kept. Each character is looked at a bounded number
    of times (a regular expression doing this took time quadratic in a run of spaces)."""
    end = len(line)
    codes: list[str] = []
    while end:
        last = line[end - 1]
        if last == " ":
            end -= 1
            continue
        if last != "m":
            break
        start = line.rfind("\x1b[", max(0, end - _SGR_MAX), end)
        if start < 0 or not all(c.isdigit() or c == ";" for c in line[start + 2 : end - 1]):
            break
        codes.append(line[start:end])
        end = start
    if not codes:
        return line[:end]
    return line[:end] + "".join(reversed(codes))


def _visible(line: str) -> str:
    """``line`` without its SGR colour codes."""
    if "\x1b" not in line:
        return line
    parts = line.split("\x1b[")
    kept = [parts[0]]
    for part in parts[1:]:
        end = 0
        while end < len(part) and (part[end].isdigit() or part[end] == ";"):
            end += 1
        kept.append(part[end + 1 :] if end < len(part) and part[end] == "m" else "\x1b[" + part)
    return "".join(kept)


def _fit_rules(lines: list[str]) -> list[str]:
    """Cut the header rule (``───``) to the widest other line: rich draws it across the
    width it gave the table, wider than the rows once a wrapped column's padding is gone."""
    visible = [_visible(line) for line in lines]
    is_rule = [bool(v.strip()) and not v.strip().strip("─") for v in visible]
    widest = max((len(v) for v, rule in zip(visible, is_rule, strict=True) if not rule), default=0)
    for i, (v, rule) in enumerate(zip(visible, is_rule, strict=True)):
        extra = len(v) - widest
        if rule and extra > 0 and widest > 0:
            head, _, tail = lines[i].rpartition("─" * extra)
            lines[i] = head + tail
    return lines


def build_table(
    rows: Iterable[dict[str, Any]],
    columns: Sequence[Column],
    *,
    wide: bool,
    title: str | None,
    notes: list[str] | None = None,
) -> FitTable:
    """A table of ``rows`` in ``columns`` (the wide-only ones when ``wide``), cells escaped
    for the terminal and cut at :data:`WORD_MAX` / :data:`TEXT_MAX` characters (a line for
    stderr saying so is appended to ``notes``)."""
    shown = [c for c in columns if wide or not c.wide_only]
    held = list(rows)
    cut = 0
    texts: list[list[str]] = []
    styles: list[list[str | None]] = []
    for row in held:
        cells = []
        for column in shown:
            text, was_cut = cell_text(column, row)
            cut += was_cut
            cells.append(text)
        texts.append(cells)
        styles.append([column.style(row) if column.style else None for column in shown])
    if cut and notes is not None:
        notes.append(cut_note(cut))
    return FitTable(
        shown, texts, styles, shown_text(title, True)[0] if title else None, optional=not wide
    )


class FitTable:
    """A rendered listing that fits ``COLUMNS``: a rich table when its columns fit (ids,
    states and ages whole, free text wrapped at words in a column at least
    :data:`WRAP_MIN` wide); otherwise the same table without its free-text columns, that
    text under each row, labelled, indented and wrapped (``reason: ...``). Ids are never
    broken: a table whose unbreakable columns alone are wider than ``COLUMNS`` is as wide as
    they need (:attr:`min_width`)."""

    def __init__(
        self,
        columns: list[Column],
        texts: list[list[str]],
        styles: list[list[str | None]],
        title: str | None,
        *,
        optional: bool = False,
    ) -> None:
        self.columns, self.texts, self.styles, self.title = columns, texts, styles, title
        self.optional = optional
        self._measure()

    def _measure(self) -> None:
        columns, texts = self.columns, self.texts
        self.least = []
        for i, column in enumerate(columns):
            if column.wrap:
                words = (word for cells in texts for word in cells[i].split())
                least = min(max((len(w) for w in words), default=0), WRAP_MIN)
            else:
                least = max((len(cells[i]) for cells in texts), default=0)
            self.least.append(max(least, len(column.header)))
        # box SIMPLE_HEAD without edge padding: one space on each side of every inner edge and
        # a separator per edge
        self.needed = sum(self.least) + 3 * len(columns) - 1
        kept = [i for i, column in enumerate(columns) if not column.wrap]
        self.stackable = 0 < len(kept) < len(columns)
        self.min_width = (
            sum(self.least[i] for i in kept) + 3 * len(kept) - 1 if self.stackable else self.needed
        )

    def fit(self, width: int) -> list[str]:
        """Leave out optional columns (when this table may: not ``-o wide``), rightmost
        first, until the rest fits ``width``; returns the headers left out, in column order."""
        hidden: list[str] = []
        while self.optional and self.min_width > width:
            optional = [i for i, c in enumerate(self.columns) if c.optional]
            if not optional:
                break
            i = optional[-1]
            hidden.insert(0, self.columns[i].header)
            del self.columns[i]
            for rows in (self.texts, self.styles):
                for cells in rows:
                    del cells[i]
            self._measure()
        return hidden

    def __rich_console__(self, console: Console, options: Any) -> Iterator[Any]:
        if options.max_width >= self.needed or not self.stackable:
            yield self._table()
        else:
            yield from self._stacked(options.max_width)

    def _table(self) -> Table:
        from rich import box
        from rich.table import Table
        from rich.text import Text

        table = Table(
            box=box.SIMPLE_HEAD,
            title=Text(self.title) if self.title else None,
            title_justify="left",
            pad_edge=False,
        )
        for column, least in zip(self.columns, self.least, strict=True):
            table.add_column(
                column.header,
                justify=column.justify,  # type: ignore[arg-type]
                overflow="fold",
                no_wrap=not column.wrap,
                min_width=least,
            )
        table.min_width = self.needed
        for cells, styles in zip(self.texts, self.styles, strict=True):
            # Text, not markup: a cell is shown as it is, and nothing parses it again
            table.add_row(
                *(Text(t, style=style or "") for t, style in zip(cells, styles, strict=True))
            )
        return table

    def _stacked(self, width: int) -> Iterator[Any]:
        import textwrap

        from rich.text import Text

        kept = [i for i, column in enumerate(self.columns) if not column.wrap]
        free = [i for i, column in enumerate(self.columns) if column.wrap]
        indent = "     "

        def line(cells: list[str], styles: list[str | None]) -> Text:
            text = Text(" ")
            for n, i in enumerate(kept):
                column, cell = self.columns[i], cells[i]
                if n:
                    text.append("   ")
                pad = self.least[i] - len(cell)
                if column.justify == "right":
                    text.append(" " * pad)
                text.append(cell, style=styles[i] or "")
                if column.justify != "right" and n < len(kept) - 1:
                    text.append(" " * pad)
            return text

        header = line([c.header for c in self.columns], ["bold"] * len(self.columns))
        body: list[Text] = []
        for cells, styles in zip(self.texts, self.styles, strict=True):
            body.append(line(cells, styles))
            for i in free:
                if cells[i] in ("", "-"):
                    continue
                label = self.columns[i].header.lower() + ": "
                room = max(width - len(indent) - len(label), WRAP_MIN)
                wrapped = textwrap.wrap(cells[i], room, break_on_hyphens=False) or [cells[i]]
                body.append(Text(indent + label + wrapped[0], style=styles[i] or ""))
                body.extend(
                    Text(indent + " " * len(label) + part, style=styles[i] or "")
                    for part in wrapped[1:]
                )
        rule = max(len(t.plain.rstrip()) for t in [header, *body])
        if self.title:
            yield Text(self.title)
        yield Text("")
        yield header
        yield Text(" " + "─" * (rule - 1))
        yield from body
        yield Text("")


class StreamedTable:
    """A table written a row at a time (``send ... -o wide`` to any number of robots): the
    header and the column widths come from the first :attr:`BLOCK` rows (or those of the
    first :attr:`WAIT` seconds), each later row is written as it comes, and a cell wider
    than its column shifts only its own line. Cells are cut as in :func:`build_table`; on a
    known width (``COLUMNS`` or a terminal) a free-text last column is cut to fit it."""

    BLOCK = 100
    WAIT = 0.1

    def __init__(self, columns: Sequence[Column], out: IO[str], *, wide: bool) -> None:
        import time

        self.columns = [c for c in columns if wide or not c.wide_only]
        self.out = out
        self.widths: list[int] | None = None
        self.pending: list[list[str]] = []
        self.cut = 0
        self.started = time.monotonic()
        is_tty = hasattr(out, "isatty") and out.isatty()
        width = output_width(is_tty)
        if width is None:
            import shutil

            width = shutil.get_terminal_size().columns
        self.width = None if width == UNWRAPPED else width

    def add(self, row: dict[str, Any]) -> None:
        """Write ``row`` (or keep it until the widths are known)."""
        import time

        cells = []
        for column in self.columns:
            text, was_cut = cell_text(column, row)
            self.cut += was_cut
            cells.append(text)
        if self.widths is not None:
            self.out.write(self._line(cells) + "\n")
            return
        self.pending.append(cells)
        if len(self.pending) >= self.BLOCK or time.monotonic() - self.started >= self.WAIT:
            self._start()

    def _start(self) -> None:
        headers = [c.header for c in self.columns]
        self.widths = [
            max([len(header), *(len(cells[i]) for cells in self.pending)])
            for i, header in enumerate(headers)
        ]
        lines = [self._line(headers)]
        body = [self._line(cells) for cells in self.pending]
        lines.append(" " + "─" * (max(len(line) for line in lines + body) - 1))
        self.out.write("\n".join(lines + body) + "\n")
        self.pending = []

    def _line(self, cells: list[str]) -> str:
        assert self.widths is not None
        parts: list[str] = []
        last = len(cells) - 1
        for i, (column, text) in enumerate(zip(self.columns, cells, strict=True)):
            if i == last:
                if column.wrap and self.width is not None:
                    room = self.width - sum(len(p) for p in parts) - 3 * last - 1
                    if room >= WRAP_MIN and len(text) > room:
                        from wsctl.shell import clip

                        text = clip(text, room, len(text))
                parts.append(text)
            elif column.justify == "right":
                parts.append(text.rjust(self.widths[i]))
            else:
                parts.append(text.ljust(self.widths[i]))
        return (" " + "   ".join(parts)).rstrip()

    def close(self) -> int:
        """Write what is still held; returns how many cells were cut."""
        if self.widths is None and self.pending:
            self._start()
        return self.cut
