"""What waits to be written to one robot's socket, and the slow-consumer rule both adapters
share. No transport imports (the FastAPI adapter hands in its socket's ``send_text``).

A robot's messages are written in the order the instance took them, whatever path took them
(a batch from the control channel, the app's own ``send``/``publish``/``send_many``, a single
``send`` envelope). Taking a message never waits for the robot: a transport that can write
without waiting (``websockets``: frames go into the connection's write buffer) does so, and
one that cannot (ASGI: ``send`` is a coroutine) gets a per-connection :class:`OutboundQueue`
whose writer task writes what a robot got back to back, and waits alone when the robot's
receive window is full. So one robot that stops reading never delays anybody else's messages.
A write that fails takes the socket for gone: what waits for it is dropped and the socket
closed (:data:`WRITE_FAILED_CODE`, 1011), so the session ends and is cleaned up.

A robot that stops reading is a **slow consumer** and is closed with
:data:`SLOW_CONSUMER_CODE` (1008, policy violation) and a reason starting ``slow consumer``,
recorded in the event log like every other close:

- when more than :data:`OUTBOUND_BYTES` wait for it (both adapters; for ``websockets`` the
  connection's write buffer), or more than :data:`OUTBOUND_MESSAGES` messages (the queue);
- when one write to it has waited longer than :data:`WRITE_STALL` seconds (the queue; the
  ``websockets`` adapter's keepalive pings close such a robot).

A sender that waits for its outcome (the app's ``send`` and ``publish`` to a robot held here)
is held back instead while the robot reads: over half a bound, it waits for the robot's writes
to go on (:meth:`OutboundQueue.room`), so a loop of awaited sends to a robot that reads never
makes it a slow consumer; a robot none of whose writes completes for :data:`WRITE_STALL`
seconds is one. Paths that must not wait for one robot (a batch for many) take or refuse.

The message that finds the robot over a bound is not taken: its outcome is ``not_connected``
with that reason, never ``delivered``. ``delivered`` means taken by the robot's connection on
the instance that holds it (its write buffer or queue), in order; not that the robot read it.
Messages a slow consumer had not read when it was closed are lost with its connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from wsctl.gateway.batching import SharedText
from wsctl.protocol.envelopes import CloseCode, format_bytes
from wsctl.tasks import settle, wait_within

__all__ = [
    "CLOSE_WAIT",
    "OUTBOUND_BYTES",
    "OUTBOUND_MESSAGES",
    "ROOM_POLL",
    "SLOW_CONSUMER",
    "SLOW_CONSUMER_CODE",
    "WRITE_FAILED",
    "WRITE_FAILED_CODE",
    "WRITE_STALL",
    "OutboundQueue",
    "SlowConsumer",
    "slow_reason",
]

log = logging.getLogger("wsctl.gateway")

# Bytes that may wait for one robot (8 times the default message limit): beyond, the robot is
# a slow consumer. A robot that reads keeps its queue near empty; a burst of a few thousand
# small messages or a few large ones fits.
OUTBOUND_BYTES = 8 << 20
# Messages that may wait for one robot in an outbound queue.
OUTBOUND_MESSAGES = 10_000
# Seconds one write to a robot may wait (its receive window full) before it is a slow consumer.
WRITE_STALL = 10.0
# Seconds between two looks at a write buffer a sender waits to drain (the websockets adapter,
# which has no event for it).
ROOM_POLL = 0.005
# Seconds a close waits for what is queued before it to be written (a kick's last messages).
CLOSE_FLUSH = 1.0
# Seconds the close handshake of a slow consumer may take (it does not read: it may never end).
CLOSE_WAIT = 2.0

SLOW_CONSUMER_CODE = int(CloseCode.POLICY_VIOLATION)
# The close code and reason of a socket whose write failed.
WRITE_FAILED_CODE = int(CloseCode.INTERNAL_ERROR)
WRITE_FAILED = "write failed"
# How every slow-consumer close reason (and outcome reason) starts.
SLOW_CONSUMER = "slow consumer"


class SlowConsumer(ConnectionError):
    """The robot does not read fast enough: the message was not taken, the robot is closed.
    ``reason`` is the close reason (and the outcome's)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def slow_reason(queued_bytes: int, queued: int | None = None) -> str:
    """The close reason (and outcome reason) for a robot with this much waiting for it."""
    count = f" in {queued:,} messages" if queued is not None else ""
    return f"{SLOW_CONSUMER}: {format_bytes(queued_bytes)}{count} not read"


class OutboundQueue:
    """One robot's messages waiting to be written through an awaiting ``write`` (an ASGI
    socket's ``send_text``), in order, by a writer task that runs while the queue is not
    empty. Bounded (``max_bytes``, ``max_messages``) and watched (``stall``): a robot over
    either bound, or whose write waits longer than ``stall`` seconds, is a slow consumer
    (:class:`SlowConsumer` from :meth:`put`; ``close`` is called with the code and reason)."""

    def __init__(
        self,
        write: Callable[[str], Awaitable[None]],
        close: Callable[[int, str], Awaitable[None]],
        *,
        max_bytes: int = OUTBOUND_BYTES,
        max_messages: int = OUTBOUND_MESSAGES,
        stall: float = WRITE_STALL,
    ) -> None:
        self._write = write
        self._close = close
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self.stall = stall
        self._queue: collections.deque[SharedText] = collections.deque()
        self.queued_bytes = 0
        self.failed: str | None = None  # the slow-consumer reason, once closed as one
        self.broken = False  # a write failed: the socket is gone
        self.on_slow: Callable[[int, str], None] | None = None  # records the close (event log)
        self._writer: asyncio.Task[None] | None = None
        self._writing_since: float | None = None  # loop time the current write started
        self._watch: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._progress = asyncio.Event()  # set as each write completes (room() waits on it)
        self._closer: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def crowded(self) -> bool:
        """More than half a bound waits for the robot: a sender that can wait should."""
        return self.queued_bytes * 2 > self.max_bytes or len(self._queue) * 2 > self.max_messages

    async def room(self) -> None:
        """Wait while the queue is :meth:`crowded` and the robot's writes go on (a sender
        faster than its robot reads is held back, never taken for a slow consumer); a robot
        none of whose writes completes for ``stall`` seconds is one (closed). Raises
        :class:`SlowConsumer` once it is, ConnectionError when the socket is gone."""
        while self.crowded() and self.failed is None and not self.broken:
            self._progress.clear()
            try:
                await wait_within(self._progress.wait(), self.stall)
            except TimeoutError:
                self.slow(slow_reason(self.queued_bytes, len(self._queue)))
        if self.failed is not None:
            raise SlowConsumer(self.failed)
        if self.broken:
            raise ConnectionError("socket closed")

    def put(self, payloads: Sequence[SharedText]) -> None:
        """Queue ``payloads`` (all or none) and make sure the writer runs. Raises
        :class:`SlowConsumer` when the robot is over a bound (then closed) or was closed as a
        slow consumer, ConnectionError when the socket was closed otherwise (a write failed)."""
        if self.failed is not None:
            raise SlowConsumer(self.failed)
        if self.broken:
            raise ConnectionError("socket closed")
        queue = self._queue
        one = len(payloads) == 1  # the common case, without a generator
        size = len(payloads[0].data) if one else sum(len(p.data) for p in payloads)
        count = len(queue) + len(payloads)
        if self.queued_bytes + size > self.max_bytes or count > self.max_messages:
            self.slow(slow_reason(self.queued_bytes + size, count))
            raise SlowConsumer(self.failed or "slow consumer")
        queue.extend(payloads)
        self.queued_bytes += size
        if self._writer is None:
            self._idle.clear()
            writer = asyncio.get_running_loop().create_task(self._drain())
            writer.add_done_callback(self._writer_ended)
            self._writer = writer

    async def _drain(self) -> None:
        """Write what is queued, back to back and in order, while the connection is healthy:
        one writer task per burst, so every step of every write runs in a task (an app's ASGI
        middleware around ``send`` may need ``asyncio.current_task()``, e.g. for
        ``asyncio.timeout``, and one context throughout, e.g. a contextvar set and reset
        around the send). A write that fails takes the socket for gone: what waits is
        dropped and the socket closed (:meth:`_close_broken`)."""
        loop = asyncio.get_running_loop()
        queue = self._queue
        if self._watch is None:  # one watchdog per connection, armed while it writes
            self._watch = loop.call_later(self.stall, self._check_stall)
        try:
            while queue and self.failed is None and not self.broken:
                payload = queue[0]
                self._writing_since = loop.time()
                await self._write(payload.text)
                self._wrote(queue.popleft())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket is gone: what waits is lost with it
            log.debug("outbound write failed: %r", exc)
            self.broken = True
            if self.failed is None:  # else closed as a slow consumer already
                self._closer = loop.create_task(self._close_broken())
        finally:
            self._ended()

    def _writer_ended(self, writer: asyncio.Task[None]) -> None:
        """The writer task is done: clean up if :meth:`_drain` did not (a writer cancelled
        before its first step never runs its body, ``finally`` included)."""
        if self._writer is writer:
            self._ended()

    def _ended(self) -> None:
        """The writer stops: what waits is dropped if the robot is closed or the socket
        gone, and the connection is idle (a later :meth:`put` starts a writer)."""
        self._writing_since = None
        if self.failed is not None or self.broken:
            self._queue.clear()
            self.queued_bytes = 0
            self._disarm()
        self._writer = None
        self._idle.set()
        self._progress.set()

    def _wrote(self, payload: SharedText) -> None:
        self._writing_since = None
        self.queued_bytes -= len(payload.data)
        self._progress.set()

    def _check_stall(self) -> None:
        """The connection's watchdog, armed when a writer starts and left armed across
        writers (not a timer per write or per writer): a write that started ``stall``
        seconds ago and still waits makes the robot a slow consumer; else it looks again
        when the current write would stall, or ``stall`` seconds on while the queue is being
        written, and disarms once the connection is idle (the next writer arms it)."""
        self._watch = None
        if self.failed is not None or self.broken:
            return
        since = self._writing_since
        now = asyncio.get_running_loop().time()
        if since is not None and now - since >= self.stall:
            self.slow(slow_reason(self.queued_bytes, len(self._queue)))
            return
        if self._writer is None:
            return  # idle: nothing can stall until the next writer, which arms it again
        delay = self.stall if since is None else self.stall - (now - since)
        self._watch = asyncio.get_running_loop().call_later(delay, self._check_stall)

    def _disarm(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def slow(self, reason: str) -> None:
        """Close the robot as a slow consumer (once): what waits is dropped, the writer
        stopped, the close recorded (``on_slow``) and sent in the background."""
        if self.failed is not None:
            return
        self.failed = reason
        log.info("closing a slow consumer: %s", reason)
        if self.on_slow is not None:
            self.on_slow(SLOW_CONSUMER_CODE, reason)
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
        self._disarm()
        self._queue.clear()
        self.queued_bytes = 0
        self._closer = asyncio.get_running_loop().create_task(self._close_slow(reason))

    async def _close_slow(self, reason: str) -> None:
        with contextlib.suppress(Exception):  # it does not read: the handshake may never end
            await wait_within(self._close(SLOW_CONSUMER_CODE, reason), CLOSE_WAIT + 1)

    async def _close_broken(self) -> None:
        """Close a socket whose write failed (bounded, in the background): the session ends
        and is cleaned up as every other, so a session dropped for a failed write never stays
        an open socket nobody can reach (a write may fail while the socket is fine, e.g. an
        app's middleware around ``send`` raising)."""
        with contextlib.suppress(Exception):  # the socket may be gone already
            await wait_within(self._close(WRITE_FAILED_CODE, WRITE_FAILED), CLOSE_WAIT + 1)

    async def flushed(self, timeout: float = CLOSE_FLUSH) -> None:
        """Wait (at most ``timeout`` seconds) until what is queued has been written; then
        stop the writer (a close follows)."""
        with contextlib.suppress(TimeoutError):
            await wait_within(self._idle.wait(), timeout)
        writer = self._writer
        if writer is not None:
            await settle(writer)
        self._disarm()

    @staticmethod
    def payload(text: str) -> SharedText:
        """``text`` as a queue item (its UTF-8 bytes; a lone surrogate raises here, before
        anything is queued)."""
        return SharedText(text, text.encode("utf-8"))
