"""How `wsctl top` puts a snapshot into words (wsctl/cli/topview.py) and the alerts' sentences
with hostile ids: bounded lines whatever the width or the id, ids as shell words, suggested
commands quoted. Pure, no Redis."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime, timedelta
from typing import Any

from wsctl.cli.topview import event_cells, registry_lines
from wsctl.ops.summary import InstanceTally
from wsctl.ops.top import (
    AlertKind,
    RateTracker,
    RedisState,
    RegistryPass,
    alerts,
    instance_rows,
    registry_summary,
)
from wsctl.registry.instances import InstanceRecord
from wsctl.registry.model import entry_from_hash, format_ts

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _summary(ages: list[float]) -> dict[str, object]:
    done = RegistryPass(started=NOW, finished=NOW)
    entries = [
        entry_from_hash(
            f"r{i}",
            {"instance_id": "gw-a", "last_heartbeat": format_ts(NOW - timedelta(seconds=age))},
            UTC,
        )
        for i, age in enumerate(ages)
    ]
    done.add(entries, NOW, 90)
    return registry_summary(done, None, {}, set(), NOW, 90)


def test_histogram_bars_stay_short_on_an_unlimited_width() -> None:
    # piped without COLUMNS, --once -o table renders at an unlimited width
    lines = registry_lines(_summary([1, 2, 3, 100]), 100_000)
    assert max(len(line) for line in lines) <= 120, max(len(line) for line in lines)
    assert any("#" in line for line in lines)


def test_registry_counts_read_with_thousands_separators() -> None:
    lines = registry_lines(_summary([1.0] * 1234), 200)
    assert lines[0].startswith("registry: 1,234 entries: 1,234 fresh,"), lines[0]


def _tally(name: str, n: int) -> InstanceTally:
    tally = InstanceTally(name)
    tally.connections = n
    return tally


def test_a_dead_instance_alert_quotes_its_reap_command_for_the_shell() -> None:
    name = "gw a;touch /tmp/PWNED"
    rows = instance_rows({}, set(), RateTracker(), {name: _tally(name, 2)}, {name: 2}, {}, NOW, 90)
    registry = {"on_dead_by_instance": {name: 2}}
    [dead] = alerts(RedisState(ok=True), rows, registry, None, NOW)
    assert dead.kind is AlertKind.DEAD_WITH_ENTRIES
    command = dead.message.split(": ", 1)[1]
    assert shlex.split(command) == ["wsctl", "reap", "--dead-instances", "--instance", name]


def test_alerts_cut_a_huge_instance_id_so_the_sentence_shows() -> None:
    name = "L" * 10_240
    late = InstanceRecord(name, last_seen=format_ts(NOW - timedelta(seconds=1)), connections=3)
    rows = instance_rows({name: late}, set(), RateTracker(), {}, {}, {}, NOW, 90)
    [deaf] = alerts(RedisState(ok=True), rows, {}, None, NOW)
    assert deaf.kind is AlertKind.NOT_LISTENING and deaf.instance_id == name  # whole in JSON
    assert len(deaf.message) < 300, len(deaf.message)
    assert "10,240 chars" in deaf.message and "is not listening" in deaf.message


def test_alerts_show_an_id_with_control_characters_as_a_shell_word() -> None:
    name = "evil\x1b[2J"
    late = InstanceRecord(name, last_seen=format_ts(NOW - timedelta(seconds=1)))
    rows = instance_rows({name: late}, set(), RateTracker(), {}, {}, {}, NOW, 90)
    [deaf] = alerts(RedisState(ok=True), rows, {}, None, NOW)
    assert deaf.message.startswith("$'evil\\x1b[2J' is not listening"), deaf.message


def test_a_clock_behind_reads_behind_redis() -> None:
    rec = InstanceRecord("gw-a", last_seen=format_ts(NOW - timedelta(seconds=1)))
    rows = instance_rows({"gw-a": rec}, {"gw-a"}, RateTracker(), {}, {}, {"gw-a": -15.0}, NOW, 90)
    [skew] = alerts(RedisState(ok=True), rows, {}, None, NOW)
    assert skew.message == "gw-a's clock is 15s behind Redis'", skew.message


def test_a_dead_instance_alert_never_suggests_a_command_with_a_cut_id() -> None:
    name = "L" * 10_240
    rows = instance_rows({}, set(), RateTracker(), {name: _tally(name, 2)}, {name: 2}, {}, NOW, 90)
    [dead] = alerts(RedisState(ok=True), rows, {"on_dead_by_instance": {name: 2}}, None, NOW)
    assert "--instance ID (the whole id: wsctl top --once -o json)" in dead.message
    assert "L" * 100 not in dead.message


def test_event_cells_cut_a_10kb_robot_id_and_keep_the_detail() -> None:
    row = {
        "at": "2026-11-27T12:00:00+00:00",
        "event": "connected",
        "robot_id": "R" * 10_240,
        "instance_id": "gw-\x1b[2J",
        "detail": {"code": 1000},
    }
    cells = event_cells(row)
    assert len(cells[2]) <= 48 and cells[2].endswith("(10,240 chars)"), cells[2]
    assert cells[3] == "$'gw-\\x1b[2J'" and cells[4] == "code=1000"


def test_the_header_and_the_events_read_the_same_local_clock(monkeypatch: Any) -> None:
    import time

    from wsctl.cli.topview import header_parts

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        snapshot = {
            "at": "2026-11-27T14:25:43+00:00",
            "redis": {"ok": True},
            "registry": {"complete": False},
        }
        assert "at 09:25:43" in header_parts(snapshot, "redis://x", 2.0)
        event = {"at": "2026-11-27T14:25:40+00:00", "event": "connected"}
        assert event_cells(event)[0] == "09:25:40"
    finally:
        monkeypatch.undo()
        time.tzset()
