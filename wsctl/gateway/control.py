"""The instance's control channel: its subscription (kept through Redis restarts and
failovers, each loss logged once), the dispatch of what arrives on it (single envelopes here,
batches and owner hints to :class:`~wsctl.gateway.batch_router.BatchRouter`), the answers to
``ping``, ``inventory``, ``resync``, ``kick`` and a robot ping, and the one reply each request
gets. Routing a ``send`` is :mod:`wsctl.gateway.sending`'s (through
:meth:`Core._route_envelope`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from wsctl import __version__
from wsctl.eventlog.model import EventName
from wsctl.gateway.batch_router import BatchRouter
from wsctl.gateway.dedup import RecentPayloads
from wsctl.gateway.drain import Drainer
from wsctl.gateway.local import LocalConn, close_reason
from wsctl.gateway.parts import CoreParts
from wsctl.protocol.batch import Batch, OwnerHint, decode_control
from wsctl.protocol.envelopes import (
    ROBOT_PING,
    ROBOT_PING_UNSUPPORTED,
    CloseCode,
    Envelope,
    Op,
    ProtocolError,
    Status,
    encode,
    fits,
    oversize,
    reply_to,
)
from wsctl.redis.errors import tls_problem
from wsctl.redis.pubsub import SubscriptionLost, publish, subscription
from wsctl.tasks import wait_within

__all__ = ["CONTROL_CONCURRENCY", "PING_TIMEOUT", "ControlChannel", "Core"]

log = logging.getLogger("wsctl.gateway")

# Control envelopes handled at once; the subscriber stops reading beyond this (backpressure),
# which keeps Redis connections (pool of 100 per node) well within bounds.
CONTROL_CONCURRENCY = 48
PING_TIMEOUT = 3.0


class Core(CoreParts, Protocol):
    """What the control channel uses of :class:`wsctl.gateway.core.FleetCore` (no import
    cycle)."""

    batches: BatchRouter
    drainer: Drainer
    recent: RecentPayloads
    subscribed: bool

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None: ...

    def _redis_recovered(self, where: str) -> None: ...

    async def _close_socket(self, conn: LocalConn, code: int, reason: str) -> None: ...

    def resync_soon(self) -> None:
        """Re-register every live session now (see
        :meth:`wsctl.gateway.core.FleetCore.resync_soon`)."""

    async def heartbeat_once(self) -> int:
        """Refresh every live local session and the liveness record now (see
        :meth:`wsctl.gateway.core.FleetCore.heartbeat_once`); how many were (re-)registered."""

    async def _route_envelope(self, envelope: Envelope) -> None: ...


class ControlChannel:
    """One instance's control channel (``{control_prefix}{instance_id}``): :meth:`run` is the
    subscriber loop the core starts; :meth:`handle` acts on one message."""

    def __init__(self, core: Core) -> None:
        self.core = core
        # the subscription: made once; lost since (monotonic time, logged as retrying)
        self._made = False
        self._lost: tuple[float, bool] | None = None
        self._slots = asyncio.Semaphore(CONTROL_CONCURRENCY)

    async def run(self) -> None:
        """Handle envelopes from our control channel, at most CONTROL_CONCURRENCY at once; the
        subscription itself survives node failures (see :func:`subscription`)."""
        channel = self.core.keys.control_channel(self.core.instance_id)
        async for data in subscription(self.core.client, channel, self._subscription_state):
            if self.core.finishing:  # not on cancellation alone: see stop()
                return
            if self.core.recent.seen(data, time.monotonic()):
                continue  # a copy of a message handled already (a retried PUBLISH)
            try:
                request = decode_control(data)
            except ProtocolError as exc:
                log.warning("ignored bad control envelope: %s", exc)
                continue
            if isinstance(request, Batch):
                await self.core.batches.queue.put(request)  # one worker: arrival order kept
                continue
            if isinstance(request, OwnerHint):
                self.core.batches.apply_hint(request)  # no I/O, no reply
                continue
            await self._slots.acquire()
            self.core._spawn(self._on_slot(request))

    def _subscription_state(self, subscribed: bool, exc: BaseException | None) -> None:
        """Track the control subscription. Once made, each loss is one warning line (requests
        published to the channel until it is made again are lost: their requesters time out)
        and counted in ``control_resubscribes`` when it is made again."""
        self.core.subscribed = subscribed
        if subscribed:
            self.core._redis_recovered("control channel")
            lost = self._lost
            if lost is not None:
                self.core.metrics.control_resubscribes += 1
                self._lost = None
                self.core.resync_soon()  # Redis may have restarted empty: re-register now
                if lost[1]:  # the loss was logged as "subscribing again"
                    log.info(
                        "control channel %s subscribed again after %.1fs",
                        self.core.keys.control_channel(self.core.instance_id),
                        time.monotonic() - lost[0],
                    )
            self._made = True
            return
        if exc is None:
            return
        if not self._made:  # never subscribed yet (Redis down at start)
            self.core._redis_failed("control channel", exc)
            return
        if self._lost is not None:
            return  # the same loss, retried: logged once
        channel = self.core.keys.control_channel(self.core.instance_id)
        if isinstance(exc, SubscriptionLost):
            self._lost = (time.monotonic(), False)
            log.warning(
                "control channel %s: subscription lost and made again (the connection was "
                "closed: Redis's client-output-buffer-limit pubsub, a CLIENT KILL or the "
                "network); requests published to it in between are lost",
                channel,
            )
            return
        self.core.metrics.redis_errors += 1
        self._lost = (time.monotonic(), True)
        reason = tls_problem(self.core.target, exc, probe=False) or self.core.target.scrub(str(exc))
        log.warning(
            "control channel %s: subscription lost (%s); subscribing again; requests "
            "published to it until then are lost",
            channel,
            reason,
        )

    async def _on_slot(self, envelope: Envelope) -> None:
        try:
            await self.handle_envelope(envelope)
        finally:
            self._slots.release()

    async def handle(self, data: str | bytes) -> None:
        """Act on one control envelope or batch and publish its reply (if it asked for one)."""
        try:
            request = decode_control(data)
        except ProtocolError as exc:
            log.warning("ignored bad control envelope: %s", exc)
            return
        if isinstance(request, Batch):
            await self.core.batches.handle(request)
        elif isinstance(request, OwnerHint):
            self.core.batches.apply_hint(request)
        else:
            await self.handle_envelope(request)

    async def handle_envelope(self, envelope: Envelope) -> None:
        """Act on one single-message (v1) envelope and publish its reply."""
        envelope = envelope.arrived(self.core.instance_id, time.time())
        try:
            if envelope.op is Op.PING and envelope.robot_id:
                await self._ping_robot(envelope)
            elif envelope.op is Op.PING:
                await self.answer(
                    envelope,
                    Status.PONG,
                    data={"connections": len(self.core.local), "version": __version__},
                )
            elif envelope.op is Op.RESYNC:
                count = await self.core.heartbeat_once()
                await self.answer(envelope, Status.RESYNCED, data={"reregistered": count})
            elif envelope.op is Op.INVENTORY:
                await self.answer(
                    envelope, Status.INVENTORY, data={"connections": self.core.local.inventory()}
                )
            elif envelope.op is Op.KICK:
                await self._kick(envelope)
            elif envelope.op in (Op.DRAIN, Op.UNDRAIN):
                await self.core.drainer.handle(envelope)
            else:
                # per-robot FIFO: envelopes for one robot are routed in arrival order
                async with self.core._lock(envelope.robot_id or ""):
                    await self.core._route_envelope(envelope)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis failed: counted and logged
            self.core._redis_failed("control", exc)
            with contextlib.suppress(Exception):  # the reply goes to the same Redis
                await self.answer(envelope, Status.ERROR, reason=str(exc)[:200])

    async def _kick(self, envelope: Envelope) -> None:
        """Close the robot's socket here and remove its entry, fenced by its conn_id (which
        keeps the entry when a newer session already owns it, as after a reconnect elsewhere).

        Without ``message`` it is a supersede kick from the instance the robot reconnected to
        (close code 4001); with one, an operator's kick (``wsctl kick``): 4002 with ``message``
        as the close reason.
        """
        robot_id = envelope.robot_id or ""
        conn = self.core.local.get(robot_id)
        kicked = conn is not None and envelope.conn_id in (None, conn.conn_id)
        if conn is not None and kicked:
            async with self.core._lock(robot_id):
                if self.core._drop(conn):
                    if envelope.message is None:
                        self.core.metrics.connections_superseded += 1
                        self.core.events.emit(
                            EventName.SUPERSEDED, robot_id, conn.conn_id, by=envelope.origin
                        )
                        self.core._spawn(
                            self.core._close_socket(
                                conn, CloseCode.SUPERSEDED, "superseded by a newer connection"
                            )
                        )
                    else:
                        self.core.metrics.connections_kicked += 1
                        self.core.events.emit(
                            EventName.KICKED,
                            robot_id,
                            conn.conn_id,
                            by=envelope.origin,
                            reason=close_reason(envelope.message or ""),
                        )
                        self.core._spawn(
                            self.core._close_socket(
                                conn, CloseCode.KICKED, envelope.message or "kicked"
                            )
                        )
                    await self.core._remove_entry(conn)
        await self.answer(
            envelope,
            Status.KICKED if kicked else Status.NOT_CONNECTED,
            reason=None if kicked else "no such session on this instance",
        )

    async def _ping_robot(self, envelope: Envelope) -> None:
        """A WebSocket ping to the robot itself: proves this instance holds a live socket."""
        conn = self.core.local.get(envelope.robot_id or "")
        if conn is None:
            await self.answer(envelope, Status.NOT_CONNECTED, reason="no socket on this instance")
            return
        ping: Callable[[], Awaitable[Any]] | None = getattr(conn.sock, "ping", None)
        if ping is None:
            await self.answer(
                envelope,
                Status.PONG,
                data={ROBOT_PING: ROBOT_PING_UNSUPPORTED, "conn_id": conn.conn_id},
            )
            return
        started = time.perf_counter()
        try:
            await wait_within(ping(), timeout=PING_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the transport's ping failed: the reply says how
            await self.answer(
                envelope,
                Status.NOT_CONNECTED,
                reason=f"socket did not answer a ping: {exc!r}"[:200],
            )
            return
        await self.answer(
            envelope,
            Status.PONG,
            data={
                "robot_rtt_ms": round((time.perf_counter() - started) * 1000, 3),
                "conn_id": conn.conn_id,
            },
        )

    async def fail(self, envelope: Envelope, status: Status, reason: str | None) -> None:
        """Count a message that could not be delivered and say why to the sender."""
        self.core.metrics.messages_failed += 1
        self.core.events.emit(
            EventName.FORWARD_FAILED,
            envelope.robot_id or "",
            status=status.value,
            reason=reason,
            origin=envelope.origin,
            hops=envelope.hops,
        )
        await self.answer(envelope, status, reason=reason)

    async def answer(self, envelope: Envelope, status: Status, **kw: Any) -> None:
        """Publish exactly one reply to the envelope's ``reply_to`` channel (if it has one).
        A reply too large for one message (the inventory of a huge instance) is replaced by an
        ``error`` reply saying so; one that cannot be made small is not sent (logged)."""
        if not envelope.reply_to:
            return
        text = encode(reply_to(envelope, status, self.core.instance_id, **kw))
        problem = oversize(text)
        if problem is not None:
            self.core.metrics.envelopes_refused += 1
            text = encode(reply_to(envelope, Status.ERROR, self.core.instance_id, reason=problem))
            log.warning(
                "reply to %s %s too large, answered error instead: %s",
                envelope.op.value,
                envelope.id[:8],
                problem,
            )
            if not fits(text):
                return
        await publish(self.core.client, envelope.reply_to, text)
