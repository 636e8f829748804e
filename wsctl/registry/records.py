"""JSONL records of registry entries (export, import, backups). Pure: no I/O.

One line per entry: ``{"robot_id": ..., "fields": {...}}``; backups add ``reason`` and
``removed_at``, and for a key that is not a hash its type and value (``key_type`` and
``dump``, the base64 of Redis's DUMP payload, restored with RESTORE). Import validates every
line before anything is written.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from wsctl.errors import UsageError
from wsctl.jsonenc import make_encoder
from wsctl.registry.keys import validate_id
from wsctl.registry.model import Entry
from wsctl.shell import quoted

__all__ = [
    "MAX_BAD_LINES",
    "MAX_BAD_LINES_SHOWN",
    "Check",
    "Record",
    "Unrestorable",
    "Validation",
    "dumps",
    "entry_record",
    "iter_records",
    "parse_line",
    "validate_lines",
]

MAX_BAD_LINES_SHOWN = 10
# A file with this many bad lines is not an export or a backup: reading stops there (an
# endless stream of bad lines, ``yes | wsctl registry import -``, fails at once).
MAX_BAD_LINES = 1000


@dataclass(frozen=True, slots=True)
class Record:
    """One line of a JSONL export or backup, validated: what import writes back."""

    robot_id: str
    fields: dict[str, str]
    line: int = 0
    key_type: str = "hash"
    dump: bytes | None = None  # a key that is not a hash: its DUMP payload


class Unrestorable(ValueError):
    """A well-formed line that cannot be written back (a backup of a key that is not a hash,
    written without its value): reported and skipped, never a reason to restore nothing."""


def entry_record(entry: Entry, **extra: Any) -> dict[str, Any]:
    """The JSON object for one entry (hash fields verbatim, so a restore is exact; a key of
    another type with its DUMP payload when it was read)."""
    record: dict[str, Any] = {"robot_id": entry.robot_id, "fields": dict(entry.fields)}
    if entry.key_type != "hash":
        record["key_type"] = entry.key_type
        if entry.dump is not None:
            raw = entry.dump.encode("utf-8", "surrogateescape")
            record["dump"] = base64.b64encode(raw).decode("ascii")
    record.update(extra)
    return record


dumps: Callable[[Mapping[str, Any]], str] = make_encoder(compact=True)
"""One record as a compact JSON line (UTF-8 kept as is)."""


def parse_line(text: str, line: int, *, registry_ids: bool = False) -> Record | None:
    """Parse one JSONL line; blank lines give None; anything wrong raises ValueError.

    ``registry_ids``: the line is what a registry held (a backup, an export written back with
    ``--allow-malformed``), so its robot id and field names are data to put back byte-exact
    (empty, over 256 bytes, control characters, bytes that are not UTF-8 as \\udcXX escapes);
    otherwise the id must be one ``registry set`` would accept.
    """
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
    if registry_ids:
        _check_bytes(robot_id, "robot id")
    else:
        try:
            validate_id(robot_id)
        except UsageError as exc:
            raise ValueError(exc.message) from None
    key_type = obj.get("key_type", "hash")
    if key_type != "hash":
        if not isinstance(key_type, str) or not key_type:
            raise ValueError("key_type must be a string")
        dump = obj.get("dump")
        if dump is None:
            raise Unrestorable(f"a {key_type} key backed up without its value")
        try:
            payload = base64.b64decode(dump, validate=True) if isinstance(dump, str) else None
        except (binascii.Error, ValueError):
            payload = None
        if not payload:
            raise ValueError("dump is not base64 of a DUMP payload")
        return Record(robot_id, {}, line, key_type, payload)
    if not isinstance(fields, dict) or not fields:
        raise ValueError("fields missing, empty or not an object")
    bad = [k for k, v in fields.items() if not isinstance(v, str) or not (k or registry_ids)]
    if bad:
        raise ValueError(f"field {quoted(bad[0])} is not a non-empty name with a string value")
    if registry_ids:
        for name, value in fields.items():
            _check_bytes(name, "field name")
            _check_bytes(value, f"field {quoted(name)}")
    return Record(robot_id, dict(fields), line)


def _check_bytes(text: str, what: str) -> None:
    """Refuse text that maps to no bytes: a lone surrogate that is not one of the \\udc80-
    \\udcff escapes of a byte that was not UTF-8 (no registry can have held it)."""
    try:
        text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {text!r} is not text Redis could have held") from None


Check = Callable[[Record], list[str]]
"""Problems of one record beyond its syntax (what ``registry set`` would refuse)."""


@dataclass
class Validation:
    """What a validation pass found: records to write, lines to skip, and why."""

    count: int = 0
    unrestorable: list[dict[str, Any]] = field(default_factory=list)
    superseded: dict[int, int] = field(default_factory=dict)  # line -> the later line

    @property
    def skip(self) -> set[int]:
        """The line numbers import leaves out: unrestorable lines and lines a later line
        for the same robot supersedes."""
        return {item["line"] for item in self.unrestorable} | set(self.superseded)


def validate_lines(
    lines: Iterable[str],
    source: str,
    check: Check | None = None,
    *,
    last_wins: bool = False,
    registry_ids: bool = False,
    partial: bool = False,
) -> Validation:
    """Check every line, keeping only robot ids (duplicates are found across the file).

    Returns what will be written, or raises one UsageError listing the bad lines (with line
    numbers): syntax, ``check``'s problems, and a robot given twice; with ``last_wins`` (a
    backup appended by several reaps) the last line of a robot wins and earlier ones are
    reported as superseded. Unrestorable lines are reported, not fatal; with ``partial`` (a
    restore: put back all it can) a bad line is reported the same way instead of failing the
    whole file. ``registry_ids``: see :func:`parse_line`. Reading stops at the
    :data:`MAX_BAD_LINES`-th bad or unrestorable line (a UsageError saying where).
    """
    result = Validation()
    errors: list[str] = []
    seen: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        if len(errors) + len(result.unrestorable) >= MAX_BAD_LINES:
            shown = "; ".join(
                errors[:MAX_BAD_LINES_SHOWN]
                or [f"{source}:{u['line']}: {u['reason']}" for u in result.unrestorable[:1]]
            )
            raise UsageError(
                f"{MAX_BAD_LINES} bad line(s) before line {number}, stopped reading (not an "
                f"export or a backup?), nothing imported: {shown}"
            )
        try:
            record = parse_line(text, number, registry_ids=registry_ids)
        except ValueError as exc:
            if partial or isinstance(exc, Unrestorable):
                robot = _robot_of(text)
                result.unrestorable.append({"line": number, "robot_id": robot, "reason": str(exc)})
            else:
                errors.append(f"{source}:{number}: {exc}")
            continue
        if record is None:
            continue
        problems = check(record) if check is not None and record.key_type == "hash" else []
        if problems:
            errors.append(f"{source}:{number}: {'; '.join(problems)}")
            continue
        earlier = seen.get(record.robot_id)
        if earlier is not None:
            if not last_wins:
                errors.append(
                    f"{source}:{number}: robot {quoted(record.robot_id)} already on line {earlier}"
                )
                continue
            result.superseded[earlier] = number
            result.count -= 1
        seen[record.robot_id] = number
        result.count += 1
    if errors:
        shown = "; ".join(errors[:MAX_BAD_LINES_SHOWN])
        more = len(errors) - MAX_BAD_LINES_SHOWN
        raise UsageError(
            f"{len(errors)} bad line(s), nothing imported: {shown}"
            + (f"; and {more} more" if more > 0 else "")
        )
    return result


def _robot_of(text: str) -> str | None:
    try:
        robot = json.loads(text).get("robot_id")
    except (ValueError, AttributeError):
        return None
    return robot if isinstance(robot, str) else None


def iter_records(
    lines: Iterable[str], skip: set[int] | None = None, *, registry_ids: bool = False
) -> Iterator[Record]:
    """Records of already validated lines (see :func:`validate_lines`, with the same
    ``registry_ids``), one at a time, leaving out the line numbers in ``skip``."""
    for number, text in enumerate(lines, start=1):
        if skip and number in skip:
            continue
        record = parse_line(text, number, registry_ids=registry_ids)
        if record is not None:
            yield record
