"""JSONL records of registry entries (export, import, backups). Pure: no I/O.

One line per entry: ``{"robot_id": ..., "fields": {...}}``; backups add ``reason`` and
``removed_at``. Import validates every line before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from wsctl.errors import UsageError
from wsctl.jsonenc import make_encoder
from wsctl.registry.keys import validate_id
from wsctl.registry.model import Entry

MAX_BAD_LINES_SHOWN = 10


@dataclass(frozen=True, slots=True)
class Record:
    robot_id: str
    fields: dict[str, str]
    line: int = 0


def entry_record(entry: Entry, **extra: Any) -> dict[str, Any]:
    """The JSON object for one entry (hash fields verbatim, so a restore is exact)."""
    record: dict[str, Any] = {"robot_id": entry.robot_id, "fields": dict(entry.fields)}
    if entry.key_type != "hash":
        record["key_type"] = entry.key_type
    record.update(extra)
    return record


dumps: Callable[[Mapping[str, Any]], str] = make_encoder(compact=True)
"""One record as a compact JSON line (UTF-8 kept as is)."""


def parse_line(text: str, line: int) -> Record | None:
    """Parse one JSONL line; blank lines give None; anything wrong raises ValueError."""
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    robot_id = obj.get("robot_id")
    fields = obj.get("fields")
    if not isinstance(robot_id, str):
        raise ValueError("robot_id missing or not a string")
    try:
        validate_id(robot_id)
    except UsageError as exc:
        raise ValueError(exc.message) from None
    if obj.get("key_type", "hash") != "hash":
        raise ValueError(f"key_type {obj['key_type']!r} cannot be imported (only hashes)")
    if not isinstance(fields, dict) or not fields:
        raise ValueError("fields missing, empty or not an object")
    bad = [k for k, v in fields.items() if not isinstance(v, str) or not k]
    if bad:
        raise ValueError(f"field {bad[0]!r} is not a non-empty name with a string value")
    return Record(robot_id, dict(fields), line)


def validate_lines(lines: Iterable[str], source: str) -> int:
    """Check every line without keeping any; returns the record count, or raises one
    UsageError listing the bad lines (with line numbers)."""
    count = 0
    errors: list[str] = []
    for number, text in enumerate(lines, start=1):
        try:
            record = parse_line(text, number)
        except ValueError as exc:
            errors.append(f"{source}:{number}: {exc}")
            continue
        count += record is not None
    if errors:
        shown = "; ".join(errors[:MAX_BAD_LINES_SHOWN])
        more = len(errors) - MAX_BAD_LINES_SHOWN
        raise UsageError(
            f"{len(errors)} bad line(s), nothing imported: {shown}"
            + (f"; and {more} more" if more > 0 else "")
        )
    return count


def iter_records(lines: Iterable[str]) -> Iterator[Record]:
    """Records of already validated lines (see :func:`validate_lines`), one at a time."""
    for number, text in enumerate(lines, start=1):
        record = parse_line(text, number)
        if record is not None:
            yield record


def parse_lines(lines: Iterable[str], source: str) -> list[Record]:
    """Validate and parse lines held in memory (stdin): all records, or one UsageError."""
    held = list(lines)
    validate_lines(held, source)
    return list(iter_records(held))
