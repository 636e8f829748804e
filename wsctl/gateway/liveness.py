"""An instance's liveness: the heartbeat loop (every live session's entry refreshed in
pipelined batches, vanished entries re-registered by the same fenced script, the liveness
record written with the instance's counters) and the Redis probe that ``/healthz`` and
``/metrics``' ``wsctl_gateway_redis_up`` both answer from.

A beat comes every heartbeat interval, or sooner: when Redis failed elsewhere (a send, the
control channel), so ``redis_up`` says at once whether it is back; and when a subscription was
made again (Redis restarted, maybe empty), so every live session is registered again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from datetime import datetime
from typing import Any, Protocol

from wsctl import __version__
from wsctl.eventlog.model import EventName
from wsctl.gateway.local import LocalConn
from wsctl.gateway.parts import CoreParts
from wsctl.protocol.batch import BATCH_VERSION
from wsctl.protocol.envelopes import CloseCode
from wsctl.protocol.rpc import Inbox
from wsctl.redis.factory import is_cluster
from wsctl.redis.target import AsyncClient
from wsctl.redis.topology import refresh_topology
from wsctl.registry.instances import InstanceRecord, write_record
from wsctl.registry.model import format_ts, utcnow
from wsctl.registry.store import TouchOutcome
from wsctl.tasks import wait_within

__all__ = ["HEARTBEAT_DEADLINE", "INBOX_LOOK", "PROBE_FRESH", "PROBE_TIMEOUT", "Core", "Liveness"]

TOUCH_CHUNK = 1000
# A heartbeat pass that takes longer than this is abandoned (and retried): every loop bounded.
HEARTBEAT_DEADLINE = 60.0
# /healthz and /metrics' redis_up: a PING answered within PROBE_TIMEOUT seconds, at most one
# per PROBE_FRESH seconds (a scrape or a load balancer's check each second costs one PING).
PROBE_TIMEOUT = 2.0
PROBE_FRESH = 1.0
# How often the heartbeat loop looks whether the reply inbox was subscribed again (no I/O).
INBOX_LOOK = 0.25


class Core(CoreParts, Protocol):
    """What liveness uses of :class:`wsctl.gateway.core.FleetCore` (no import cycle)."""

    redis_ok: bool
    started_at: datetime
    _failing: set[str]
    _inbox: Inbox | None
    _client: AsyncClient | None

    @property
    def draining(self) -> bool:
        """Whether the instance drains."""

    async def heartbeat_once(self) -> int:
        """One beat (the loop calls it through the core, where it may be wrapped)."""

    async def write_liveness(self, stamp: str | None = None) -> None:
        """Write the liveness record (through the core, as the drain does)."""

    async def _register(self, conn: LocalConn) -> None: ...

    def _queue_cleanup(self, conn: LocalConn, failed: bool = False) -> None: ...

    def _spawn(self, coro: Any) -> None: ...

    async def _close_socket(self, conn: LocalConn, code: int, reason: str) -> None: ...

    def _redis_recovered(self, where: str) -> None: ...


class Liveness:
    """One run's heartbeats and Redis probe (see the module docstring). The loop beats
    through the core's ``heartbeat_once`` (what an adapter or a test may wrap)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._beat_now = asyncio.Event()  # wakes the heartbeat loop before its interval
        # the last Redis probe (/healthz, /metrics): when it ended, and the one in flight
        self._probed_at = -60.0
        self._probe: asyncio.Future[bool] | None = None

    def beat_soon(self) -> None:
        """Beat at once: Redis failed elsewhere, and the beat tells whether it is back."""
        self._beat_now.set()

    async def run(self) -> None:
        """The heartbeat loop, until the core finishes (see :meth:`_until_beat`)."""
        core = self.core
        interval = core.config.heartbeat_interval
        delay = interval
        while not core.finishing:  # not on cancellation alone: see stop()
            # a beat every interval, or at once when Redis failed elsewhere (a send, the
            # control channel's work): the beat tells whether it is back, and redis_up says so;
            # or when a subscription came back (Redis restarted, maybe empty: see resync_soon)
            await self._until_beat(delay)
            self._beat_now.clear()
            if core.finishing:
                return
            try:
                await wait_within(core.heartbeat_once(), HEARTBEAT_DEADLINE)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis failed: counted, logged, retried
                core._redis_failed("heartbeat", exc)
                # retry soon (0.2 s doubling), never later than one interval
                delay = min(interval, max(0.2, delay * 2 if delay < interval else 0.2))
                if is_cluster(core.client):
                    # a refresh that fails is retried next beat
                    with contextlib.suppress(Exception):
                        await refresh_topology(core.client)
                continue
            for where in sorted(core._failing - {"control channel"}):
                core._redis_recovered(where)  # every part: Redis answers again
            core.redis_ok = True
            delay = interval

    def resync_soon(self) -> None:
        """Beat now: Redis came back from a loss this instance noticed (its control
        subscription or reply inbox was made again), and a restarted Redis may have lost the
        registry, so every live session is re-registered at once (fenced, as each heartbeat
        does: an entry another session holds now is never overwritten) instead of after up
        to one heartbeat interval in which other instances find no entry."""
        self._beat_now.set()

    async def _until_beat(self, delay: float) -> None:
        """Wait ``delay`` seconds, or less: until :meth:`resync_soon` (or a failure elsewhere)
        asks for a beat, or the reply inbox was subscribed again since the last look."""
        core = self.core
        deadline = time.monotonic() + delay
        seen = core._inbox.resubscribed if core._inbox is not None else 0
        while not self._beat_now.is_set() and not core.finishing:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await wait_within(self._beat_now.wait(), min(left, INBOX_LOOK))
            now = core._inbox.resubscribed if core._inbox is not None else 0
            if now != seen:
                return  # the inbox came back: Redis may have restarted empty

    async def beat(self) -> int:
        """Refresh every live local session's entry (re-registering vanished ones) and the
        liveness record. Returns how many entries were (re-)registered."""
        core = self.core
        stamp = format_ts(utcnow())
        reregistered = 0
        conns = list(core.local)
        for conn in conns:
            if not conn.registered and not conn.closed:
                async with core._lock(conn.robot_id):
                    current = core.local.get(conn.robot_id) is conn
                    if current and not conn.closed and not conn.registered:
                        await core._register(conn)
                        core.metrics.reregistered += 1
                        reregistered += 1
                        core.events.emit(EventName.REREGISTERED, conn.robot_id, conn.conn_id)
        active = [c for c in conns if c.registered]
        for start in range(0, len(active), TOUCH_CHUNK):
            # sessions closed since the snapshot are skipped here...
            chunk = [c for c in active[start : start + TOUCH_CHUNK] if not c.closed]
            if not chunk:
                continue
            results = await core.store.touch_many(
                [(c.robot_id, c.conn_id, stamp, c.registration) for c in chunk]
            )
            for conn, result in zip(chunk, results, strict=True):
                if result is TouchOutcome.REREGISTERED:
                    if conn.closed:
                        # ...and one that closed while the batch was in flight, whose fenced
                        # delete ran before our TOUCH re-created it, is deleted again
                        core.metrics.closed_entries_recreated += 1
                        core._queue_cleanup(conn)
                    else:
                        core.metrics.reregistered += 1
                        reregistered += 1
                        core.events.emit(
                            EventName.REREGISTERED, conn.robot_id, conn.conn_id, entry="vanished"
                        )
                elif result is TouchOutcome.SUPERSEDED and core._drop(conn):
                    core.metrics.connections_superseded += 1
                    core.events.emit(
                        EventName.SUPERSEDED, conn.robot_id, conn.conn_id, by="registry"
                    )
                    core._spawn(
                        core._close_socket(
                            conn, CloseCode.SUPERSEDED, "superseded by a newer connection"
                        )
                    )
        await core.write_liveness(stamp)
        return reregistered

    async def write_liveness(self, stamp: str | None = None) -> None:
        """Write the instance's liveness record (every heartbeat, and when draining changes),
        with its counters so far (``wsctl top`` reads rates from Redis alone)."""
        core = self.core
        m = core.metrics
        record = InstanceRecord(
            instance_id=core.instance_id,
            host=core.config.host,
            port=core.config.port,
            pid=os.getpid(),
            ws_url=core.config.ws_url,
            started_at=format_ts(core.started_at),
            last_seen=stamp or format_ts(utcnow()),
            version=__version__,
            connections=len(core.local),
            protocol=BATCH_VERSION,
            draining=core.draining,
            heartbeat_interval=core.config.heartbeat_interval,
            messages_delivered=m.messages_delivered,
            messages_forwarded=m.messages_forwarded,
            messages_failed=m.messages_failed,
            connections_opened=m.connections_opened,
            connections_closed=m.connections_closed,
            redis_errors=m.redis_errors,
            # from a heartbeat (``stamp``): its batch just went through
            redis_up=stamp is not None or core.redis_ok,
        )
        await write_record(core.client, core.keys, record, ttl=core.config.timeout)

    async def probe_redis(self) -> bool:
        """Is Redis up: the one fact behind ``/healthz``'s ``redis unavailable`` and
        ``/metrics``' ``wsctl_gateway_redis_up`` (the core's ``redis_ok``), so the two always agree.

        A PING answered within :data:`PROBE_TIMEOUT` seconds, asked at most once per
        :data:`PROBE_FRESH` seconds (callers in between, and callers while one is in flight,
        get its answer): ``redis_ok`` is set from it, as heartbeats and failed calls set it
        between probes. A busy connection pool says nothing about Redis: ``redis_ok`` is kept.
        False when the core is not running."""
        core = self.core
        if core._client is None:
            return False
        if time.monotonic() - self._probed_at < PROBE_FRESH:
            return core.redis_ok
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._ping(core._client))
        # shielded: a caller that gives up (an HTTP client gone) leaves it to the others
        return await asyncio.shield(self._probe)

    async def _ping(self, client: AsyncClient) -> bool:
        core = self.core
        try:
            await wait_within(client.ping(), PROBE_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # down, frozen or refusing: redis_ok says so (or busy: kept)
            core._redis_failed("health check", exc)
        else:
            core._redis_recovered("health check")
            core.redis_ok = True
        finally:
            self._probed_at = time.monotonic()
        return core.redis_ok
