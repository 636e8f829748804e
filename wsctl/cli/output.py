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

FORMATS = ("table", "wide", "json", "jsonl", "csv")


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    wide_only: bool = False
    fmt: Callable[[Any], str] | None = None
    style: Callable[[dict[str, Any]], str | None] | None = None
    justify: str = "left"


def _cell(column: Column, row: dict[str, Any]) -> str:
    value = row.get(column.key)
    if column.fmt is not None:
        return column.fmt(value)
    if value is None:
        return "-"
    return str(value)


def make_console(stream: IO[str] | None = None, *, stderr: bool = False) -> Console:
    """A rich console: colour on a TTY unless NO_COLOR; wide lines when piped."""
    from rich.console import Console

    target = stream or (sys.stderr if stderr else sys.stdout)
    is_tty = hasattr(target, "isatty") and target.isatty()
    return Console(
        file=target,
        no_color=bool(os.environ.get("NO_COLOR")) or not is_tty,
        highlight=False,
        soft_wrap=False,
        width=None if is_tty else 250,
    )


def build_table(
    rows: Iterable[dict[str, Any]], columns: Sequence[Column], *, wide: bool, title: str | None
) -> Table:
    from rich import box
    from rich.table import Table

    shown = [c for c in columns if wide or not c.wide_only]
    table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False)
    for column in shown:
        table.add_column(column.header, justify=column.justify, overflow="fold")  # type: ignore[arg-type]
    for row in rows:
        cells = []
        for column in shown:
            text = _cell(column, row)
            style = column.style(row) if column.style else None
            cells.append(f"[{style}]{_escape(text)}[/]" if style else _escape(text))
        table.add_row(*cells)
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
        if self.fmt == "json":
            self.out.write("\n]\n" if self.count else "]\n")
        elif self.fmt in ("table", "wide"):
            table = build_table(
                self._buffer, self.columns, wide=self.fmt == "wide", title=self.title
            )
            make_console(self.out).print(table)
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
        width = max((len(k) for k, _ in _flatten(obj)), default=0)
        for key, value in _flatten(obj):
            out.write(f"{key.ljust(width)}  {value}\n")
    out.flush()


def _flatten(obj: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            items.extend(_flatten(value, name + "."))
        else:
            items.append((name, "-" if value is None else str(value)))
    return items
