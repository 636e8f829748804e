"""The arguments of the app's API, checked at the door: what ``send``, ``publish``,
``send_many`` and ``selection`` of :class:`~wsctl.gateway.core.FleetCore` and
:class:`~wsctl.gateway.asgi.Fleet` take.

A wrong type or value is a bug in the calling code, not an answer from the fleet, so it raises
(``TypeError`` for a wrong type, ``ValueError`` for a wrong value) before anything is queued,
naming the argument and what it takes; outcomes (``SendResult``, ``RobotOutcome``) are kept for
what the fleet answers. Pure: no I/O.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any

__all__ = [
    "check_callback",
    "check_filter",
    "check_message",
    "check_robot_id",
    "check_robots",
    "check_timeout",
]


def _kind(value: object) -> str:
    """How a wrong value is named in an error: its type (never its content, which may be a
    secret or very long)."""
    return "None" if value is None else type(value).__name__


def check_robot_id(robot_id: object, name: str = "robot_id") -> str:
    """``robot_id`` as given when it is a non-empty ``str``; else ``TypeError`` or
    ``ValueError`` (empty). Any other text is taken as it is: a registry may hold ids no
    wsctl gateway would accept (the original design's), and one nobody holds is simply
    ``not_connected``."""
    if not isinstance(robot_id, str):
        raise TypeError(f"{name}: a robot id (str), got {_kind(robot_id)}")
    if not robot_id:
        raise ValueError(f"{name}: a robot id, got an empty string")
    return robot_id


def check_message(message: object) -> str:
    """``message`` when it is text (``str``); else ``TypeError`` (bytes: decode them first,
    robots get text frames)."""
    if isinstance(message, str):
        return message
    if isinstance(message, bytes | bytearray | memoryview):
        raise TypeError(
            f"message: text (str) sent as one text frame, got {_kind(message)}; "
            "decode it first (e.g. message.decode('utf-8'))"
        )
    raise TypeError(f"message: text (str), got {_kind(message)}")


def check_timeout(timeout: object) -> float:
    """``timeout`` in seconds as a float: a number (not a bool), finite and above 0.
    ``TypeError`` for None or another type, ``ValueError`` for 0, a negative, NaN or infinity
    (every send is bounded in time)."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout: seconds (a number above 0), got {_kind(timeout)}")
    seconds = float(timeout)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"timeout: seconds (a finite number above 0), got {timeout!r}")
    return seconds


def check_robots(robots: object) -> list[str] | AsyncIterable[Any]:
    """``robots`` of ``send_many``: a selection (an async iterable, e.g.
    :meth:`~wsctl.gateway.asgi.Fleet.selection`) as is, or robot ids (any iterable of
    ``str``) as a list, each checked. ``TypeError`` for one string, a non-iterable or an id
    that is not a ``str``."""
    if isinstance(robots, AsyncIterable):
        return robots
    if isinstance(robots, str | bytes | bytearray):
        raise TypeError(
            f"robots: a list of robot ids or a selection, not one {_kind(robots)} "
            "(for one robot: send_many([robot_id], ...) or send(robot_id, ...))"
        )
    if not isinstance(robots, Iterable):
        raise TypeError(f"robots: a list of robot ids or a selection, got {_kind(robots)}")
    ids = list(robots)
    for n, robot_id in enumerate(ids):
        check_robot_id(robot_id, f"robots[{n}]")
    return ids


def check_callback(on_outcome: object) -> Callable[..., Any] | None:
    """``on_outcome``: None or a plain callable; else ``TypeError`` (an ``async def`` one
    would only make coroutines nobody awaits: its work would never run)."""
    if on_outcome is None:
        return None
    if callable(on_outcome) and not inspect.iscoroutinefunction(on_outcome):
        return on_outcome
    if callable(on_outcome):
        raise TypeError(
            "on_outcome: a plain function taking a RobotOutcome (it is called as each "
            "outcome is known, not awaited), got an async function"
        )
    raise TypeError(
        f"on_outcome: a function taking a RobotOutcome, or None, got {_kind(on_outcome)}"
    )


def check_filter(value: object, name: str) -> str | None:
    """A selection's filter (``robot_glob``, ``instance``): None or a ``str``; else
    ``TypeError``."""
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{name}: a str or None, got {_kind(value)}")
