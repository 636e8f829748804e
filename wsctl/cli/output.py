"""One renderer for every listing: ``table``, ``wide``, ``json``, ``jsonl`` and ``csv``.

``jsonl``, ``csv`` and ``json`` stream row by row (memory stays flat for any registry size);
``table``/``wide`` need all rows to size columns, so they are for human-sized listings (use
``--limit``). Rows are dictionaries with stable snake_case keys; the machine formats carry every
key, the table shows the columns chosen for it. Colour only on a terminal, never with NO_COLOR.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = [
    "FORMATS",
    "UNWRAPPED",
    "WRAP_MIN",
    "Column",
    "RowWriter",
    "build_table",
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


def _cell(column: Column, row: dict[str, Any]) -> str:
    value = row.get(column.key)
    if column.fmt is not None:
        return printable(column.fmt(value))
    if value is None:
        return "-"
    return printable(str(value))


def printable(text: str) -> str:
    """``text`` with every character that is not printable escaped (``\\x1b``, ``\\n``,
    ``\\u202e``, ``\\ufeff``): registry data is untrusted, and anything printed for a person
    goes through here. Python's rule (``str.isprintable``) covers C0/C1 controls (escape
    sequences set the window title, clear the screen, fake output), format characters
    (bidirectional overrides that make text read differently from what it is, zero-width
    spaces and BOMs that make two ids look alike), separators other than the space, and lone
    surrogates (bytes that were not UTF-8)."""
    if text.isprintable():  # the common case, in C
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
        for ch in text
    )


# A wrapping column is never narrower than its longest word, up to this many characters.
WRAP_MIN = 30
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


_TRAILING = None


def print_table(table: Table, stream: IO[str] | None = None) -> None:
    """Print a table without trailing padding on any line (rich pads every cell and the
    blank lines around the table to the table's width)."""
    import io
    import re

    global _TRAILING
    if _TRAILING is None:
        _TRAILING = re.compile(r"[ ]+((?:\x1b\[[0-9;]*m)*)$", re.M)
    out = stream or sys.stdout
    console = make_console(out)
    buffer = io.StringIO()
    console.file = buffer
    # columns that must not wrap (ids, states, ages) are never dropped or cut to fit COLUMNS:
    # the table is then as wide as they need (build_table's min_width), and no wider
    if table.min_width and table.min_width > console.width:
        console.width = table.min_width
    console.print(table)
    out.write(_fit_rules(_TRAILING.sub(r"\1", buffer.getvalue())))


_ANSI = None


def _fit_rules(text: str) -> str:
    """Cut the header rule (``───``) to the widest other line: rich draws it across the
    width it gave the table, wider than the rows once a wrapped column's padding is gone."""
    import re

    global _ANSI
    if _ANSI is None:
        _ANSI = re.compile(r"\x1b\[[0-9;]*m")
    lines = text.split("\n")
    visible = [_ANSI.sub("", line) for line in lines]
    is_rule = [bool(v.strip()) and set(v.strip()) == {"─"} for v in visible]
    widest = max((len(v) for v, rule in zip(visible, is_rule, strict=True) if not rule), default=0)
    for i, (v, rule) in enumerate(zip(visible, is_rule, strict=True)):
        extra = len(v) - widest
        if rule and extra > 0 and widest > 0:
            head, _, tail = lines[i].rpartition("─" * extra)
            lines[i] = head + tail
    return "\n".join(lines)


def build_table(
    rows: Iterable[dict[str, Any]], columns: Sequence[Column], *, wide: bool, title: str | None
) -> Table:
    """A rich Table of ``rows`` in ``columns`` (the wide-only ones when ``wide``), cells
    escaped for the terminal."""
    from rich import box
    from rich.table import Table

    shown = [c for c in columns if wide or not c.wide_only]
    table = Table(
        box=box.SIMPLE_HEAD,
        title=printable(title) if title else None,
        title_justify="left",
        pad_edge=False,
    )
    held = list(rows)
    texts = [[_cell(column, row) for column in shown] for row in held]
    # the narrowest this table can be: every column at its least width, plus (box SIMPLE_HEAD,
    # no edge padding) one space on each side of every inner edge and a separator per edge
    needed = 3 * len(shown) - 1
    for i, column in enumerate(shown):
        # ids, states and ages are never broken across lines: only free text (reasons,
        # details) wraps, at word boundaries
        if column.wrap:
            words = (word for cells in texts for word in cells[i].split())
            least = min(max((len(w) for w in words), default=0), WRAP_MIN)
        else:
            least = max((len(cells[i]) for cells in texts), default=0)
        least = max(least, len(column.header))
        needed += least
        table.add_column(
            column.header,
            justify=column.justify,  # type: ignore[arg-type]
            overflow="fold",
            no_wrap=not column.wrap,
            min_width=None if column.wrap else least,
        )
    table.min_width = needed
    for row, cells in zip(held, texts, strict=True):
        styled = []
        for column, text in zip(shown, cells, strict=True):
            style = column.style(row) if column.style else None
            styled.append(f"[{style}]{_escape(text)}[/]" if style else _escape(text))
        table.add_row(*styled)
    return table


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


_encoder: Any = None


def _encode(row: dict[str, Any]) -> str:
    """One JSON object, UTF-8 kept as is (``json.dumps(row, ensure_ascii=False,
    default=str)``): one reused encoder, as this is the hot path of every jsonl listing."""
    global _encoder
    if _encoder is None:
        from wsctl.jsonenc import make_encoder

        _encoder = make_encoder(default=str)
    return str(_encoder(row))


class RowWriter:
    """Writes rows one at a time; streaming formats never hold more than one row."""

    def __init__(
        self,
        columns: Sequence[Column],
        fmt: str,
        *,
        stream: IO[str] | None = None,
        title: str | None = None,
    ) -> None:
        self.columns = columns
        self.fmt = fmt
        self.out = stream or sys.stdout
        self.title = title
        self.count = 0
        self._buffer: list[dict[str, Any]] = []
        self._csv: Any = None
        if fmt == "json":
            self.out.write("[")
        elif fmt == "csv":
            import csv

            keys = [c.key for c in columns]
            self._csv = csv.DictWriter(
                self.out, fieldnames=keys, extrasaction="ignore", lineterminator="\n"
            )
            self._csv.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        """Write one row now (json, jsonl, csv) or keep it for the table drawn by
        :meth:`close`."""
        if self.fmt == "jsonl":
            self.out.write(_encode(row) + "\n")
        elif self.fmt == "json":
            prefix = "," if self.count else ""
            self.out.write(prefix + "\n  " + _encode(row))
        elif self._csv is not None:
            self._csv.writerow({k: "" if v is None else v for k, v in row.items()})
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
        """Finish the output (close the JSON array, draw the table); returns the rows written."""
        if self.fmt == "json":
            self.out.write("\n]\n" if self.count else "]\n")
        elif self.fmt in ("table", "wide"):
            table = build_table(
                self._buffer, self.columns, wide=self.fmt == "wide", title=self.title
            )
            print_table(table, self.out)
            self._buffer = []
        self.out.flush()
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
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["key", "value"])
        for key, value in _flatten(obj):
            writer.writerow([key, value])
    else:
        items = [(printable(k), printable(v)) for k, v in _flatten(obj, human=True)]
        width = max((len(k) for k, _ in items), default=0)
        for key, value in items:
            out.write(f"{key.ljust(width)}  {value}".rstrip() + "\n")
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
