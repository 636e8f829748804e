"""settle(): wait for a task without swallowing the caller's own cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import fakeredis
import pytest

from wsctl.registry.model import Entry
from wsctl.registry.store import RegistryStore
from wsctl.tasks import settle, settle_all, wait_within


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


async def test_settle_all_cancels_again_a_task_that_swallowed_its_first_cancellation() -> None:
    """A task that ignores one cancel (as a 3.11 wait_for can) used to hang a gateway's stop
    for ever; settle_all cancels it again and returns once it ends."""
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed >= 2:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    assert await settle_all([task], timeout=5) == []
    assert task.cancelled() and swallowed == 2


async def test_settle_all_gives_up_after_its_timeout_and_returns_the_tasks_still_running() -> None:
    released = asyncio.Event()

    async def ignores_cancel_until_released() -> None:
        while not released.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(ignores_cancel_until_released())
    await asyncio.sleep(0)
    assert await settle_all([task], timeout=0.3) == [task]
    released.set()  # the test's own clean-up: let it end
    task.cancel()
    await asyncio.wait([task], timeout=5)
    assert task.done()


async def test_wait_within_keeps_a_cancellation_that_arrives_as_the_awaited_call_completes() -> (
    None
):
    """A loop bounding each step with wait_within ends on its cancel even when the cancel
    lands in the step the awaited call completes (``asyncio.wait_for`` drops it in 3.11)."""
    loop_task: asyncio.Task[None] | None = None

    async def step() -> int:
        await asyncio.sleep(0)
        assert loop_task is not None
        loop_task.cancel()  # the cancel meets the completion
        return 1

    async def loop() -> None:
        for _ in range(1000):  # bounded: ends at once when the cancel is kept
            await wait_within(step(), 5)
            await asyncio.sleep(0.001)

    loop_task = asyncio.create_task(loop())
    await asyncio.wait([loop_task], timeout=2)
    assert loop_task.cancelled()


async def test_wait_within_times_out_and_cancels_the_awaited_task() -> None:
    slow = asyncio.create_task(asyncio.sleep(10))
    with pytest.raises(TimeoutError):
        await wait_within(slow, 0.05)
    assert slow.cancelled()
    assert await wait_within(asyncio.sleep(0, "done"), None) == "done"
