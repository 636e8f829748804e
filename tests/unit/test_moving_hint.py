"""`wsctl send`'s "robot is moving" hint for a robot without an entry: the pure decision over
the robot's newest events (newest first), given `now`."""

from __future__ import annotations

from wsctl.eventlog.model import StoredEvent
from wsctl.ops.send import MOVING_FOR, moving_since

NOW = 1_700_000_000.0


def _event(name: str, age: float, problem: str | None = None) -> StoredEvent:
    return StoredEvent(
        stream="r-1",
        id="0-1",
        at="",
        ts=NOW - age,
        event=name,
        robot_id="r-1",
        instance_id="gw-3",
        conn_id="c1",
        detail={},
        problem=problem,
    )


def test_a_drain_followed_by_its_disconnect_is_moving() -> None:
    """What a real drain writes: `drained`, then `disconnected` when the close completes."""
    drained = _event("drained", 2.0)
    events = [_event("disconnected", 1.9), drained, _event("connected", 60.0)]
    assert moving_since(events, NOW) is drained


def test_a_drain_as_the_last_event_is_moving() -> None:
    drained = _event("drained", 2.0)
    assert moving_since([drained], NOW) is drained


def test_a_session_after_the_drain_is_not_moving() -> None:
    events = [_event("disconnected", 1.0), _event("connected", 2.0), _event("drained", 3.0)]
    assert moving_since(events, NOW) is None


def test_failed_forwards_and_malformed_entries_after_the_drain_are_passed_over() -> None:
    drained = _event("drained", 5.0)
    events = [
        _event("forward_failed", 1.0),
        _event("connected", 1.5, problem="no at"),
        _event("disconnected", 4.9),
        drained,
    ]
    assert moving_since(events, NOW) is drained


def test_a_drain_older_than_the_moving_window_is_not_moving() -> None:
    assert (
        moving_since([_event("disconnected", MOVING_FOR), _event("drained", MOVING_FOR + 1)], NOW)
        is None
    )
    assert moving_since([_event("drained", MOVING_FOR - 1)], NOW) is not None


def test_a_drain_slightly_ahead_of_this_clock_is_moving_but_one_far_ahead_is_not() -> None:
    assert moving_since([_event("drained", -2.0)], NOW) is not None
    assert moving_since([_event("drained", -3600.0)], NOW) is None


def test_no_drain_among_the_events_is_not_moving() -> None:
    assert moving_since([], NOW) is None
    assert moving_since([_event("disconnected", 1.0), _event("kicked", 1.1)], NOW) is None
