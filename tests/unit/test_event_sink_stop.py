"""The event sink's writer task always ends when cancelled, even when a wake-up races it.

Python 3.11's ``asyncio.wait_for`` swallows a cancellation that arrives just as the awaited
wake-up completes; the writer then looped on and ``stop()`` (every gateway's shutdown) waited
forever.
"""

from __future__ import annotations

import asyncio

from wsctl.gateway.events import EventSink
from wsctl.registry.keys import Keyspace


async def test_a_cancel_right_after_a_wake_up_ends_the_writer() -> None:
    for _ in range(20):
        sink = EventSink(Keyspace(), "w", flush_interval=0.05)
        sink.start(object())  # type: ignore[arg-type]  # nothing is queued: never used
        await asyncio.sleep(0)
        sink._wake.set()
        await asyncio.sleep(0)  # the wake-up completes...
        task = sink._task
        assert task is not None
        task.cancel()  # ...and the cancellation arrives before the writer runs again
        done, _ = await asyncio.wait({task}, timeout=1.0)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        assert done, "the writer ignored its cancellation"
