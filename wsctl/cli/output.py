"""One renderer for every listing: ``table``, ``wide``, ``json``, ``jsonl`` and ``csv``.

``jsonl``, ``csv`` and ``json`` stream row by row (memory stays flat for any registry size);
``table``/``wide`` need all rows to size columns, so they are for human-sized listings (use
``--limit``). Rows are dictionaries with stable snake_case keys; the machine formats carry every
key, the table shows the columns chosen for it (:mod:`wsctl.cli.tables` draws it, with cells
shown as :mod:`wsctl.cli.columns` says). Colour only on a terminal, never with NO_COLOR.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import IO, Any

from wsctl.cli.columns import TEXT_MAX, Column, cut_note, printable
from wsctl.cli.tables import StreamedTable, build_table, print_table

__all__ = [
    "FORMATS",
    "TABLE_ROWS",
    "RowWriter",
    "human_value",
    "print_cluster",
    "render",
    "render_object",
]

FORMATS = ("table", "wide", "json", "jsonl", "csv")

# Tables show at most this many rows unless --limit says otherwise (listings, fan-out
# --dry-run): rendering 200k rows took 100 s and 1 GiB. jsonl and csv stream everything in
# flat memory.
TABLE_ROWS = 1000


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
