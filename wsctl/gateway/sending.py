"""Where a message for a robot goes, from this instance: a ``send`` arriving on the control
channel (written to the socket here, forwarded to the owner at most
:data:`~wsctl.protocol.envelopes.MAX_HOPS` times, or failed with a reply), and the app's own
sends (``send``, ``publish``, ``send_many``), written here when the robot's socket is here,
else through the outbox or the fan-out. The decision itself is
:func:`wsctl.gateway.routing.decide` (pure)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol

from wsctl.gateway.batch_router import BatchRouter
from wsctl.gateway.batching import SharedText
from wsctl.gateway.drain import Drainer
from wsctl.gateway.local import LocalConn
from wsctl.gateway.outbound import SlowConsumer
from wsctl.gateway.outbox import Outbox
from wsctl.gateway.outcomes import SendOutcome, SendResult, is_redis_failure, redis_reason
from wsctl.gateway.parts import CoreParts
from wsctl.gateway.routing import Decision, LocalSocket, Route, decide
from wsctl.protocol.envelopes import Envelope, Status, encode, message_problem, oversize
from wsctl.protocol.fanout import (
    FanOutcome,
    FanoutResult,
    FanoutSummary,
    RobotOutcome,
    Selection,
    selection_of,
)
from wsctl.protocol.rpc import Inbox
from wsctl.redis.pubsub import publish
from wsctl.registry.model import F_INSTANCE_ID

__all__ = ["Core", "Sender"]

log = logging.getLogger("wsctl.gateway")


class Core(CoreParts, Protocol):
    """What sending uses of :class:`wsctl.gateway.core.FleetCore` (no import cycle)."""

    batches: BatchRouter
    drainer: Drainer
    outbox: Outbox

    @property
    def inbox(self) -> Inbox:
        """The core's reply inbox."""

    async def _remove_entry_surely(self, conn: LocalConn) -> None: ...

    async def _fail(self, envelope: Envelope, status: Status, reason: str | None) -> None: ...

    async def _answer(self, envelope: Envelope, status: Status, **kw: Any) -> None: ...


class Sender:
    """One instance's routing of messages to robots (see the module docstring)."""

    def __init__(self, core: Core) -> None:
        self.core = core

    # ------------------------------------------------------------------ routing
    def too_big(self, message: str) -> str | None:
        """Why the message cannot go to any robot (not UTF-8 text, over the size limit).
        ASCII text within the limit (the common case) is answered without encoding it."""
        limit = self.core.config.max_message_bytes
        if len(message) <= limit and message.isascii():
            return None
        return message_problem(message, limit)

    async def _route_step(self, robot_id: str, message: str, hops: int) -> Decision:
        """Try the local socket; else read the owner and :func:`decide`. Carries out LOCAL
        (the write) and STALE_OWNER (the ghost's fenced removal). Caller holds the lock."""
        conn = self.core.local.get(robot_id)
        state = LocalSocket.NONE
        if conn is not None and not conn.closed:
            try:
                await conn.sock.send_text(message)
            except (UnicodeError, TypeError, ValueError) as exc:
                # a message the socket cannot carry says nothing about the socket: keep it
                return Decision(
                    Route.REFUSED,
                    status=Status.REJECTED,
                    reason=f"message not sendable: {exc}"[:200],
                )
            except SlowConsumer as exc:  # closed: the message is not delivered, nor routed on
                if self.core._drop(conn):
                    await self.core._remove_entry(conn)
                self.core.batches.owners.invalidate((robot_id,))
                return Decision(Route.NOT_CONNECTED, status=Status.NOT_CONNECTED, reason=exc.reason)
            except Exception as exc:
                # the local socket is dead: clean it, then consult the registry again
                log.debug("send to %s failed, socket dropped: %r", robot_id, exc)
                state = LocalSocket.DEAD
                if self.core._drop(conn):
                    await self.core._remove_entry(conn)
            else:
                self.core.metrics.messages_delivered += 1
                return decide(
                    self_id=self.core.instance_id, local=LocalSocket.OPEN, owner=None, hops=hops
                )
        owners = self.core.batches.owners
        owner = ""
        if state is LocalSocket.NONE and hops == 0:
            owner = owners.get(robot_id, time.monotonic()) or ""
        if not owner or owner == self.core.instance_id:
            owner = str(
                await self.core.client.hget(self.core.keys.conn_key(robot_id), F_INSTANCE_ID) or ""
            )
            if owner:
                owners.put(robot_id, owner, time.monotonic())
            else:
                owners.invalidate((robot_id,))
        decision = decide(
            self_id=self.core.instance_id, local=state, owner=owner or None, hops=hops
        )
        if decision.route is Route.STALE_OWNER:
            # the registry says "here" but there is no socket: a ghost; remove exactly it
            entry = await self.core.store.get(robot_id)
            ours = entry is not None and entry.instance_id == self.core.instance_id
            if entry is not None and ours and self.core.local.get(robot_id) is None:
                await self.core.store.delete_observed([entry])
                self.core.metrics.ghosts_removed += 1
        return self.core.drainer.explain(robot_id, decision)  # "robot is moving" when drained

    async def route_envelope(self, envelope: Envelope) -> None:
        """A ``send`` from the control channel: deliver, forward (at most MAX_HOPS) or fail."""
        robot_id = envelope.robot_id or ""
        message = envelope.message or ""
        too_big = self.too_big(message)
        if too_big:
            await self.core._fail(envelope, Status.REJECTED, too_big)
            return
        decision = await self._route_step(robot_id, message, envelope.hops)
        if decision.route is not Route.LOCAL and envelope.hops >= 1:
            # forwarded here by an instance that thought we hold the robot: tell it who does
            owner = decision.target if decision.route in (Route.FORWARD, Route.HOP_LIMIT) else None
            hint = await self.core.batches.hint_message(envelope.route, [(robot_id, owner)])
            if hint is not None:
                await publish(self.core.client, *hint)
        if decision.route is Route.LOCAL:
            await self.core._answer(envelope, Status.DELIVERED)
        elif decision.route is Route.FORWARD:
            owner = decision.target or ""
            text = encode(envelope.forwarded())
            problem = oversize(text)
            if problem is not None:  # room for the hops is left by requesters; not by all
                self.core.metrics.envelopes_refused += 1
                await self.core._fail(envelope, Status.REJECTED, f"too large to forward: {problem}")
                return
            channel = self.core.keys.control_channel(owner)
            receivers = await publish(self.core.client, channel, text)
            if not await self.core.batches.audience.heard(self.core.client, channel, receivers):
                self.core.batches.owners.invalidate((robot_id,))
                await self.core._fail(
                    envelope,
                    Status.INSTANCE_UNREACHABLE,
                    f"owner {owner} is not listening on its control channel",
                )
                return
            self.core.metrics.messages_forwarded += 1
        else:
            await self.core._fail(envelope, decision.status or Status.ERROR, decision.reason)

    def send(
        self, robot_id: str, message: str, *, timeout: float = 5.0
    ) -> Coroutine[Any, Any, SendResult]:
        """What :meth:`wsctl.gateway.core.FleetCore.send` does: wait for the outcome."""
        return self._send(robot_id, message, timeout, ack=True)

    def publish(
        self, robot_id: str, message: str, *, timeout: float = 5.0
    ) -> Coroutine[Any, Any, SendResult]:
        """What :meth:`wsctl.gateway.core.FleetCore.publish` does: fire and forget."""
        return self._send(robot_id, message, timeout, ack=False)

    async def send_many(
        self,
        robots: Iterable[str] | Selection,
        message: str,
        *,
        timeout: float = 5.0,
        on_outcome: Callable[[RobotOutcome], None] | None = None,
    ) -> FanoutResult:
        """What :meth:`wsctl.gateway.core.FleetCore.send_many` does: one outcome per robot.

        Each robot's message goes through the outbox as :meth:`send`'s does (one
        implementation): submitted in order without an await, so a robot's messages keep
        their order across ``send``, ``publish`` and ``send_many`` from this process, and
        coalesced with whatever else is in flight into one batch per owner (the message
        carried once when every item of a batch is this message). ``timeout``: per robot,
        as for :meth:`send`."""
        core = self.core
        here = core.instance_id
        outcomes: list[RobotOutcome] = []
        summary = FanoutSummary()
        started = time.perf_counter()
        callback_failed = False

        def collect(outcome: RobotOutcome) -> None:
            nonlocal callback_failed
            outcomes.append(outcome)
            summary.counts[outcome.outcome] += 1
            if on_outcome is not None:
                try:
                    on_outcome(outcome)
                except Exception:  # the app's callback: logged once, the outcome stands
                    if not callback_failed:
                        callback_failed = True
                        log.exception("send_many: on_outcome failed (logged once per call)")

        def settled(future: asyncio.Future[SendResult]) -> None:
            if future.cancelled():
                return
            result = future.result()
            instance = result.route[-1] if result.route else None
            collect(RobotOutcome(result.robot_id, _fan_outcome(result), instance, result.reason))

        if isinstance(robots, str):
            raise TypeError("robots: a list of robot ids or a selection, not one string")
        problem = self.too_big(message)
        seen: set[str] = set()
        futures: list[asyncio.Future[SendResult]] = []
        try:
            async for chunk in selection_of(robots):
                for robot_id, _ in chunk:
                    if robot_id in seen:
                        continue
                    seen.add(robot_id)
                    summary.selected += 1
                    if problem:  # rejected here, as send() does: nothing leaves
                        core.metrics.messages_failed += 1
                        collect(RobotOutcome(robot_id, FanOutcome.REJECTED, here, problem))
                        continue
                    future = core.outbox.submit(robot_id, message, timeout, ack=True)
                    future.add_done_callback(settled)
                    futures.append(future)
            summary.selection_done = True
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()  # withdrawn where still queued
            raise
        except Exception as exc:  # reading the selection failed: what was read is sent
            if not is_redis_failure(exc):
                raise  # a bug, not Redis: never reported as Redis being down
            core._redis_failed("send", exc)
            summary.aborted = True
        summary.sent = len(futures)
        if futures:
            try:
                await asyncio.wait(futures)
            except asyncio.CancelledError:
                for future in futures:
                    future.cancel()  # withdrawn where still queued
                raise
        summary.seconds = time.perf_counter() - started
        return FanoutResult(outcomes, summary)

    async def _send(self, robot_id: str, message: str, timeout: float, *, ack: bool) -> SendResult:
        here = (self.core.instance_id,)
        too_big = self.too_big(message)
        if too_big:
            self.core.metrics.messages_failed += 1
            return SendResult(SendOutcome.REJECTED, robot_id, here, too_big)
        conn = self.core.local.get(robot_id)
        if conn is not None and not conn.closed and not self.core.outbox.holds(robot_id):
            # the robot is here and nothing for it waits in the outbox: write it now
            done = self._write_now(conn, message)
            if isinstance(done, SendResult):
                return done
            try:
                async with asyncio.timeout(timeout):
                    async with self.core._lock(robot_id):
                        written = await self._write_local(robot_id, message, (conn, done))
                    if written is LocalSocket.DEAD:
                        written = await self._after_dead_socket(robot_id)
            except TimeoutError:
                reason = f"no outcome within {timeout:g}s (socket busy)"
                return SendResult(SendOutcome.TIMEOUT, robot_id, here, reason)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis failed reading the owner: the outcome says error
                if not is_redis_failure(exc):
                    raise  # a bug, not Redis: never reported as Redis being down
                self.core._redis_failed("send", exc)
                self.core.metrics.messages_failed += 1
                reason = redis_reason(self.core.target.scrub(str(exc)))
                return SendResult(SendOutcome.ERROR, robot_id, here, reason)
            if isinstance(written, SendResult):
                return written
        return await self.core.outbox.send(robot_id, message, timeout, ack=ack)

    def _write_now(self, conn: LocalConn, message: str) -> SendResult | Exception | None:
        """The common case of a local write, without an await or a timer: the robot's lock
        is free and its socket takes frames without waiting (``send_texts_nowait``, both
        adapters) and is not ``crowded`` (its ``send_text`` would wait for room first).
        ``delivered``; else it goes the careful way (:meth:`_write_local`, under
        the lock and within the send's timeout): None when nothing was tried (lock held,
        another kind of socket), the write's exception when it failed (nothing written)."""
        sock = conn.sock
        many: Callable[[list[SharedText]], None] | None = getattr(sock, "send_texts_nowait", None)
        crowded: Callable[[], bool] | None = getattr(sock, "crowded", None)
        if many is None or crowded is None or crowded() or self.core._lock(conn.robot_id).locked():
            return None  # the careful way (which waits for room while much waits for the robot)
        try:
            many([SharedText(message, message.encode("utf-8"))])
        except Exception as exc:  # refused, nothing written: the careful way deals with it
            return exc
        self.core.metrics.messages_delivered += 1
        return self._delivered(conn)

    def _delivered(self, conn: LocalConn) -> SendResult:
        """The outcome of a message written to ``conn``: one immutable value per session,
        made on its first write (not one per message)."""
        result = conn.delivered
        if result is None:
            here = (self.core.instance_id,)
            result = conn.delivered = SendResult(SendOutcome.DELIVERED, conn.robot_id, here)
        return result

    async def _after_dead_socket(self, robot_id: str) -> SendResult | LocalSocket:
        """The robot's socket here just died: what the registry says now. A result when the
        message stops here (no entry, or it named this instance), else route it on."""
        owner = str(
            await self.core.client.hget(self.core.keys.conn_key(robot_id), F_INSTANCE_ID) or ""
        )
        decision = decide(
            self_id=self.core.instance_id, local=LocalSocket.DEAD, owner=owner or None, hops=0
        )
        if decision.route is Route.FORWARD:
            return LocalSocket.NONE
        decision = self.core.drainer.explain(robot_id, decision)
        self.core.metrics.messages_failed += 1
        status = SendOutcome((decision.status or Status.ERROR).value)
        return SendResult(status, robot_id, (self.core.instance_id,), decision.reason)

    async def _write_local(
        self,
        robot_id: str,
        message: str,
        failed: tuple[LocalConn, Exception | None] | None = None,
    ) -> SendResult | LocalSocket:
        """Write ``message`` to the robot's socket here (caller holds the robot's lock): its
        outcome; or NONE when there is no open socket after all (it closed meanwhile), DEAD
        when its write failed (dropped, entry removed): the message is then to be routed.
        ``failed``: the write to that session's socket was just tried (:meth:`_write_now`) and
        raised this; if it is still the robot's session, that is this write's failure (the
        message is not written twice)."""
        here = (self.core.instance_id,)
        conn = self.core.local.get(robot_id)
        if conn is None or conn.closed or self.core.outbox.holds(robot_id):
            return LocalSocket.NONE
        try:
            if failed is not None and failed[0] is conn and failed[1] is not None:
                raise failed[1]
            await conn.sock.send_text(message)
        except (UnicodeError, TypeError, ValueError) as exc:
            # a message the socket cannot carry says nothing about the socket: keep it
            self.core.metrics.messages_failed += 1
            reason = f"message not sendable: {exc}"[:200]
            return SendResult(SendOutcome.REJECTED, robot_id, here, reason)
        except SlowConsumer as exc:  # closed: the message is not delivered, nor routed on
            if self.core._drop(conn):
                await self.core._remove_entry_surely(conn)
            self.core.batches.owners.invalidate((robot_id,))
            self.core.metrics.messages_failed += 1
            return SendResult(SendOutcome.NOT_CONNECTED, robot_id, here, exc.reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the local socket is dead: clean it, then route the message
            log.debug("send to %s failed, socket dropped: %r", robot_id, exc)
            if self.core._drop(conn):
                await self.core._remove_entry_surely(conn)
            return LocalSocket.DEAD
        self.core.metrics.messages_delivered += 1
        return self._delivered(conn)


def _fan_outcome(result: SendResult) -> FanOutcome:
    """A send's outcome in send_many's spelling (the same words; ``published`` is not one)."""
    try:
        return FanOutcome(result.outcome.value)
    except ValueError:
        return FanOutcome.ERROR
