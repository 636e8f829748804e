"""The one renderer: streaming formats, CSV quoting, JSON validity, no colour when piped."""

from __future__ import annotations

import csv
import io
import json

from wsctl.cli.output import Column, render, render_object
from wsctl.views import human_duration

COLUMNS = [Column("robot_id", "ROBOT"), Column("age", "AGE", wide_only=True)]
ROWS = [
    {"robot_id": "r,1", "age": 1.5, "extra": None},
    {"robot_id": "机器人", "age": None, "extra": 2},
]


def test_jsonl_is_one_object_per_line_with_every_key() -> None:
    out = io.StringIO()
    assert render(ROWS, COLUMNS, "jsonl", stream=out) == 2
    assert [json.loads(line) for line in out.getvalue().splitlines()] == ROWS


def test_json_is_a_valid_array_even_when_empty() -> None:
    for rows in (ROWS, []):
        out = io.StringIO()
        render(rows, COLUMNS, "json", stream=out)
        assert json.loads(out.getvalue()) == rows


def test_csv_quotes_and_uses_column_keys() -> None:
    out = io.StringIO()
    render(ROWS, COLUMNS, "csv", stream=out)
    assert list(csv.DictReader(io.StringIO(out.getvalue()))) == [
        {"robot_id": "r,1", "age": "1.5"},
        {"robot_id": "机器人", "age": ""},
    ]


def test_table_hides_wide_columns_and_has_no_colour_when_piped() -> None:
    narrow, wide = io.StringIO(), io.StringIO()
    render(ROWS, COLUMNS, "table", stream=narrow)
    render(ROWS, COLUMNS, "wide", stream=wide)
    assert "AGE" not in narrow.getvalue() and "AGE" in wide.getvalue()
    assert "\x1b[" not in narrow.getvalue()


def test_render_object_flattens_nested_keys() -> None:
    out = io.StringIO()
    render_object({"a": 1, "fields": {"b": None}}, "table", stream=out)
    assert "fields.b" in out.getvalue()


def test_human_duration() -> None:
    assert [human_duration(x) for x in (None, 3, 65, 7300, 90000, -4)] == [
        "-",
        "3s",
        "1m05s",
        "2h01m",
        "1d01h",
        "-4s",
    ]


def test_write_many_matches_row_by_row_output() -> None:
    from wsctl.cli.output import RowWriter

    for fmt in ("jsonl", "json", "csv"):
        one, many = io.StringIO(), io.StringIO()
        render(ROWS, COLUMNS, fmt, stream=one)
        writer = RowWriter(COLUMNS, fmt, stream=many)
        writer.write_many(ROWS[:1])
        writer.write_many([])
        writer.write_many(ROWS[1:])
        assert writer.close() == 2 and many.getvalue() == one.getvalue()
