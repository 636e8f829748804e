"""Waiting for a task without swallowing the caller's own cancellation.

``with suppress(BaseException): await task`` after ``task.cancel()`` looks like a clean-up,
but the ``CancelledError`` it swallows may be the *caller's*: a cancelled caller then carries
on as if nothing happened. :func:`settle` waits with :func:`asyncio.wait`, which never raises
the task's outcome, so only the caller's own cancellation comes out of it.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["settle"]


async def settle(task: asyncio.Task[Any], *, cancel: bool = True) -> None:
    """Wait until ``task`` is done (cancelling it first unless ``cancel`` is False), ignoring
    how it ended: its error or its cancellation is no longer anyone's business (the caller
    already stopped or failed). Cancelling the caller still raises ``CancelledError``."""
    if cancel:
        task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved
