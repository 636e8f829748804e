"""The event loop every wsctl command, gateway and robot worker runs on: one place to choose.

``WSCTL_EVENT_LOOP``: ``asyncio`` (the default) or ``uvloop`` (when installed; an error
otherwise). asyncio's own loop is the default because uvloop measured no better here
(docs/decisions.md, event loop and JSON codec); the switch stays so that the
measurement can be repeated on other machines.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from wsctl.errors import ConfigError

__all__ = ["loop_factory", "loop_name", "run"]

T = TypeVar("T")
CHOICES = ("asyncio", "uvloop")


def _choice() -> str:
    choice = os.environ.get("WSCTL_EVENT_LOOP", "asyncio").strip().lower() or "asyncio"
    if choice not in CHOICES:
        raise ConfigError(f"WSCTL_EVENT_LOOP={choice!r}: use one of {', '.join(CHOICES)}")
    return choice


def loop_factory() -> Callable[[], Any] | None:
    """uvloop's loop factory when chosen; None for asyncio's default loop."""
    if _choice() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        raise ConfigError("WSCTL_EVENT_LOOP=uvloop but uvloop is not installed") from None
    factory: Callable[[], Any] = uvloop.new_event_loop
    return factory


def loop_name() -> str:
    """``uvloop`` when :func:`loop_factory` picks it, else ``asyncio`` (for logs and metrics)."""
    return "asyncio" if loop_factory() is None else "uvloop"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)`` on the chosen loop. A bad choice raises ConfigError before the
    coroutine starts, and the coroutine is closed (no "never awaited" warning after the
    one-line error)."""
    import asyncio

    try:
        factory = loop_factory()
    except ConfigError:
        coro.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)
