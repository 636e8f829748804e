"""JSONL records: validation with line numbers, nothing partial; duplicates and keys that are
not hashes."""

from __future__ import annotations

import base64
import json

import pytest

from wsctl.errors import UsageError
from wsctl.registry.model import Entry, utcnow
from wsctl.registry.records import Record, entry_record, iter_records, parse_line, validate_lines


def _records(lines: list[str], **kw) -> list[Record]:  # type: ignore[no-untyped-def]
    found = validate_lines(lines, "f", **kw)
    return list(iter_records(lines, found.skip))


def test_blank_lines_are_skipped_and_records_keep_line_numbers() -> None:
    lines = ["", json.dumps({"robot_id": "r1", "fields": {"a": "b"}, "reason": "rm"}), "  "]
    (record,) = _records(lines)
    assert record.robot_id == "r1" and record.line == 2 and record.fields == {"a": "b"}


def test_every_bad_line_is_reported_at_once() -> None:
    lines = [
        "{",
        json.dumps({"robot_id": "x", "fields": {}}),
        json.dumps({"robot_id": "y", "fields": {}, "key_type": "list", "dump": "!!"}),
    ]
    with pytest.raises(UsageError) as info:
        validate_lines(lines, "dump.jsonl")
    text = str(info.value)
    assert "3 bad line(s)" in text and "dump.jsonl:1" in text and "dump.jsonl:3" in text


def test_a_robot_given_twice_is_a_bad_line_naming_the_first() -> None:
    line = json.dumps({"robot_id": "r1", "fields": {"a": "b"}})
    with pytest.raises(UsageError, match=r"f:3: robot 'r1' already on line 1"):
        validate_lines([line, "", line], "f")


def test_in_a_backup_the_last_line_of_a_robot_wins() -> None:
    first = json.dumps({"robot_id": "r1", "fields": {"n": "1"}})
    second = json.dumps({"robot_id": "r1", "fields": {"n": "2"}})
    found = validate_lines([first, second], "f", last_wins=True)
    assert found.count == 1 and found.superseded == {1: 2}
    (record,) = list(iter_records([first, second], found.skip))
    assert record.fields == {"n": "2"}


def test_check_problems_make_bad_lines() -> None:
    line = json.dumps({"robot_id": "r1", "fields": {"last_heartbeat": "yesterday"}})
    with pytest.raises(UsageError, match="f:1: nope"):
        validate_lines([line], "f", lambda record: ["nope"])


def test_a_key_that_is_not_a_hash_round_trips_with_its_value() -> None:
    payload = b"\x00\x03abc\t\x00\xff\xfe"  # DUMP payloads are binary
    entry = Entry("junk-1", {}, key_type="string", dump=payload.decode("utf-8", "surrogateescape"))
    record = parse_line(json.dumps(entry_record(entry, reason="malformed")), 1)
    assert record is not None and record.key_type == "string" and record.dump == payload
    assert entry_record(entry)["dump"] == base64.b64encode(payload).decode()


def test_a_key_backed_up_without_its_value_is_reported_not_fatal() -> None:
    """Backups written before values were kept: the other lines are still restored."""
    lines = [
        json.dumps({"robot_id": "junk-1", "fields": {}, "key_type": "string"}),
        json.dumps({"robot_id": "r1", "fields": {"a": "b"}}),
    ]
    found = validate_lines(lines, "f")
    assert found.count == 1 and found.unrestorable[0]["robot_id"] == "junk-1"
    assert [r.robot_id for r in iter_records(lines, found.skip)] == ["r1"]


def test_problems_at_is_the_judgement_of_listings() -> None:
    from wsctl.registry.model import problems_at

    now = utcnow()
    good = {"instance_id": "gw", "last_heartbeat": now.isoformat(), "robot_id": "r1"}
    assert problems_at("r1", good, now) == []
    assert problems_at("r1", {**good, "robot_id": "r2"}, now) == [
        "robot_id field 'r2' does not match key"
    ]
    assert (
        "bad last_heartbeat" in problems_at("r1", {**good, "last_heartbeat": "yesterday"}, now)[0]
    )
    future = problems_at("r1", {**good, "last_heartbeat": "9999-12-31T23:59:59+00:00"}, now)
    assert "in the future" in future[0]
    assert problems_at("r1", {"last_heartbeat": now.isoformat()}, now) == ["missing instance_id"]
