"""`wsctl top`'s pure model: records with counters, rates between two records, levels,
clock skew, the registry pass and its summary, alerts. Given `now`, no Redis."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from wsctl.ops.histogram import Histogram
from wsctl.ops.summary import InstanceTally
from wsctl.ops.top import (
    AlertKind,
    RateTracker,
    RedisState,
    RegistryPass,
    age_bands,
    alerts,
    instance_rows,
    level_of,
    rates_between,
    record_skew,
    registry_summary,
)
from wsctl.registry.instances import InstanceRecord, Liveness
from wsctl.registry.model import entry_from_hash, format_ts

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def ts(seconds_ago: float) -> str:
    return format_ts(NOW - timedelta(seconds=seconds_ago))


def record(name: str = "gw-a", ago: float = 1.0, n: int = 0, **kw: object) -> InstanceRecord:
    counters = {
        "messages_delivered": 10 * n,
        "messages_forwarded": 2 * n,
        "messages_failed": n,
        "connections_opened": 3 * n,
        "connections_closed": n,
        "redis_errors": 0,
    }
    fields: dict[str, object] = {
        "pid": 42,
        "started_at": ts(600),
        "last_seen": ts(ago),
        "heartbeat_interval": 2.0,
        "redis_up": True,
        "connections": 5,
        **counters,
        **kw,
    }
    return InstanceRecord(name, **fields)  # type: ignore[arg-type]


def test_a_record_with_counters_round_trips_through_its_hash() -> None:
    rec = record(n=7, draining=True)
    back = InstanceRecord.from_hash("gw-a", rec.to_hash())
    assert back == rec
    assert rec.to_hash()["messages_delivered"] == "70" and rec.to_hash()["redis_up"] == "1"
    assert rec.to_hash()["heartbeat_interval"] == "2"


def test_an_older_record_without_counters_reads_with_none_and_writes_no_empty_fields() -> None:
    old = {"instance_id": "gw-old", "last_seen": ts(1), "connections": "3", "draining": "0"}
    rec = InstanceRecord.from_hash("gw-old", old)
    assert rec.counters() is None and rec.redis_up is None and rec.heartbeat_interval is None
    assert rec.connections == 3
    assert "messages_delivered" not in rec.to_hash() and "redis_up" not in rec.to_hash()


def test_unusable_counter_values_read_as_none() -> None:
    rec = InstanceRecord.from_hash(
        "gw-x",
        {"messages_delivered": "lots", "connections_closed": "-3", "heartbeat_interval": "nan"},
    )
    assert rec.messages_delivered is None and rec.connections_closed is None
    assert rec.heartbeat_interval is None


def test_rates_are_counter_deltas_over_the_time_between_two_records() -> None:
    rates = rates_between(record(ago=4, n=1), record(ago=2, n=3))
    assert rates is not None and rates.window_s == 2
    assert rates.values["delivered_per_s"] == 10  # 20 messages in 2 s
    assert rates.values["connects_per_s"] == 3 and rates.values["disconnects_per_s"] == 1


def test_no_rates_across_a_restart_a_counter_going_down_or_no_time_passing() -> None:
    assert rates_between(record(ago=4, n=1), record(ago=2, n=3, pid=43)) is None
    assert rates_between(record(ago=4, n=3), record(ago=2, n=1)) is None
    assert rates_between(record(ago=2, n=1), record(ago=2, n=3)) is None
    assert rates_between(InstanceRecord("gw-a", last_seen=ts(4)), record(ago=2, n=1)) is None


def test_the_tracker_keeps_the_rates_until_the_next_write_and_says_why_there_are_none() -> None:
    tracker = RateTracker()
    first = record(ago=4, n=1)
    tracker.observe(first)
    assert tracker.current(first, NOW) == (None, "waiting for its next record")
    later = record(ago=2, n=3)
    tracker.observe(later)
    tracker.observe(later)  # read again before the next write: the same rates
    rates, note = tracker.current(later, NOW)
    assert rates is not None and rates.values["delivered_per_s"] == 10 and note == ""
    late = NOW + timedelta(seconds=10)  # 12 s after a write every 2 s: late
    assert tracker.current(later, late)[0] is None
    assert "old" in tracker.current(later, late)[1]
    no_counters = InstanceRecord("gw-old", last_seen=ts(1))
    assert "no counters" in tracker.current(no_counters, NOW)[1]


def test_levels_follow_the_protocol_document() -> None:
    assert level_of(record(), False, 0, 0) == 2
    assert level_of(None, True, 0, 0) == 2
    assert level_of(None, False, 5, 5) == 1
    assert level_of(None, False, 5, 0) == 0
    assert level_of(None, False, 0, 0) is None


def test_a_record_written_between_two_reads_tells_a_clock_ahead_or_behind() -> None:
    since, now = NOW - timedelta(seconds=2), NOW
    before = record(ago=3)
    assert record_skew(before, record(ago=-30), since, now) == 30  # ahead by 30 s
    behind = record_skew(before, record(ago=60), since, now)
    assert behind is not None and round(behind) == -56  # 58 s before ``since``, minus 2 s
    assert record_skew(before, record(ago=1), since, now) is None  # written in the window
    assert record_skew(before, before, since, now) is None  # no new write


def tally(name: str, fresh: int = 0, stale: int = 0) -> InstanceTally:
    return InstanceTally(name, connections=fresh + stale, fresh=fresh, stale=stale)


def test_rows_cover_records_listeners_and_entries_with_their_level() -> None:
    rows = instance_rows(
        {"gw-a": record("gw-a")},
        {"gw-a", "gw-listening"},
        RateTracker(),
        {"gw-a": tally("gw-a", 5), "seed-1": tally("seed-1", 3), "": tally("", 1)},
        {"gw-a": 5},
        {},
        NOW,
        90,
    )
    by_id = {r.instance_id: r for r in rows}
    assert list(by_id) == ["gw-a", "gw-listening", "seed-1"]
    assert by_id["gw-a"].robots == 5 and by_id["gw-a"].robots_from == "record"
    assert by_id["seed-1"].level == 0 and by_id["seed-1"].robots_from == "registry"
    assert "level 0" in by_id["seed-1"].rates_note
    assert by_id["gw-listening"].liveness is Liveness.UNKNOWN and by_id["gw-listening"].level == 2


def test_redis_up_is_false_once_the_record_is_late() -> None:
    rows = instance_rows(
        {"gw-a": record("gw-a", ago=30)}, {"gw-a"}, RateTracker(), {}, {}, {}, NOW, 90
    )
    assert rows[0].redis_up is False


def entry(robot: str, instance: str, age: float, conn: bool = True):  # type: ignore[no-untyped-def]
    fields = {"instance_id": instance, "last_heartbeat": ts(age), "robot_id": robot}
    if conn:
        fields["conn_id"] = "c" + robot
    return entry_from_hash(robot, fields, UTC)


def test_a_registry_pass_tallies_entries_ages_and_heartbeats_in_the_future() -> None:
    one = RegistryPass(started=NOW)
    one.add([entry("a", "gw-a", 5), entry("b", "gw-a", 200), entry("c", "gw-b", -60)], NOW, 90)
    assert one.totals() == {"entries": 3, "fresh": 1, "stale": 1, "malformed": 1}
    assert one.skewed == 1 and one.ages.count == 2 and one.with_conn_id == {"gw-a": 2, "gw-b": 1}


def test_the_summary_counts_entries_on_dead_instances_by_reaps_rule() -> None:
    done = RegistryPass(started=NOW - timedelta(seconds=30), finished=NOW)
    done.add(
        [
            entry("a", "gw-gone", 5),  # no record, nobody listens, conn_id: dead
            entry("b", "gw-gone", 5),
            entry("c", "seed", 5, conn=False),  # the original design: nothing says dead
            entry("d", "gw-live", 5),
        ],
        NOW,
        90,
    )
    summary = registry_summary(done, None, {"gw-live": record("gw-live")}, {"gw-live"}, NOW, 90)
    assert summary["on_dead_instances"] == 2 and summary["on_dead_by_instance"] == {"gw-gone": 2}
    assert summary["complete"] and summary["age_s"] == 30 and summary["fresh"] == 4
    # listeners unknown (a node did not answer): nobody is called dead
    assert registry_summary(done, None, {}, None, NOW, 90)["on_dead_instances"] == 0


def test_the_histogram_bands_split_ages_by_fractions_of_the_timeout() -> None:
    done = RegistryPass(started=NOW, finished=NOW)
    done.add(
        [entry(f"r{i}", "gw-a", age) for i, age in enumerate([1, 2, 20, 50, 100, 500])], NOW, 90
    )
    bands = registry_summary(done, None, {}, set(), NOW, 90)["heartbeat_age"]["bands"]
    assert [b["count"] for b in bands] == [2, 1, 0, 1, 0, 1, 1]
    assert age_bands(90)[0] == (0.0, 15.0) and age_bands(90)[-1] == (180.0, None)


def test_histogram_count_below_counts_whole_buckets() -> None:
    hist = Histogram()
    for value in (0.5, 1.0, 2.0, 10.0):
        hist.add(value)
    assert hist.count_below(1.5) == 2 and hist.count_below(100) == 4 and hist.count_below(0) == 0


def test_progress_of_the_next_pass_is_against_the_last_one() -> None:
    done = RegistryPass(started=NOW, finished=NOW, keys_seen=1000)
    current = RegistryPass(started=NOW, keys_seen=250)
    assert registry_summary(done, current, {}, set(), NOW, 90)["scan_progress"] == 0.25
    first = registry_summary(None, current, {}, set(), NOW, 90)
    assert first["complete"] is False and first["entries"] == 0


def kinds(found: list) -> list[str]:  # type: ignore[type-arg]
    return [a.kind.value for a in found]


def test_alerts_name_an_instance_that_stopped_listening_and_redis_not_answering() -> None:
    rows = instance_rows({"gw-a": record("gw-a")}, set(), RateTracker(), {}, {}, {}, NOW, 90)
    down = RedisState(
        ok=False, error="Redis at x is not answering", data_at=NOW - timedelta(seconds=12)
    )
    found = alerts(down, rows, {}, None, NOW)
    assert kinds(found) == ["redis_unreachable", "not_listening"]
    assert "showing data from 12s ago" in found[0].message
    assert "holds 5 robots" in found[1].message


def test_a_gateway_just_started_is_not_yet_called_deaf() -> None:
    starting = record("gw-a", started_at=ts(1))
    rows = instance_rows({"gw-a": starting}, set(), RateTracker(), {}, {}, {}, NOW, 90)
    assert alerts(RedisState(ok=True), rows, {}, None, NOW) == []


def test_alerts_for_dead_instances_stale_growth_and_clocks() -> None:
    rows = instance_rows(
        {"gw-a": record("gw-a")},
        {"gw-a"},
        RateTracker(),
        {"gw-gone": tally("gw-gone", 4)},
        {"gw-gone": 4},
        {"gw-a": 40.0},
        NOW,
        90,
    )
    registry = {"on_dead_by_instance": {"gw-gone": 4}, "clock_skew": 2}
    found = alerts(RedisState(ok=True, clock_offset_s=-9), rows, registry, (3, 7), NOW)
    assert sorted(kinds(found)) == sorted(
        ["dead_with_entries", "stale_growing", "clock_skew", "clock_skew", "clock_skew"]
    )
    dead = next(a for a in found if a.kind is AlertKind.DEAD_WITH_ENTRIES)
    assert "4 entries left" in dead.message and dead.instance_id == "gw-gone"
    assert "3 -> 7" in next(a.message for a in found if a.kind is AlertKind.STALE_GROWING)
    assert alerts(RedisState(ok=True), rows, {}, (7, 3), NOW) == [
        a for a in alerts(RedisState(ok=True), rows, {}, None, NOW)
    ]


def test_a_late_record_after_a_restart_gives_no_rates() -> None:
    tracker = RateTracker()
    tracker.observe(record(ago=4, n=5))
    restarted = replace(record(ago=2, n=1), pid=99)
    tracker.observe(restarted)
    assert tracker.current(restarted, NOW) == (None, "restarted or counters reset")
