"""Waiting for a task, or with a time limit, without swallowing the caller's own cancellation.

``with suppress(BaseException): await task`` after ``task.cancel()`` looks like a clean-up,
but the ``CancelledError`` it swallows may be the *caller's*: a cancelled caller then carries
on as if nothing happened. :func:`settle` waits with :func:`asyncio.wait`, which never raises
the task's outcome, so only the caller's own cancellation comes out of it.

``asyncio.wait_for`` has the same flaw in Python 3.11: it runs the awaitable in a task of its
own, and when the caller is cancelled in the step that task completes, it returns the result
and drops the cancellation. A loop around it then never ends (a gateway's heartbeat loop beat
on after its stop's cancel, and the stop waited for it). :func:`wait_within` is the
replacement: the awaitable runs in the caller's task under ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

__all__ = ["settle", "settle_all", "wait_within"]

T = TypeVar("T")


async def wait_within(awaitable: Awaitable[T], timeout: float | None) -> T:
    """``await awaitable`` for at most ``timeout`` seconds (None: no limit), then
    ``TimeoutError``; what ``asyncio.wait_for`` does, except that a cancellation of the caller
    always comes out as ``CancelledError``, even when it arrives as the awaitable completes.
    On the timeout an awaited task or future is cancelled, as with ``wait_for``."""
    async with asyncio.timeout(timeout):
        return await awaitable


async def settle(task: asyncio.Task[Any], *, cancel: bool = True) -> None:
    """Wait until ``task`` is done (cancelling it first unless ``cancel`` is False), ignoring
    how it ended: its error or its cancellation is no longer anyone's business (the caller
    already stopped or failed). Cancelling the caller still raises ``CancelledError``."""
    if cancel:
        task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved


async def settle_all(tasks: list[asyncio.Task[Any]], *, timeout: float) -> list[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait until every one is done, for at most ``timeout`` seconds;
    returns those still running. A task that keeps running after its cancel (a ``wait_for``
    in Python 3.11 can swallow a cancellation that arrives as its inner future completes) is
    cancelled again every 0.1 s, so a shutdown is bounded instead of waiting forever."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = [task for task in tasks if not task.done()]
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        await asyncio.wait(pending, timeout=min(0.1, remaining))
        pending = [task for task in pending if not task.done()]
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as never retrieved
    return pending
