"""One renderer for every listing: ``table``, ``wide``, ``json``, ``jsonl`` and ``csv``.

``jsonl``, ``csv`` and ``json`` stream row by row (memory stays flat for any registry size);
``table``/``wide`` need all rows to size columns, so they are for human-sized listings (use
``--limit``). Rows are dictionaries with stable snake_case keys; the machine formats carry every
key, the table shows the columns chosen for it. Colour only on a terminal, never with NO_COLOR.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = [
    "FORMATS",
    "TABLE_ROWS",
    "TEXT_MAX",
    "UNWRAPPED",
    "WORD_MAX",
    "WRAP_MIN",
    "Column",
    "FitTable",
    "RowWriter",
    "StreamedTable",
    "build_table",
    "cut_note",
    "hidden_note",
    "human_value",
    "make_console",
    "output_width",
    "print_cluster",
    "print_table",
    "printable",
    "render",
    "render_object",
]

FORMATS = ("table", "wide", "json", "jsonl", "csv")

# Tables show at most this many rows unless --limit says otherwise (listings, fan-out
# --dry-run): rendering 200k rows took 100 s and 1 GiB. jsonl and csv stream everything in
# flat memory.
TABLE_ROWS = 1000


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


def _cell(column: Column, row: dict[str, Any]) -> tuple[str, bool]:
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
    return _shown(text, column.wrap)


def _shown(text: str, free: bool) -> tuple[str, bool]:
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
            text, was_cut = _cell(column, row)
            cut += was_cut
            cells.append(text)
        texts.append(cells)
        styles.append([column.style(row) if column.style else None for column in shown])
    if cut and notes is not None:
        notes.append(cut_note(cut))
    return FitTable(
        shown, texts, styles, _shown(title, True)[0] if title else None, optional=not wide
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


_encoder: Any = None


def _encode(row: dict[str, Any]) -> str:
    """One JSON object, UTF-8 kept as is (``json.dumps(row, ensure_ascii=False,
    default=str)``): one reused encoder, as this is the hot path of every jsonl listing."""
    global _encoder
    if _encoder is None:
        from wsctl.jsonenc import make_encoder

        _encoder = make_encoder(default=str)
    return str(_encoder(row))


class _ExactBytes:
    """A text sink that writes UTF-8 to a binary stream, with every byte that was not UTF-8
    (read as a surrogate escape) written as that byte: CSV is for machines, and an id of
    bytes ff fe must come out as those two bytes, not as escapes."""

    def __init__(self, stream: IO[str], raw: Any) -> None:
        self.stream, self.raw = stream, raw

    def write(self, text: str) -> int:
        try:
            data = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate no byte decodes to: shown escaped
            data = text.encode("utf-8", "backslashreplace")
        self.raw.write(data)
        return len(text)

    def flush(self) -> None:
        self.raw.flush()


def _exact(stream: IO[str]) -> IO[str] | _ExactBytes:
    """``stream`` as an :class:`_ExactBytes` sink when it has a binary buffer (stdout, a
    file); an in-memory text stream (an in-process caller) keeps the text as it is."""
    raw = getattr(stream, "buffer", None)
    if raw is None:
        return stream
    stream.flush()  # what was written as text goes first
    return _ExactBytes(stream, raw)


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
            text, was_cut = _cell(column, row)
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


class RowWriter:
    """Writes rows one at a time; streaming formats never hold more than one row. ``table``
    and ``wide`` hold every row to size the columns, unless ``streamed``
    (:class:`StreamedTable`)."""

    def __init__(
        self,
        columns: Sequence[Column],
        fmt: str,
        *,
        stream: IO[str] | None = None,
        title: str | None = None,
        streamed: bool = False,
    ) -> None:
        self.columns = columns
        self.fmt = fmt
        self.out = stream or sys.stdout
        self.title = title
        self.count = 0
        self._buffer: list[dict[str, Any]] = []
        self._csv: Any = None
        self._streamed: StreamedTable | None = None
        if fmt == "json":
            self.out.write("[")
        elif fmt == "csv":
            import csv

            keys = [c.key for c in columns]
            self._csv = csv.DictWriter(
                _exact(self.out), fieldnames=keys, extrasaction="ignore", lineterminator="\n"
            )
            self._csv.writeheader()
        elif fmt in ("table", "wide") and streamed:
            self._streamed = StreamedTable(columns, self.out, wide=fmt == "wide")

    def write(self, row: dict[str, Any]) -> None:
        """Write one row now (json, jsonl, csv, a streamed table) or keep it for the table
        drawn by :meth:`close`."""
        if self.fmt == "jsonl":
            self.out.write(_encode(row) + "\n")
        elif self.fmt == "json":
            prefix = "," if self.count else ""
            self.out.write(prefix + "\n  " + _encode(row))
        elif self._csv is not None:
            self._csv.writerow({k: "" if v is None else v for k, v in row.items()})
        elif self._streamed is not None:
            self._streamed.add(row)
        else:
            self._buffer.append(row)
        self.count += 1

    def write_many(self, rows: list[dict[str, Any]]) -> None:
        """Several rows at once (one write call for jsonl: the bulk listing hot path)."""
        if self.fmt == "jsonl":
            if rows:
                self.out.write("\n".join(map(_encode, rows)) + "\n")
                self.count += len(rows)
            return
        for row in rows:
            self.write(row)

    def close(self) -> int:
        """Finish the output (close the JSON array, draw the table); returns the rows
        written. Cells cut in a table are counted in one line on stderr."""
        notes: list[str] = []
        if self.fmt == "json":
            self.out.write("\n]\n" if self.count else "]\n")
        elif self._streamed is not None:
            cut = self._streamed.close()
            if cut:
                notes.append(cut_note(cut))
        elif self.fmt in ("table", "wide"):
            table = build_table(
                self._buffer, self.columns, wide=self.fmt == "wide", title=self.title, notes=notes
            )
            self._buffer = []
            print_table(table, self.out, notes)
        self.out.flush()
        for note in notes:
            sys.stderr.write(note + "\n")
        return self.count


def render(
    rows: Iterable[dict[str, Any]],
    columns: Sequence[Column],
    fmt: str,
    *,
    stream: IO[str] | None = None,
    title: str | None = None,
) -> int:
    """Write ``rows`` to ``stream`` (stdout) in ``fmt``; returns how many rows were written."""
    writer = RowWriter(columns, fmt, stream=stream, title=title)
    for row in rows:
        writer.write(row)
    return writer.close()


def render_object(obj: dict[str, Any], fmt: str, *, stream: IO[str] | None = None) -> None:
    """One object (``show``, summaries): JSON for machines, key/value lines for people."""
    import csv
    import json

    out = stream or sys.stdout
    if fmt in ("json", "jsonl"):
        indent = 2 if fmt == "json" else None
        out.write(json.dumps(obj, ensure_ascii=False, indent=indent, default=str) + "\n")
    elif fmt == "csv":
        writer = csv.writer(_exact(out), lineterminator="\n")
        writer.writerow(["key", "value"])
        for key, value in _flatten(obj):
            writer.writerow([key, value])
    else:
        from wsctl.shell import clip, word

        # values as shell words (an id holding byte ff reads $'..\xff', never like the text
        # "\xff"), cut like table cells: a 20 KB instance id was a 20 KB line
        items: list[tuple[str, str]] = []
        cut = 0
        for key, value in _flatten(obj, human=True):
            shown = word(value[: TEXT_MAX + 1])
            if len(shown) > TEXT_MAX:
                shown, cut = clip(shown, TEXT_MAX, len(value)), cut + 1
            items.append((printable(key), shown))
        width = max((len(k) for k, _ in items), default=0)
        for key, shown in items:
            out.write(f"{key.ljust(width)}  {shown}".rstrip() + "\n")
        if cut:
            out.flush()
            sys.stderr.write(cut_note(cut) + "\n")
    out.flush()


def print_cluster(cluster: dict[str, Any] | None, per_node: dict[str, int]) -> None:
    """The cluster's primaries, replicas and entries per primary (a single node: its entry
    count) as text lines on stdout, after an instance listing or doctor's table."""
    from wsctl.durations import counted

    if cluster:
        primaries = cluster["primaries"]
        sys.stdout.write(
            f"cluster: {len(primaries)} primaries, {cluster['replica_count']} replicas, "
            f"{cluster['uncovered_slots']} uncovered slots\n"
        )
        for p in primaries:
            replicas = ", ".join(
                r["node"] + (" (failed)" if r["failed"] else "") for r in p["replicas"]
            )
            sys.stdout.write(
                f"  primary {p['node']}{' (failed)' if p['failed'] else ''}: {p['slots']} slots, "
                f"{counted(per_node.get(p['node'], 0), 'entry', 'entries')}; "
                f"replicas: {replicas or 'none'}\n"
            )
    elif per_node:
        for node, count in per_node.items():
            sys.stdout.write(f"redis {node}: {counted(count, 'entry', 'entries')}\n")


def human_value(value: Any) -> str:
    """A value as a person reads it: ``-`` for none, lists as comma-separated items (never a
    Python repr), booleans as yes/no."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        if not value:
            return "-"
        return ", ".join(_encode(v) if isinstance(v, dict) else human_value(v) for v in value)
    return str(value)


def _flatten(
    obj: dict[str, Any], prefix: str = "", *, human: bool = False
) -> list[tuple[str, str]]:
    """Key/value pairs of a nested object. ``human`` (the table a person reads): seconds
    (keys ending ``_s``) as durations (``1h00m``, ``in 59m59s``), and a list of objects as one
    line per object (``line 2, robot_id x, reason ...``), never a JSON blob in a cell."""
    from wsctl.durations import human_duration

    items: list[tuple[str, str]] = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            items.extend(_flatten(value, name + ".", human=human))
        elif (
            human
            and key.endswith("_s")
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            items.append((name, human_duration(value)))
        elif human and isinstance(value, list) and value and isinstance(value[0], dict):
            for i, item in enumerate(value):
                line = ", ".join(f"{k} {human_value(v)}" for k, v in item.items())
                items.append((name if i == 0 else "", line))
        else:
            items.append((name, human_value(value)))
    return items
