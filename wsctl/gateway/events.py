"""The instance's event sink: events leave the session path at once and reach Redis in batches.

:meth:`EventSink.emit` is synchronous and O(1): it appends to a bounded in-memory queue and
never waits for Redis. A background task writes the queue in pipelined batches (each event
XADDed to the instance's capped stream and to the robot's, see :mod:`wsctl.eventlog.model`). When Redis
is down or slow a batch fails within the socket timeout and is dropped with a counter; when the
queue is full new events are dropped with the same counter. A robot is never blocked by events.

Batches go through :func:`wsctl.redis.internals.bulk_execute` (commands packed by wsctl, one raw
pipeline per node): redis-py's per-command pipeline machinery cost the gateway ~90 µs of CPU
per event, several percent of a session's total; packed, it is a fraction of that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from wsctl.eventlog.index import PRUNE_DEADLINE, prune_index
from wsctl.eventlog.model import Event, EventLimits, event_commands
from wsctl.redis.internals import bulk_execute
from wsctl.redis.target import AsyncClient
from wsctl.registry.keys import Keyspace
from wsctl.tasks import settle, wait_within

__all__ = ["EventSink"]

log = logging.getLogger("wsctl.gateway")

FLUSH_INTERVAL = 0.25  # seconds an event waits at most before its batch is written
FLUSH_BATCH = 2000  # events per pipeline
MAX_PENDING = 100_000  # queued events beyond this are dropped (counted)
FLUSH_TIMEOUT = 10.0  # one batch's write, on top of the client's own socket timeout
PRUNE_FIRST = 10.0  # seconds after start before the writer index is pruned (not in the rush)
PRUNE_EVERY = 6 * 3600.0  # then this often (and 60 s after a failed prune)
PRUNE_RETRY = 60.0


class EventSink:
    """Batched, lossy-under-outage event writer of one instance (or any long-lived writer)."""

    def __init__(
        self,
        keys: Keyspace,
        writer: str,
        limits: EventLimits | None = None,
        *,
        enabled: bool = True,
        max_pending: int = MAX_PENDING,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        self.keys = keys
        self.writer = writer
        self.limits = limits or EventLimits()
        self.enabled = enabled
        self.max_pending = max_pending
        self.flush_interval = flush_interval
        self.written = 0
        self.dropped = 0
        self.index_pruned = 0  # names of gone writers' streams removed from the index
        self._pending: deque[Event] = deque()
        self._client: AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._prune_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._failing = False
        self._stopping = False

    @property
    def pending(self) -> int:
        """Events queued and not yet written to the instance's stream."""
        return len(self._pending)

    def emit(self, event: str, robot_id: str = "", conn_id: str = "", **detail: Any) -> None:
        """Queue one event (no I/O). Dropped, and counted, when the queue is full."""
        if not self.enabled:
            return
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        self._pending.append(
            Event(event, robot_id, self.writer, conn_id, detail)  # at: now
        )
        if len(self._pending) >= FLUSH_BATCH:
            self._wake.set()

    def start(self, client: AsyncClient) -> None:
        """Start writing queued events on ``client`` in the background (when enabled)."""
        self._client = client
        if self.enabled and self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._loop(), name="events")
            self._prune_task = asyncio.create_task(self._prune_loop(), name="events-prune")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the writer after a last flush of what is queued (bounded by ``grace``)."""
        if self._task is not None:
            # the flag ends the loop even if a wait_for inside swallows the cancellation
            self._stopping = True
            await settle(self._task)
            self._task = None
        if self._prune_task is not None:
            self._prune_task.cancel()
            await settle(self._prune_task)
            self._prune_task = None
        deadline = time.monotonic() + grace
        while self._pending and self._client is not None and time.monotonic() < deadline:
            if not await self.flush(timeout=max(0.1, deadline - time.monotonic())):
                break
        if self._pending:
            self.dropped += len(self._pending)
            self._pending.clear()

    async def _loop(self) -> None:
        while not self._stopping:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation
            # that arrives as the wake-up completes, and stop() would then wait forever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            # write everything queued, batch by batch; a failure drops that batch only
            for _ in range(self.max_pending // FLUSH_BATCH + 1):
                if not self._pending or self._stopping:
                    break
                await self.flush()

    async def _prune_loop(self) -> None:
        """Prune the writer index (:func:`wsctl.eventlog.index.prune_index`) shortly after start,
        then every :data:`PRUNE_EVERY` seconds: names of streams that are gone leave it."""
        delay = PRUNE_FIRST
        while not self._stopping:
            await asyncio.sleep(delay)
            if self._client is None:
                continue
            try:
                async with asyncio.timeout(PRUNE_DEADLINE + FLUSH_TIMEOUT):
                    outcome = await prune_index(
                        self._client, self.keys, retention_s=self.limits.retention_s
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # best effort: the next pass tries again
                log.debug("event index not pruned: %r", exc)
                delay = PRUNE_RETRY
                continue
            self.index_pruned += outcome.pruned
            if outcome.pruned:
                log.info("event index: %d gone writers' streams unlisted", outcome.pruned)
            delay = PRUNE_EVERY if outcome.complete else PRUNE_RETRY

    async def flush(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Write one batch of queued events. False (batch dropped, counted) on any failure."""
        if not self._pending or self._client is None:
            return True
        batch = [self._pending.popleft() for _ in range(min(FLUSH_BATCH, len(self._pending)))]
        calls, starts = event_commands(self.keys, self.writer, batch, self.limits)
        try:
            results = await wait_within(bulk_execute(self._client, calls), timeout)
            # the stream's name in the index after every batch, and after its XADDs (not in
            # the same pipeline: on a cluster they run in parallel), so a prune that removed
            # it as gone just before never leaves a written stream unlisted
            await wait_within(
                self._client.sadd(self.keys.events_index, self.keys.events_key(self.writer)),
                timeout,
            )
        except asyncio.CancelledError:
            self.dropped += len(batch)
            raise
        except Exception as exc:  # events are best effort: counted as dropped, never raised
            self.dropped += len(batch)
            if not self._failing:
                self._failing = True
                log.warning("events dropped, redis unavailable: %s", type(exc).__name__)
            return False
        if self._failing:
            self._failing = False
            log.info("events are written again (%d dropped so far)", self.dropped)
        # an XADD refused by Redis (a key of another type, OOM) loses that event only
        failed = sum(1 for at in starts if isinstance(results[at], Exception))
        self.dropped += failed
        self.written += len(batch) - failed
        return True

    def render(self, label: str) -> list[str]:
        """Prometheus lines: written/dropped counters and the queue gauge."""
        return [
            "# TYPE wsctl_gateway_events_written_total counter",
            f"wsctl_gateway_events_written_total{label} {self.written}",
            "# TYPE wsctl_gateway_events_dropped_total counter",
            f"wsctl_gateway_events_dropped_total{label} {self.dropped}",
            "# TYPE wsctl_gateway_events_pending gauge",
            f"wsctl_gateway_events_pending{label} {len(self._pending)}",
            "# TYPE wsctl_gateway_events_index_pruned_total counter",
            f"wsctl_gateway_events_index_pruned_total{label} {self.index_pruned}",
        ]
