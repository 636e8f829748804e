"""settle(): wait for a task without swallowing the caller's own cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import fakeredis
import pytest

from wsctl.registry.model import Entry
from wsctl.registry.store import RegistryStore
from wsctl.tasks import settle


async def _slow_to_cancel() -> None:
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        await asyncio.sleep(0.3)  # a clean-up that takes a while
        raise


async def test_settle_ignores_the_tasks_error_and_its_cancellation() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fails())
    await settle(failed, cancel=False)
    assert isinstance(failed.exception(), RuntimeError)
    slow = asyncio.create_task(_slow_to_cancel())
    await asyncio.sleep(0)
    await settle(slow)
    assert slow.cancelled()


async def test_a_caller_cancelled_while_settling_is_cancelled() -> None:
    slow = asyncio.create_task(_slow_to_cancel())
    await asyncio.sleep(0)
    caller = asyncio.create_task(settle(slow))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await settle(slow)


class SlowReadAhead(RegistryStore):
    """The first batch reads at once; later ones hang, and take a while to cancel."""

    reads = 0

    async def read_keys(self, keys: Sequence[str]) -> list[Entry]:
        self.reads += 1
        if self.reads > 1:
            await _slow_to_cancel()
        return await super().read_keys(keys)


async def test_a_reader_cancelled_while_the_read_ahead_winds_down_stays_cancelled() -> None:
    """Fixed bug: the store waited for its cancelled read-ahead under
    ``suppress(BaseException)``, so a caller cancelled during that wait carried on."""
    store = SlowReadAhead(fakeredis.FakeAsyncRedis(decode_responses=True), batch_size=3)
    for i in range(10):
        await store.client.hset(f"ws_conn:r{i}", mapping={"last_heartbeat": "1"})
    carried_on = asyncio.Event()

    async def reader() -> None:
        batches = store.iter_batches()
        await anext(batches)
        await batches.aclose()  # stops early: the read-ahead is cancelled and waited for
        carried_on.set()

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not carried_on.is_set()
