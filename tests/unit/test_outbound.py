"""The per-connection outbound queue (wsctl.gateway.outbound): order, bounds, the stall rule."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from wsctl.gateway.outbound import (
    SLOW_CONSUMER_CODE,
    WRITE_FAILED,
    WRITE_FAILED_CODE,
    OutboundQueue,
    SlowConsumer,
)


class _Socket:
    """A socket whose writes wait while ``open`` is clear; what it wrote and how it closed."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()
        self.written: list[str] = []
        self.closed: list[tuple[int, str]] = []

    async def write(self, text: str) -> None:
        await self.open.wait()
        self.written.append(text)

    async def close(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))


async def test_messages_are_written_in_the_order_they_were_taken() -> None:
    sock = _Socket()
    out = OutboundQueue(sock.write, sock.close)
    for n in range(50):
        out.put([OutboundQueue.payload(str(n))])
    await out.flushed()
    assert sock.written == [str(n) for n in range(50)]
    assert out.queued_bytes == 0 and len(out) == 0


async def test_a_robot_over_the_byte_bound_is_closed_and_the_message_not_taken() -> None:
    sock = _Socket()
    sock.open.clear()  # the robot does not read
    out = OutboundQueue(sock.write, sock.close, max_bytes=100)
    out.put([OutboundQueue.payload("x" * 60)])
    with pytest.raises(SlowConsumer, match=r"^slow consumer"):
        out.put([OutboundQueue.payload("y" * 60)])
    await asyncio.sleep(0.01)
    assert sock.closed and sock.closed[0][0] == SLOW_CONSUMER_CODE
    with pytest.raises(SlowConsumer):  # and nothing is taken after
        out.put([OutboundQueue.payload("z")])


async def test_a_robot_over_the_message_bound_is_a_slow_consumer() -> None:
    sock = _Socket()
    sock.open.clear()
    out = OutboundQueue(sock.write, sock.close, max_messages=3)
    out.put([OutboundQueue.payload(str(n)) for n in range(3)])
    with pytest.raises(SlowConsumer):
        out.put([OutboundQueue.payload("3")])


async def test_a_write_that_stalls_past_the_limit_closes_the_robot_and_records_why() -> None:
    sock = _Socket()
    sock.open.clear()
    out = OutboundQueue(sock.write, sock.close, stall=0.05)
    recorded: list[tuple[int, str]] = []
    out.on_slow = lambda code, reason: recorded.append((code, reason))
    out.put([OutboundQueue.payload("stuck")])
    for _ in range(100):  # bounded: 1 s at most
        if sock.closed:
            break
        await asyncio.sleep(0.01)
    assert recorded and recorded[0][0] == SLOW_CONSUMER_CODE
    assert recorded[0][1].startswith("slow consumer")
    assert sock.closed == recorded
    assert out.failed is not None and len(out) == 0


async def test_a_robot_that_reads_slowly_but_steadily_is_not_closed() -> None:
    sock = _Socket()

    async def slow_write(text: str) -> None:
        await asyncio.sleep(0.01)
        sock.written.append(text)

    out = OutboundQueue(slow_write, sock.close, stall=0.2)
    out.put([OutboundQueue.payload(str(n)) for n in range(40)])  # 0.4 s in all
    await out.flushed(timeout=2)
    assert len(sock.written) == 40 and not sock.closed and out.failed is None


async def test_a_sender_that_waits_for_room_never_makes_a_reading_robot_a_slow_consumer() -> None:
    """A loop of awaited sends to a robot that reads (an app's `await fleet.send` to a robot on
    its own instance) never yielded, so the queue passed its bound before the writer ran: the
    healthy robot was closed and 10,000 messages reported delivered were lost."""
    sock = _Socket()
    out = OutboundQueue(sock.write, sock.close, max_messages=10, stall=5.0)
    for n in range(100):
        if out.crowded():
            await out.room()
        out.put([OutboundQueue.payload(str(n))])
    await out.flushed()
    assert sock.written == [str(n) for n in range(100)]
    assert sock.closed == [] and out.failed is None


async def test_waiting_for_room_at_a_robot_that_stopped_reading_ends_as_a_slow_consumer() -> None:
    sock = _Socket()
    sock.open.clear()  # its writes never complete
    out = OutboundQueue(sock.write, sock.close, max_messages=10, stall=0.2)
    for n in range(6):
        out.put([OutboundQueue.payload(str(n))])
    assert out.crowded()
    with pytest.raises(SlowConsumer):
        await asyncio.wait_for(out.room(), 5)
    await asyncio.sleep(0.05)
    assert sock.closed and sock.closed[0][0] == SLOW_CONSUMER_CODE


async def test_one_watchdog_timer_serves_every_writer_of_a_connection() -> None:
    sock = _Socket()

    async def yielding_write(text: str) -> None:  # each write waits one loop iteration
        await asyncio.sleep(0)
        sock.written.append(text)

    out = OutboundQueue(yielding_write, sock.close, stall=5.0)
    out.put([OutboundQueue.payload("first")])
    for _ in range(3):
        await asyncio.sleep(0)  # the writer finishes and the queue is idle again
    assert sock.written == ["first"] and len(out) == 0 and out._writer is None
    watch = out._watch
    assert watch is not None  # armed by the first writer, left armed while idle
    for n in range(20):  # each message finds the queue idle: a writer of its own
        out.put([OutboundQueue.payload(str(n))])
        for _ in range(3):
            await asyncio.sleep(0)
    assert sock.written == ["first", *(str(n) for n in range(20))]
    assert out._watch is watch  # no timer per writer (nor per write)
    await out.flushed()
    assert out._watch is None  # disarmed before the close


async def test_a_write_that_stalls_after_an_idle_spell_is_closed_a_whole_stall_after_it_began() -> (
    None
):
    sock = _Socket()
    out = OutboundQueue(sock.write, sock.close, stall=0.3)
    out.put([OutboundQueue.payload("read")])  # arms the watchdog (fires at 0.3 s)
    await asyncio.sleep(0.2)
    sock.open.clear()  # the robot stops reading
    loop = asyncio.get_running_loop()
    began = loop.time()
    out.put([OutboundQueue.payload("stuck")])
    closed_at = None
    for _ in range(200):  # bounded: 2 s at most
        if sock.closed:
            closed_at = loop.time()
            break
        await asyncio.sleep(0.01)
    assert closed_at is not None and sock.closed[0][0] == SLOW_CONSUMER_CODE
    assert closed_at - began >= 0.3  # not when the watchdog first fired (0.1 s into the write)


async def test_a_burst_for_an_idle_connection_is_written_back_to_back_by_one_writer_task() -> None:
    """Messages taken in one loop iteration are written together in the next, by one writer
    task, when the socket takes each at once (an ASGI server's send to a writable transport)."""
    sock = _Socket()
    out = OutboundQueue(sock.write, sock.close)
    tasks = len(asyncio.all_tasks())
    for n in range(3):
        out.put([OutboundQueue.payload(str(n))])
    out.put([OutboundQueue.payload("3"), OutboundQueue.payload("4")])
    assert len(asyncio.all_tasks()) == tasks + 1 and out._writer is not None
    assert sock.written == [] and len(out) == 5
    await asyncio.sleep(0)
    assert sock.written == ["0", "1", "2", "3", "4"]
    assert out._writer is None and len(out) == 0 and out.queued_bytes == 0
    assert out._idle.is_set()


async def test_a_send_wrapped_in_a_timeout_and_a_context_value_writes_every_message() -> None:
    """An app's ASGI middleware may wrap ``send`` in ``asyncio.timeout`` (it needs a current
    task) and set and reset a context value around it (it needs one context throughout,
    also across a write that waits): every write runs so, none is taken for a failure."""
    span: contextvars.ContextVar[str | None] = contextvars.ContextVar("span", default=None)
    sock = _Socket()
    sock.open.clear()  # the first writes wait (the robot's receive window is full)

    async def wrapped(text: str) -> None:
        token = span.set(text)
        try:
            async with asyncio.timeout(5):
                await sock.write(text)
        finally:
            span.reset(token)

    out = OutboundQueue(wrapped, sock.close)
    out.put([OutboundQueue.payload(f"m{n}") for n in range(3)])
    await asyncio.sleep(0.01)
    sock.open.set()
    await out.flushed()
    out.put([OutboundQueue.payload("m3")])  # an idle connection's write that does not wait
    await out.flushed()
    assert sock.written == ["m0", "m1", "m2", "m3"]
    assert not out.broken and out.failed is None and sock.closed == []


async def test_a_failed_write_closes_the_socket_so_the_session_ends() -> None:
    """A write that fails drops the session's socket as gone: it is closed too (1011), so
    the session ends and is cleaned up instead of staying open and unreachable."""
    sock = _Socket()

    async def fails(text: str) -> None:
        raise RuntimeError("a middleware's send failed")

    out = OutboundQueue(fails, sock.close)
    out.put([OutboundQueue.payload("0")])
    await out.flushed()
    await asyncio.sleep(0.01)
    assert out.broken and sock.closed == [(WRITE_FAILED_CODE, WRITE_FAILED)]
    assert WRITE_FAILED_CODE == 1011


async def test_a_writer_cancelled_before_its_first_step_leaves_the_connection_idle() -> None:
    """A slow-consumer close in the iteration that started the writer cancels it before it
    ran: the connection is still left idle (no writer, nothing queued), so a close's flush
    does not wait its whole timeout."""
    sock = _Socket()
    sock.open.clear()
    out = OutboundQueue(sock.write, sock.close)
    out.put([OutboundQueue.payload("0")])
    writer = out._writer
    assert writer is not None
    out.slow("slow consumer: test")
    await asyncio.wait([writer], timeout=1)
    assert writer.cancelled()
    loop = asyncio.get_running_loop()
    began = loop.time()
    await out.flushed(timeout=2.0)
    assert loop.time() - began < 1.0
    assert out._writer is None and out._idle.is_set() and len(out) == 0


async def test_a_write_that_waits_is_finished_by_a_writer_and_later_messages_keep_order() -> None:
    sock = _Socket()
    sock.open.clear()  # the transport is not writable: the first write waits
    out = OutboundQueue(sock.write, sock.close)
    out.put([OutboundQueue.payload("0")])
    await asyncio.sleep(0)
    assert sock.written == [] and out._writer is not None
    assert len(out) == 1 and out.queued_bytes == 1  # the write under way still counts
    out.put([OutboundQueue.payload("1"), OutboundQueue.payload("2")])
    out.put([OutboundQueue.payload("3")])
    sock.open.set()
    await out.flushed()
    assert sock.written == ["0", "1", "2", "3"]
    assert len(out) == 0 and out.queued_bytes == 0 and out._writer is None


async def test_a_burst_whose_second_write_waits_queues_the_rest_behind_it_in_order() -> None:
    sock = _Socket()
    writes = 0

    async def write(text: str) -> None:
        nonlocal writes
        writes += 1
        if writes == 2:
            await sock.open.wait()
        sock.written.append(text)

    out = OutboundQueue(write, sock.close)
    sock.open.clear()
    out.put([OutboundQueue.payload(str(n)) for n in range(4)])
    await asyncio.sleep(0)
    assert sock.written == ["0"] and len(out) == 3  # "1" under way, "2" and "3" queued
    out.put([OutboundQueue.payload("4")])
    sock.open.set()
    await out.flushed()
    assert sock.written == ["0", "1", "2", "3", "4"] and out.queued_bytes == 0


async def test_a_write_that_fails_at_once_drops_the_burst_and_refuses_what_follows() -> None:
    sock = _Socket()
    tried: list[str] = []

    async def broken(text: str) -> None:
        tried.append(text)
        raise OSError("connection reset")

    out = OutboundQueue(broken, sock.close)
    out.put([OutboundQueue.payload("0"), OutboundQueue.payload("1")])
    await out.flushed()
    assert tried == ["0"] and out.broken and len(out) == 0 and out.queued_bytes == 0
    with pytest.raises(ConnectionError):
        out.put([OutboundQueue.payload("2")])


async def test_a_write_that_fails_after_waiting_drops_what_waits_behind_it() -> None:
    sock = _Socket()
    sock.open.clear()

    async def fails_later(text: str) -> None:
        await sock.open.wait()
        raise OSError("connection reset")

    out = OutboundQueue(fails_later, sock.close)
    out.put([OutboundQueue.payload("0"), OutboundQueue.payload("1")])
    await asyncio.sleep(0)
    assert out._writer is not None
    sock.open.set()
    await out.flushed()
    assert out.broken and len(out) == 0 and out.queued_bytes == 0
    with pytest.raises(ConnectionError):
        out.put([OutboundQueue.payload("2")])


async def test_a_slow_consumer_close_cancels_the_write_under_way() -> None:
    """The write waits; the stall closes the robot: the cancellation reaches that write (it does not linger), and nothing more is written."""
    sock = _Socket()
    sock.open.clear()
    cancelled: list[str] = []

    async def write(text: str) -> None:
        try:
            await sock.open.wait()
        except asyncio.CancelledError:
            cancelled.append(text)
            raise
        sock.written.append(text)

    out = OutboundQueue(write, sock.close, stall=0.05)
    out.put([OutboundQueue.payload("stuck"), OutboundQueue.payload("behind")])
    await asyncio.sleep(0)
    writer = out._writer
    assert writer is not None
    for _ in range(100):  # bounded: 1 s at most
        if sock.closed:
            break
        await asyncio.sleep(0.01)
    await asyncio.wait([writer], timeout=1)
    assert writer.cancelled() and cancelled == ["stuck"]
    assert sock.closed and sock.closed[0][0] == SLOW_CONSUMER_CODE
    sock.open.set()
    await asyncio.sleep(0.01)
    assert sock.written == [] and len(out) == 0
