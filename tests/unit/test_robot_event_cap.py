"""Which robots of a bulk CLI run get their own event (wsctl.eventlog.model: ``--robot-events`` and
:class:`RobotEventCap`); pure, no Redis."""

from __future__ import annotations

import pytest

from wsctl.errors import UsageError
from wsctl.eventlog.model import RobotEventCap, parse_robot_events


def test_robot_events_takes_a_count_all_or_none() -> None:
    assert parse_robot_events("2500") == 2500
    assert parse_robot_events("0") == 0
    assert parse_robot_events("all") is None
    assert parse_robot_events("ALL") is None
    assert parse_robot_events("none") == 0


@pytest.mark.parametrize("text", ["", "lots", "-1", "1e3", "1.5", "٣", "9" * 13])
def test_robot_events_refuses_anything_else_with_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--robot-events takes a count, 'all' or 'none'"):
        parse_robot_events(text)


def test_the_cap_gives_the_first_n_robots_across_batches_and_counts_the_rest() -> None:
    cap = RobotEventCap(5)
    assert cap.take(["a", "b", "c"]) == ["a", "b", "c"]
    assert cap.take(["d", "e", "f", "g"]) == ["d", "e"]
    assert cap.take(["h"]) == []
    assert (cap.robots, cap.given, cap.left_out) == (8, 5, 3)
    assert cap.note() == (
        "per-robot events recorded for the first 5 of 8 robots; "
        "--robot-events all records every one"
    )


def test_all_none_and_a_run_within_the_count_say_nothing() -> None:
    every, nothing, within = RobotEventCap(None), RobotEventCap(0), RobotEventCap(10)
    assert every.take(list(range(20_000))) == list(range(20_000)) and every.left_out == 0
    assert nothing.take([1, 2, 3]) == [] and nothing.left_out == 3
    assert within.take([1, 2, 3]) == [1, 2, 3]
    assert every.note() is None and nothing.note() is None and within.note() is None
