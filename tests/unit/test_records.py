"""JSONL records: validation with line numbers, nothing partial."""

from __future__ import annotations

import json

import pytest

from wsctl.errors import UsageError
from wsctl.registry.records import parse_lines


def test_blank_lines_are_skipped_and_records_keep_line_numbers() -> None:
    lines = ["", json.dumps({"robot_id": "r1", "fields": {"a": "b"}, "reason": "rm"}), "  "]
    (record,) = list(parse_lines(lines, "f"))
    assert record.robot_id == "r1" and record.line == 2 and record.fields == {"a": "b"}


def test_every_bad_line_is_reported_at_once() -> None:
    lines = [
        "{",
        json.dumps({"robot_id": "x", "fields": {}}),
        json.dumps({"robot_id": "y", "fields": {"a": "b"}, "key_type": "list"}),
    ]
    with pytest.raises(UsageError) as info:
        list(parse_lines(lines, "dump.jsonl"))
    text = str(info.value)
    assert "3 bad line(s)" in text and "dump.jsonl:1" in text and "dump.jsonl:3" in text
