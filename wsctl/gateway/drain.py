"""Draining an instance for a rolling deploy (``drain``/``undrain`` control ops).

On ``drain`` the instance enters the draining state at once (adapters refuse new robot
handshakes with 503 + Retry-After, /healthz answers 503 ``draining``, the liveness record says
``draining: 1``) and replies with the sessions it holds; then it closes them in paced batches
with close code 1012 (service restart), each entry removed fenced by its ``conn_id``, so the
robots reconnect to other instances. ``undrain`` stops the batches and accepts robots again;
a session already dropped by a batch it interrupts still has its entry removed.
The pacing runs here, not in the CLI: a drain completes even if the operator's terminal goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, Protocol

from wsctl.eventlog.model import EventName
from wsctl.gateway.events import EventSink
from wsctl.gateway.local import LocalConn, LocalConnections
from wsctl.gateway.routing import Decision
from wsctl.protocol.envelopes import CloseCode, Envelope, Op, ProtocolError, Status, drain_params
from wsctl.tasks import wait_within

__all__ = ["DRAIN_CLOSE_REASON", "Drainer"]

log = logging.getLogger("wsctl.gateway")

DRAIN_CLOSE_REASON = "service restart: reconnect to another instance"
RECORD_TIMEOUT = 5.0
MOVING_FOR = 300.0  # seconds a robot this instance drained is said to be moving
MOVING_MEMORY = 100_000  # robots remembered as drained (the oldest are forgotten first)


class DrainHost(Protocol):
    """What the drainer uses of :class:`wsctl.gateway.core.FleetCore` (no import cycle)."""

    instance_id: str
    local: LocalConnections
    events: EventSink

    def _lock(self, robot_id: str) -> asyncio.Lock: ...

    def _drop(self, conn: LocalConn) -> bool: ...

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None: ...

    async def _close_socket(self, conn: LocalConn, code: int, reason: str) -> None: ...

    async def _remove_entry_surely(self, conn: LocalConn) -> None: ...

    async def _answer(self, envelope: Envelope, status: Status, **kw: Any) -> None: ...

    async def write_liveness(self, stamp: str | None = None) -> None:
        """Write the instance's liveness record (it carries the draining flag)."""


class Drainer:
    """The draining state of one :class:`FleetCore` and the task closing its robots."""

    def __init__(self, core: DrainHost) -> None:
        self.core = core
        self.active = False
        self.closed_total = 0
        self._task: asyncio.Task[None] | None = None
        self._moved: OrderedDict[str, float] = OrderedDict()  # robot -> when drained (monotonic)

    def cancel(self) -> None:
        """Stop closing batches (undrain, or the instance stopping)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    @property
    def running(self) -> bool:
        """Still closing batches."""
        return self._task is not None and not self._task.done()

    async def handle(self, envelope: Envelope) -> None:
        """Answer a ``drain`` or ``undrain`` envelope: start (or restart) closing the
        instance's robots in paced batches, or stop and accept robots again."""
        core = self.core
        if envelope.op is Op.UNDRAIN:
            was = self.active
            self.cancel()
            self.active = False
            if was:
                core.events.emit(EventName.UNDRAINED, by=envelope.origin)
                log.info("instance %s accepts robots again (undrained)", core.instance_id)
            await self._publish_record()
            await core._answer(
                envelope,
                Status.UNDRAINED,
                data={"draining": False, "connections": len(core.local)},
            )
            return
        try:
            batch, interval = drain_params(envelope.message)
        except ProtocolError as exc:
            await core._answer(envelope, Status.REJECTED, reason=str(exc))
            return
        sessions = list(core.local)
        if not self.active:
            self.active = True
            core.events.emit(
                EventName.DRAINING,
                by=envelope.origin,
                batch=batch,
                interval=interval,
                connections=len(sessions),
            )
            log.info(
                "instance %s draining: %d robots, %d per batch every %gs",
                core.instance_id,
                len(sessions),
                batch,
                interval,
            )
        self.cancel()
        self._task = asyncio.create_task(self._run(sessions, batch, interval), name="drain")
        await self._publish_record()
        await core._answer(
            envelope,
            Status.DRAINING,
            data={
                "draining": True,
                "batch": batch,
                "interval": interval,
                "connections": [
                    {"robot_id": c.robot_id, "conn_id": c.conn_id, "since": c.since}
                    for c in sessions
                ],
            },
        )

    async def _publish_record(self) -> None:
        """Refresh the liveness record now (it carries ``draining``), not at the next beat."""
        # best effort: the next heartbeat writes the record anyway
        with contextlib.suppress(Exception):
            await wait_within(self.core.write_liveness(), RECORD_TIMEOUT)

    async def _run(self, sessions: list[LocalConn], batch: int, interval: float) -> None:
        number = 0
        for number, start in enumerate(range(0, len(sessions), batch), 1):
            if number > 1:
                await asyncio.sleep(interval)
            await asyncio.gather(*(self._close(c, number) for c in sessions[start : start + batch]))
        # a handshake accepted just before the drain began registers after the snapshot: close
        # those too, so a drained instance holds nothing (bounded: new ones are refused)
        late = [c for c in self.core.local if c not in sessions]
        if late:
            await asyncio.sleep(interval)
            await asyncio.gather(*(self._close(c, number + 1) for c in late))

    async def _close(self, conn: LocalConn, batch: int) -> None:
        """Close one session with 1012 and remove its entry (fenced), unless it already ended."""
        core = self.core
        async with core._lock(conn.robot_id):
            if not core._drop(conn):
                return
            self.closed_total += 1
            self._remember(conn.robot_id)
            core.events.emit(EventName.DRAINED, conn.robot_id, conn.conn_id, batch=batch)
            core._spawn(core._close_socket(conn, CloseCode.SERVICE_RESTART, DRAIN_CLOSE_REASON))
            # an undrain (or a new drain, or the instance stopping) may cancel the batch here:
            # the entry of this dropped socket still goes (queued for the clean-up loop)
            await core._remove_entry_surely(conn)

    def explain(self, robot_id: str, decision: Decision) -> Decision:
        """``decision`` for a message to ``robot_id``, with a reason that says the robot is
        moving when it is not connected because this instance drained it (in the last
        :data:`MOVING_FOR` seconds): nothing buffers such messages, so the sender should
        retry once the robot has reconnected elsewhere. Other decisions are returned as is."""
        if decision.status is not Status.NOT_CONNECTED:
            return decision
        why = self.moving(robot_id)
        return decision if why is None else replace(decision, reason=why)

    def moving(self, robot_id: str) -> str | None:
        """ "robot is moving: …; retry" when this instance drained ``robot_id`` in the last
        :data:`MOVING_FOR` seconds, else None."""
        since = self._moved.get(robot_id)
        if since is None:
            return None
        age = time.monotonic() - since
        if age > MOVING_FOR:
            return None
        me = self.core.instance_id
        why = f"instance {me} is draining" if self.active else f"instance {me} drained it"
        when = "" if self.active else f" {age:.0f}s ago"
        return f"robot is moving: {why}{when}; retry"

    def _remember(self, robot_id: str) -> None:
        self._moved.pop(robot_id, None)
        self._moved[robot_id] = time.monotonic()
        while len(self._moved) > MOVING_MEMORY:
            self._moved.popitem(last=False)

    def render(self, label: str) -> list[str]:
        """The drain lines of ``/metrics`` (draining gauge, robots closed by drains)."""
        return [
            "# TYPE wsctl_gateway_draining gauge",
            f"wsctl_gateway_draining{label} {1 if self.active else 0}",
            "# TYPE wsctl_gateway_drained_total counter",
            f"wsctl_gateway_drained_total{label} {self.closed_total}",
        ]
