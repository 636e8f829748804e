"""The one renderer: streaming formats, CSV quoting, JSON validity, no colour when piped."""

from __future__ import annotations

import csv
import io
import json

import pytest

from wsctl.cli.columns import Column
from wsctl.cli.output import render, render_object
from wsctl.durations import human_duration

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
        "in 4s",
    ]


def test_human_duration_of_years_and_of_the_far_future() -> None:
    """Review found ``-2912112d14h`` for a heartbeat in year 9999."""
    assert human_duration(251_607_000_000) == "7978y148d"
    assert human_duration(-251_607_000_000) == "in 7978y148d"
    assert human_duration(400 * 86400) == "1y035d"


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


EVIL = "ok\x1b]0;pwned\x07\x1b[2J"


def test_every_human_readable_rendering_escapes_control_characters() -> None:
    from wsctl.cli.columns import printable

    rows = [{"robot_id": EVIL, "age": "a\u202eb\nc"}]
    for fmt in ("table", "wide"):
        out = io.StringIO()
        render(rows, COLUMNS, fmt, stream=out, title=EVIL)
        text = out.getvalue()
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
        assert "ok\\x1b]0;pwned\\x07\\x1b[2J" in text
    out = io.StringIO()
    render_object({EVIL: EVIL, "fields": {"status": EVIL}}, "table", stream=out)
    assert "\x1b" not in out.getvalue() and out.getvalue().count("\\x1b[2J") == 3
    assert printable("机器人 café") == "机器人 café"
    assert printable("a\udcffb") == "a\\xffb"  # the byte, as bash's $'...' spells it
    # machine formats stay exact (JSON escapes control characters itself)
    out = io.StringIO()
    render(rows, COLUMNS, "jsonl", stream=out)
    assert json.loads(out.getvalue())["robot_id"] == EVIL


def test_diagnostics_on_stderr_escape_control_characters(capsys) -> None:  # type: ignore[no-untyped-def]
    from wsctl.cli.common import err

    err(f"robot {EVIL} gone\nforged line")
    assert capsys.readouterr().err == "robot ok\\x1b]0;pwned\\x07\\x1b[2J gone\\x0aforged line\n"


def test_tables_honour_columns_have_no_trailing_padding_and_keep_ids_whole(
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    columns = [Column("robot_id", "ROBOT"), Column("reason", "REASON", wrap=True)]
    rows = [
        {"robot_id": "robot-with-a-long-id-0001", "reason": "word " * 30},
        {"robot_id": "r2", "reason": "short"},
    ]
    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()
    render(rows, columns, "table", stream=out)
    lines = out.getvalue().splitlines()
    assert all(line == line.rstrip() for line in lines)
    assert max(len(line) for line in lines) < 250  # piped: no padding to a fixed width
    assert any(("word " * 30).strip() in line for line in lines)  # piped: not wrapped
    monkeypatch.setenv("COLUMNS", "60")
    out = io.StringIO()
    render(rows, columns, "table", stream=out)
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 60 and line == line.rstrip() for line in lines)
    assert sum("robot-with-a-long-id-0001" in line for line in lines) == 1  # never broken
    words = {w for line in lines[3:] for w in line.split()}
    assert words == {"robot-with-a-long-id-0001", "word", "r2", "short"}  # no word broken
    monkeypatch.setenv("COLUMNS", "20")  # narrower than the ids: ids stay whole anyway
    out = io.StringIO()
    render(rows, columns, "table", stream=out)
    assert "robot-with-a-long-id-0001" in out.getvalue()


def test_render_object_shows_lists_and_booleans_for_people() -> None:
    out = io.StringIO()
    render_object({"ids": ["robot-8", "robot-9"], "none": [], "ok": False}, "table", stream=out)
    text = out.getvalue()
    assert "robot-8, robot-9" in text and "['" not in text and "ok    no" in text


def test_suggested_commands_are_shell_quoted() -> None:
    import shlex

    from wsctl.shell import command, quote

    assert command("wsctl", "reap", "--instance", "gw a;touch /tmp/PWNED") == (
        "wsctl reap --instance 'gw a;touch /tmp/PWNED'"
    )
    assert shlex.split(command("wsctl", "rm", "it's")) == ["wsctl", "rm", "it's"]
    assert quote(EVIL) == "$'ok\\x1b]0;pwned\\x07\\x1b[2J'"
    assert quote("a'b\\c\n") == "$'a\\'b\\\\c\\x0a'"


@pytest.mark.parametrize(
    "robot_id",
    [
        "ok\x1b]0;pwned\x07\x1b[2J",
        "c1-\x9b-control",  # U+009B: UTF-8 bytes c2 9b, not the byte 9b
        "bidi-\u202e-rlo",
        "not-utf8-\udcff\udcfe",  # bytes ff fe read with surrogateescape
        "mixed-é-\x00-'q'-\\-\x7f-\u2028",
        "hex-after-\x07abc",  # \x07 then literal abc
    ],
)
def test_a_quoted_id_runs_through_bash_as_the_ids_own_bytes(robot_id: str) -> None:
    import subprocess

    from wsctl.shell import quote

    if "\x00" in robot_id:  # no argv can carry NUL; bash cuts $'\x00' short
        robot_id = robot_id.replace("\x00", "")
    expected = robot_id.encode("utf-8", "surrogateescape")
    out = subprocess.run(
        ["bash", "-c", f"printf %s {quote(robot_id)}"],
        capture_output=True,
        timeout=10,
        env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0 and out.stdout == expected
    out = subprocess.run(
        ["bash", "-c", f"printf %s {quote(robot_id)}"],
        capture_output=True,
        timeout=10,
        env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout == expected


def test_the_header_rule_is_never_wider_than_the_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrapped column left the rule wider than every row once trailing padding was cut
    (`reap --dry-run` at COLUMNS=60: a 59-column rule over 56-column rows)."""
    rows = [
        {
            "robot_id": f"robot-{i}",
            "instance_id": "gw-a",
            "reason": "stale_heartbeat",
            "detail": "no heartbeat for 6y332d",
        }
        for i in range(3)
    ]
    cols = [
        Column("robot_id", "ROBOT"),
        Column("instance_id", "INSTANCE"),
        Column("reason", "REASON"),
        Column("detail", "DETAIL", wrap=True),
    ]
    for columns in range(20, 101):
        monkeypatch.setenv("COLUMNS", str(columns))
        render(rows, cols, "table")
        lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
        rule = next(line for line in lines if "─" in line)
        widest = max(len(line) for line in lines if "─" not in line)
        assert len(rule) <= widest, (columns, rule, widest)


def test_invisible_format_characters_are_escaped_so_look_alike_ids_differ() -> None:
    """A BOM or a zero-width space makes ``robot-1`` and ``\\ufeffrobot-1`` print alike; both
    are format characters (Unicode category Cf) and are escaped like controls."""
    from wsctl.cli.columns import printable

    assert printable("\ufeffrobot-1") == "\\xef\\xbb\\xbfrobot-1"  # its UTF-8 bytes
    assert printable("robot\u200b-1") == "robot\\xe2\\x80\\x8b-1"
    assert printable("a\u00adb") == "a\\xc2\\xadb"  # soft hyphen: invisible in most terminals
    assert printable("robot 1") == "robot 1"  # the space stays


class _Terminal(io.StringIO):
    """A stream that says it is a terminal, so rich colours what it writes."""

    def isatty(self) -> bool:
        return True


def _visible(line: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", line)


def test_no_line_of_a_table_ends_in_spaces_on_a_terminal_even_inside_colour_codes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a terminal rich pads a bold header cell inside its colour codes (``DETAIL   \\x1b[0m
    ``): the headers of `events` and `history` ended in spaces."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("NO_COLOR", raising=False)
    columns = [Column("robot_id", "ROBOT"), Column("detail", "DETAIL", wrap=True)]
    rows = [{"robot_id": "r-1", "detail": "short"}, {"robot_id": "r-2", "detail": "longer " * 9}]
    out = _Terminal()
    render(rows, columns, "table", stream=out)
    text = out.getvalue()
    assert "\x1b[" in text  # coloured: written as to a terminal
    for line in text.splitlines():
        assert _visible(line) == _visible(line).rstrip(), repr(line)


def test_cells_longer_than_the_cut_end_with_a_marker_and_an_escape_is_never_cut_in_half() -> None:
    from wsctl.cli.columns import TEXT_MAX, WORD_MAX
    from wsctl.shell import clip

    out = io.StringIO()
    rows = [{"robot_id": "r" * 10_000, "reason": "w " * 20_000}]
    columns = [Column("robot_id", "ROBOT"), Column("reason", "REASON", wrap=True)]
    render(rows, columns, "table", stream=out)
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) < WORD_MAX + TEXT_MAX + 20
    assert f"{'r' * (WORD_MAX - len('… (10,000 chars)'))}… (10,000 chars)" in out.getvalue()
    assert "… (40,000 chars)" in out.getvalue()
    # a cut that would fall inside \xff keeps the escape whole or drops it
    for limit in range(14, 60):
        head, _, note = clip("ab\\xff\\xfe" * 10, limit, 60).partition("…")
        assert note == " (60 chars)" and len(head) + 1 + len(note) <= limit
        assert all(part[:2] in ("ff", "fe") for part in head.split("\\x")[1:]), head


def test_ids_that_are_not_printable_show_as_shell_words_and_free_text_inline() -> None:
    """A table showed the id of bytes ff fe as ``\\udcff\\udcfe``: now ``$'\\xff\\xfe'``, as
    README's suggested commands spell it (bash gives back those bytes), so the literal text
    ``bad-\\xff`` and the byte ff no longer print alike. Free text escapes the same bytes
    inline."""
    from wsctl.shell import quoted, word

    columns = [Column("robot_id", "ROBOT"), Column("reason", "REASON", wrap=True)]
    rows = [
        {"robot_id": "bad-\udcff\udcfe", "reason": "got \udcff and \x1b[2J"},
        {"robot_id": "bad-\\xff", "reason": "-"},
    ]
    out = io.StringIO()
    render(rows, columns, "table", stream=out)
    text = out.getvalue()
    assert "$'bad-\\xff\\xfe'" in text and "udc" not in text
    assert "got \\xff and \\x1b[2J" in text
    assert " bad-\\xff " in text  # printable text is shown as it is
    assert word("robot-1") == "robot-1" and word("a\u202eb") == "$'a\\xe2\\x80\\xaeb'"
    assert quoted("robot-1") == "'robot-1'" and quoted("it's") == "'it'\"'\"'s'"
    assert quoted("bad-\udcff") == "$'bad-\\xff'"


def test_a_table_too_narrow_for_its_free_text_puts_it_under_each_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    columns = [
        Column("at", "AT"),
        Column("robot_id", "ROBOT"),
        Column("detail", "DETAIL", wrap=True),
    ]
    detail = " ".join(f"word{n}=value-{n:024d}" for n in range(12))  # words longer than 20
    rows = [{"at": "2026-12-07T13:03:31.620Z", "robot_id": "robot-1", "detail": detail}]
    monkeypatch.setenv("COLUMNS", "50")
    out = io.StringIO()
    render(rows, columns, "table", stream=out)
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 50 and line == line.rstrip() for line in lines)
    assert lines[1].split() == ["AT", "ROBOT"]
    assert lines[3].split() == ["2026-12-07T13:03:31.620Z", "robot-1"]
    assert lines[4] == f"     detail: word0=value-{0:024d}"
    assert lines[5] == f"             word1=value-{1:024d}"
    assert " ".join(lines[4:]).count("word") == 12
    rule = next(line for line in lines if "─" in line)
    assert len(rule) <= max(len(line) for line in lines if "─" not in line)
    monkeypatch.setenv("COLUMNS", "200")  # room enough: one table, DETAIL a column
    out = io.StringIO()
    render(rows, columns, "table", stream=out)
    assert out.getvalue().splitlines()[1].split() == ["AT", "ROBOT", "DETAIL"]


def test_a_streamed_table_writes_each_row_as_it_comes() -> None:
    from wsctl.cli.output import RowWriter
    from wsctl.cli.tables import StreamedTable

    columns = [
        Column("robot_id", "ROBOT"),
        Column("outcome", "OUTCOME"),
        Column("reason", "REASON", wrap=True),
    ]
    out = io.StringIO()
    writer = RowWriter(columns, "wide", stream=out, streamed=True)
    for n in range(StreamedTable.BLOCK - 1):
        writer.write({"robot_id": f"r-{n}", "outcome": "delivered", "reason": None})
    assert out.getvalue() == ""  # the first block sizes the columns
    writer.write({"robot_id": "r-last-of-block", "outcome": "timeout", "reason": "no answer"})
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["ROBOT", "OUTCOME", "REASON"] and set(lines[1].strip()) == {"─"}
    assert len(lines) == 2 + StreamedTable.BLOCK
    writer.write({"robot_id": "r-later", "outcome": "rejected", "reason": "too big"})
    assert out.getvalue().splitlines()[-1].split() == ["r-later", "rejected", "too", "big"]
    assert writer.close() == StreamedTable.BLOCK + 1
    widths = {
        line.index("OUTCOME") if "OUTCOME" in line else line.index("delivered")
        for line in lines[:1] + lines[2:-1]
    }
    assert len(widths) == 1  # aligned on the first block


def test_a_narrow_table_leaves_out_optional_columns_rightmost_first_and_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    columns = [
        Column("instance_id", "INSTANCE"),
        Column("state", "STATE"),
        Column("a", "FIRST-OPTIONAL", optional=True),
        Column("b", "SECOND-OPTIONAL", optional=True),
        Column("c", "LAST", optional=True),
    ]
    rows = [{"instance_id": "gateway-instance-1", "state": "alive", "a": 1, "b": 2, "c": 3}]
    monkeypatch.setenv("COLUMNS", "60")
    out = io.StringIO()
    render(rows, columns, "table", stream=out)
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 60 for line in lines)
    assert lines[1].split() == ["INSTANCE", "STATE", "FIRST-OPTIONAL"]
    err = capsys.readouterr().err
    assert err == (
        "wsctl: note: SECOND-OPTIONAL, LAST left out to fit 60 columns; "
        "-o wide, json, jsonl or csv show every column\n"
    )
    monkeypatch.setenv("COLUMNS", "200")  # room enough: every column, no note
    out = io.StringIO()
    render(rows, columns, "table", stream=out)
    assert out.getvalue().splitlines()[1].split()[-1] == "LAST"
    assert capsys.readouterr().err == ""


def test_wide_output_and_required_columns_are_never_left_out(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    columns = [Column("robot_id", "ROBOT"), Column("n", "OPTIONAL-COLUMN", optional=True)]
    rows = [{"robot_id": "r" * 70, "n": 1}]
    monkeypatch.setenv("COLUMNS", "40")
    out = io.StringIO()
    render(rows, columns, "wide", stream=out)  # asked for every column: all of them
    assert "OPTIONAL-COLUMN" in out.getvalue()
    assert capsys.readouterr().err == ""
    out = io.StringIO()
    render(rows, columns, "table", stream=out)  # the id stays whole; the optional one goes
    assert "r" * 70 in out.getvalue() and "OPTIONAL-COLUMN" not in out.getvalue()
    assert "OPTIONAL-COLUMN left out to fit 40 columns" in capsys.readouterr().err
