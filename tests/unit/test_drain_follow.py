"""The pure decisions of `wsctl drain`'s follower: where each robot is, and what the polls of
the drained instance (listening? liveness record?) say about it, given `now`."""

from __future__ import annotations

from dataclasses import replace

from wsctl.ops.drain import DrainReport, Gone, InstanceWatch, Place, place_of
from wsctl.registry.instances import InstanceRecord

RECORD = InstanceRecord("gw-a", pid=100, started_at="2026-01-01T00:00:00Z", draining=True)


def test_a_robot_registered_on_another_instance_moved() -> None:
    assert place_of("gw-a", "c1", "gw-b", "c9") is Place.MOVED


def test_a_robot_in_the_session_the_drain_found_is_held() -> None:
    assert place_of("gw-a", "c1", "gw-a", "c1") is Place.HELD


def test_a_robot_with_a_new_session_on_the_drained_instance_is_back() -> None:
    assert place_of("gw-a", "c1", "gw-a", "c2") is Place.BACK


def test_a_robot_without_entry_is_absent() -> None:
    assert place_of("gw-a", "c1", None, None) is Place.ABSENT
    assert place_of("gw-a", "c1", "", None) is Place.ABSENT


def test_a_session_without_conn_id_on_the_instance_counts_as_held() -> None:
    assert place_of("gw-a", "", "gw-a", None) is Place.HELD


def test_an_instance_that_listens_and_drains_is_neither_gone_nor_undrained() -> None:
    watch = InstanceWatch()
    for now in (0.0, 1.0, 10.0):
        watch.observe(now, True, RECORD)
    assert watch.gone is None and not watch.undrained and not watch.silent


def test_a_record_that_stops_saying_draining_is_an_undrain() -> None:
    watch = InstanceWatch()
    watch.observe(0.0, True, RECORD)
    watch.observe(1.0, True, replace(RECORD, draining=False))
    assert watch.undrained and watch.gone is None


def test_a_record_never_seen_draining_is_not_an_undrain() -> None:
    """The record write that goes with the drain is best effort: a record that has not said
    `draining` yet says nothing about a cancel."""
    watch = InstanceWatch()
    watch.observe(0.0, True, replace(RECORD, draining=False))
    assert not watch.undrained


def test_an_instance_silent_for_the_grace_period_with_its_record_died() -> None:
    watch = InstanceWatch(gone_after=3.0)
    watch.observe(0.0, True, RECORD)
    watch.observe(1.0, False, RECORD)
    watch.observe(3.9, False, RECORD)
    assert watch.gone is None and watch.silent
    watch.observe(4.0, False, RECORD)
    assert watch.gone is Gone.DIED and watch.last == RECORD


def test_an_instance_silent_without_its_record_stopped() -> None:
    watch = InstanceWatch(gone_after=3.0)
    watch.observe(0.0, True, RECORD)
    watch.observe(1.0, False, None)
    watch.observe(4.5, False, None)
    assert watch.gone is Gone.STOPPED


def test_a_short_silence_is_not_death() -> None:
    """A gateway that lost its subscription (a Redis blip) subscribes again."""
    watch = InstanceWatch(gone_after=3.0)
    watch.observe(0.0, False, RECORD)
    watch.observe(2.0, True, RECORD)
    watch.observe(4.0, False, RECORD)
    watch.observe(6.5, False, RECORD)
    assert watch.gone is None
    watch.observe(7.0, False, RECORD)
    assert watch.gone is Gone.DIED


def test_a_new_process_under_the_id_is_a_restart() -> None:
    watch = InstanceWatch()
    watch.observe(0.0, True, RECORD)
    watch.observe(1.0, True, replace(RECORD, pid=101, draining=False))
    assert watch.gone is Gone.RESTARTED and not watch.undrained


def test_gone_is_final() -> None:
    watch = InstanceWatch(gone_after=1.0)
    watch.observe(0.0, False, RECORD)
    watch.observe(1.0, False, RECORD)
    watch.observe(2.0, True, RECORD)
    assert watch.gone is Gone.DIED


def test_the_report_fails_a_cancelled_drain_and_a_gone_instance() -> None:
    done = DrainReport("gw-a", 2, 1.0, 5.0, robots=["r1"], moved={"r1": "gw-b"})
    assert done.exit_code == 0
    assert replace(done, cancelled=True).exit_code == 1
    assert replace(done, gone=Gone.DIED).exit_code == 1
    assert replace(done, never_closed=["r2"]).exit_code == 1
    data = replace(done, cancelled=True, never_closed=["r2"]).as_dict()
    assert data["cancelled"] is True and data["never_closed"] == 1
    assert data["never_closed_ids"] == ["r2"] and data["instance_gone"] is None
