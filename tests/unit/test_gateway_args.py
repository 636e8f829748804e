"""The app API's argument checks (wsctl/gateway/args.py): a wrong type or value raises
``TypeError`` / ``ValueError`` naming the argument and what it takes, never its content."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest

from wsctl.gateway.args import (
    check_callback,
    check_filter,
    check_message,
    check_robot_id,
    check_robots,
    check_timeout,
)


@pytest.mark.parametrize("value", [17, None, b"robot-1", 1.5])
def test_a_robot_id_that_is_not_a_str_is_a_type_error_naming_robot_id(value: object) -> None:
    with pytest.raises(TypeError, match=r"^robot_id: a robot id \(str\), got "):
        check_robot_id(value)


def test_a_robot_id_str_is_returned_as_given() -> None:
    assert check_robot_id("robot-1") == "robot-1"
    assert check_robot_id("id\nwith a newline") == "id\nwith a newline"  # as a registry may hold
    with pytest.raises(ValueError, match="empty"):
        check_robot_id("")


def test_a_bytes_message_is_a_type_error_that_says_to_decode_it() -> None:
    with pytest.raises(TypeError, match=r"^message: text \(str\).*got bytes; decode it first"):
        check_message(b"secret-payload")


@pytest.mark.parametrize("value", [17, None, ["a"], {"k": 1}])
def test_a_message_that_is_not_text_is_a_type_error_naming_message(value: object) -> None:
    with pytest.raises(TypeError, match=r"^message: text \(str\), got "):
        check_message(value)


def test_an_error_names_the_wrong_type_never_the_value() -> None:
    with pytest.raises(TypeError) as caught:
        check_message(b"hunter2-secret")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("value", [None, "5", True, [5]])
def test_a_timeout_that_is_not_a_number_is_a_type_error_naming_timeout(value: object) -> None:
    with pytest.raises(TypeError, match=r"^timeout: seconds"):
        check_timeout(value)


@pytest.mark.parametrize("value", [0, 0.0, -1, -0.5, math.nan, math.inf])
def test_a_timeout_not_above_zero_or_not_finite_is_a_value_error(value: float) -> None:
    with pytest.raises(ValueError, match=r"^timeout: seconds \(a finite number above 0\)"):
        check_timeout(value)


def test_a_timeout_int_or_float_above_zero_is_seconds() -> None:
    assert check_timeout(2) == 2.0 and check_timeout(0.25) == 0.25


@pytest.mark.parametrize("value", ["robot-1", b"robot-1", 17, None])
def test_robots_as_one_string_or_a_non_iterable_is_a_type_error(value: object) -> None:
    with pytest.raises(TypeError, match=r"^robots: a list of robot ids or a selection"):
        check_robots(value)


def test_a_robot_id_in_robots_that_is_not_a_str_is_named_by_its_position() -> None:
    with pytest.raises(TypeError, match=r"^robots\[1\]: a robot id \(str\), got int"):
        check_robots(["robot-1", 201])


def test_robot_ids_from_any_iterable_become_a_list() -> None:
    assert check_robots(r for r in ("a", "b")) == ["a", "b"]


def test_a_selection_is_passed_on_as_is() -> None:
    async def selection() -> AsyncIterator[list[tuple[str, str | None]]]:
        yield [("a", None)]

    chosen = selection()
    assert check_robots(chosen) is chosen


def test_an_on_outcome_that_is_not_callable_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"^on_outcome: a function"):
        check_callback("print")
    assert check_callback(None) is None and check_callback(print) is print

    async def later(outcome: object) -> None: ...

    with pytest.raises(TypeError, match="async function"):  # it was never awaited
        check_callback(later)


@pytest.mark.parametrize("value", [17, b"robot-*", ["robot-*"]])
def test_a_selection_filter_that_is_not_a_str_is_a_type_error_naming_it(value: object) -> None:
    with pytest.raises(TypeError, match=r"^robot_glob: a str or None, got "):
        check_filter(value, "robot_glob")
    assert check_filter(None, "robot_glob") is None
    assert check_filter("robot-*", "robot_glob") == "robot-*"
