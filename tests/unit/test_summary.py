"""Per-instance tallies for `list instances`, given `now` (no Redis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wsctl.ops.summary import instance_rows, tally
from wsctl.registry.instances import InstanceRecord
from wsctl.registry.model import entry_from_hash, format_ts, wrong_type_entry

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def entry(robot: str, instance: str, age: float):  # type: ignore[no-untyped-def]
    stamp = format_ts(NOW - timedelta(seconds=age))
    return entry_from_hash(robot, {"instance_id": instance, "last_heartbeat": stamp}, UTC)


def test_tallies_accumulate_across_batches_and_rows_merge_records() -> None:
    tallies = tally([entry("a", "gw-a", 5), entry("b", "gw-a", 500)], NOW, 90)
    tally([entry("c", "gw-b", 10), wrong_type_entry("d", "string")], NOW, 90, into=tallies)
    record = InstanceRecord("gw-c", ws_url="ws://h:1", last_seen=format_ts(NOW))
    rows = {r["instance_id"]: r for r in instance_rows(tallies, [record], NOW, 90)}
    assert (rows["gw-a"]["fresh"], rows["gw-a"]["stale"]) == (1, 1)
    assert (
        rows["gw-a"]["newest_heartbeat_age_s"] == 5
        and rows["gw-a"]["oldest_heartbeat_age_s"] == 500
    )
    assert rows[None]["malformed"] == 1
    assert rows["gw-c"]["liveness"] == "alive" and rows["gw-c"]["connections"] == 0
    assert rows["gw-a"]["liveness"] == "unknown"
