"""The event loop every wsctl command, gateway and robot worker runs on: one place to choose.

``WSCTL_EVENT_LOOP``: ``auto`` (default: uvloop when it is installed, e.g. with
``pip install 'wsctl[fast]'``, else asyncio's own), ``uvloop`` (required: an error without
it) or ``asyncio``. README ("Decisions: event loop and JSON codec") has the measurements.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from wsctl.errors import ConfigError

__all__ = ["loop_factory", "loop_name", "run"]

T = TypeVar("T")
CHOICES = ("auto", "uvloop", "asyncio")


def _choice() -> str:
    choice = os.environ.get("WSCTL_EVENT_LOOP", "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ConfigError(f"WSCTL_EVENT_LOOP={choice!r}: use one of {', '.join(CHOICES)}")
    return choice


def loop_factory() -> Callable[[], Any] | None:
    """uvloop's loop factory when chosen and available; None for asyncio's default loop."""
    choice = _choice()
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                "WSCTL_EVENT_LOOP=uvloop but uvloop is not installed (pip install 'wsctl[fast]')"
            ) from None
        return None
    factory: Callable[[], Any] = uvloop.new_event_loop
    return factory


def loop_name() -> str:
    return "asyncio" if loop_factory() is None else "uvloop"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)`` on the chosen loop."""
    import asyncio

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)
