"""Reap's pure judgement: what goes and why, with ``now`` given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wsctl.ops.reap import ReapOptions, Reason, judge, owner_known_dead
from wsctl.registry.instances import Liveness
from wsctl.registry.model import entry_from_hash, format_ts, wrong_type_entry

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def entry(age: float, instance: str = "gw-a", robot: str = "r1"):  # type: ignore[no-untyped-def]
    stamp = format_ts(NOW - timedelta(seconds=age))
    return entry_from_hash(
        robot, {"instance_id": instance, "robot_id": robot, "last_heartbeat": stamp}, UTC
    )


def test_stale_entry_is_reaped_fresh_is_kept() -> None:
    assert judge(entry(91), NOW, ReapOptions(timeout=90))[0] is Reason.STALE
    assert judge(entry(89), NOW, ReapOptions(timeout=90))[0] is None


def test_instance_filter_limits_the_scope() -> None:
    assert judge(entry(500, "gw-b"), NOW, ReapOptions(instance="gw-a"))[0] is None
    assert judge(entry(500, "gw-a"), NOW, ReapOptions(instance="gw-a"))[0] is Reason.STALE


def test_malformed_is_kept_unless_asked_but_the_reason_is_given() -> None:
    bad = wrong_type_entry("r1", "list")
    reason, detail = judge(bad, NOW, ReapOptions())
    assert reason is None and "type list" in detail
    assert judge(bad, NOW, ReapOptions(include_malformed=True))[0] is Reason.MALFORMED


def test_dead_instance_reaps_fresh_entries_only_with_the_flag_set() -> None:
    def dead(e) -> bool:  # type: ignore[no-untyped-def]
        return bool(e.instance_id == "gw-dead")

    assert judge(entry(1, "gw-dead"), NOW, ReapOptions(), dead)[0] is Reason.DEAD_INSTANCE
    assert judge(entry(1, "gw-dead"), NOW, ReapOptions(), None)[0] is None
    assert judge(entry(1, "gw-live"), NOW, ReapOptions(), dead)[0] is None


def test_an_owner_is_known_dead_only_if_it_would_say_it_was_alive() -> None:
    """Nobody listening plus an expired liveness record, or no record and an entry carrying a
    conn_id (a protocol gateway, which keeps a record while alive). No record and no conn_id is
    an original-design gateway: unknown, never dead."""
    for has_conn_id in (False, True):
        assert owner_known_dead(False, Liveness.DEAD, has_conn_id)
        assert not owner_known_dead(True, Liveness.DEAD, has_conn_id)
        assert not owner_known_dead(False, Liveness.ALIVE, has_conn_id)
        assert not owner_known_dead(True, Liveness.UNKNOWN, has_conn_id)
    assert owner_known_dead(False, Liveness.UNKNOWN, True)
    assert not owner_known_dead(False, Liveness.UNKNOWN, False)
