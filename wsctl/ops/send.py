"""``wsctl send``: push one message to a robot through the fleet and report the route."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from wsctl.errors import (
    EXIT_NEGATIVE,
    EXIT_NOT_REGISTERED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
)
from wsctl.eventlog.model import EventName, StoredEvent, parse_entry
from wsctl.ops.compat import classify, explain
from wsctl.protocol.envelopes import (
    MAX_REQUEST_BYTES,
    Envelope,
    Op,
    Reply,
    Status,
    encode,
    message_oversize,
    oversize,
)
from wsctl.protocol.rpc import Unreachable, request
from wsctl.redis.target import AsyncClient
from wsctl.registry.instances import get_record, is_listening, liveness
from wsctl.registry.keys import Keyspace
from wsctl.registry.model import F_CONN_ID, F_INSTANCE_ID, utcnow
from wsctl.shell import word

__all__ = [
    "NOT_REGISTERED",
    "REJECTED",
    "TIMEOUT",
    "UNREACHABLE",
    "SendOutcome",
    "moving_since",
    "send_message",
    "why_not_registered",
    "why_unreachable",
]

NOT_REGISTERED = "not_registered"
REJECTED = "rejected"
TIMEOUT = "timeout"
UNREACHABLE = "instance_unreachable"

_EXIT = {
    "delivered": EXIT_OK,
    NOT_REGISTERED: EXIT_NOT_REGISTERED,
    UNREACHABLE: EXIT_UNREACHABLE,
    TIMEOUT: EXIT_TIMEOUT,
}


@dataclass(frozen=True)
class SendOutcome:
    """The result of one ``wsctl send``: the reply status, the instance the message was
    injected at (and whether ``--via`` chose it), the reply with its route, and the time."""

    status: str
    robot_id: str
    target: str | None  # the instance the message was injected at
    via: bool  # True when --via chose the target
    reason: str | None = None
    reply: Reply | None = None
    elapsed_ms: float = 0.0

    @property
    def exit_code(self) -> int:
        """The documented ``wsctl send`` exit code of this status."""
        return _EXIT.get(self.status, EXIT_NEGATIVE)

    @property
    def route(self) -> list[str]:
        """The instances the message passed through, in order."""
        return [hop.instance for hop in self.reply.route] if self.reply else []

    def as_dict(self) -> dict[str, Any]:
        """The outcome as the stable JSON object of ``wsctl send -o json``, with per-hop
        latencies."""
        hops = self.reply.hop_latencies_ms() if self.reply else []
        return {
            "status": self.status,
            "robot_id": self.robot_id,
            "target": self.target,
            "via": self.target if self.via else None,
            "route": self.route,
            "hops": [{"instance": i, "latency_ms": round(ms, 3)} for i, ms in hops],
            "answered_by": self.reply.instance if self.reply else None,
            "reason": self.reason,
            "elapsed_ms": round(self.elapsed_ms, 3),
        }

    def summary(self) -> str:
        """``via gw-a -> owner gw-b -> robot-17: delivered in 2.1 ms`` (ids that hold control
        characters or bytes that are not UTF-8 as their ``$'...'`` shell words)."""
        route = self.route or ([self.target] if self.target else [])
        parts = [
            ("via " if i == 0 and self.via else "owner " if i == len(route) - 1 else "hop ")
            + word(instance)
            for i, instance in enumerate(route)
        ]
        parts.append(word(self.robot_id))
        text = " -> ".join(parts) + f": {self.status.replace('_', ' ')}"
        if self.status == "delivered":
            text += f" in {self.elapsed_ms:.1f} ms"
        if self.reason:
            text += f" ({self.reason})"
        return text


MOVING_FOR = 300.0  # seconds after a drain closed a robot that it is said to be moving
MOVING_LOOKBACK = 20  # the robot's newest events read to find the drain that closed it
CLOCK_SKEW = 5.0  # seconds an event's time may lie ahead of this clock (another host's)


def moving_since(events: Sequence[StoredEvent], now: float) -> StoredEvent | None:
    """The ``drained`` event that left a robot between instances, given its newest events
    (newest first) at ``now`` (epoch seconds): the newest drain with no ``connected`` (a later
    session) after it, at most :data:`MOVING_FOR` seconds old. A drain writes ``drained`` then,
    when the socket's close completes, ``disconnected``; events that say nothing about where the
    robot is (``disconnected``, ``forward_failed``, the CLI's, malformed entries) are passed
    over. None when the robot is not known to be moving."""
    for event in events:
        if event.problem:
            continue
        if event.event == EventName.CONNECTED:
            return None
        if event.event == EventName.DRAINED:
            age = now - event.ts
            return event if -CLOCK_SKEW <= age <= MOVING_FOR else None
    return None


async def why_not_registered(
    client: AsyncClient, keys: Keyspace, robot_id: str, now: float | None = None
) -> str:
    """``no registry entry``; when the robot's recent events say a drain closed it in the last
    :data:`MOVING_FOR` seconds and it has not connected since (:func:`moving_since`), also that
    it is moving (between instances: retry)."""
    try:
        page: Any = await client.xrevrange(
            keys.robot_events_key(robot_id), "+", "-", count=MOVING_LOOKBACK
        )
    except RedisError:  # the event log is an extra (a key of another type, say)
        return "no registry entry"
    events = [parse_entry(robot_id, str(entry_id), fields) for entry_id, fields in page or ()]
    now = time.time() if now is None else now
    drained = moving_since(events, now)
    if drained is None:
        return "no registry entry"
    age = max(0.0, now - drained.ts)
    return (
        f"no registry entry: robot is moving (instance {drained.instance_id} drained it "
        f"{age:.0f}s ago); retry"
    )


async def why_unreachable(
    client: AsyncClient,
    keys: Keyspace,
    instance_id: str,
    writes_conn_id: bool | None,
    timeout: float,
) -> str:
    """Why nothing can be sent through ``instance_id`` (see :mod:`wsctl.ops.compat`)."""
    record = await get_record(client, keys, instance_id)
    listening = await is_listening(client, keys, instance_id)
    participation = classify(listening, liveness(record, utcnow(), timeout), writes_conn_id)
    return explain(instance_id, keys.control_channel(instance_id), participation)


async def send_message(
    client: AsyncClient,
    keys: Keyspace,
    robot_id: str,
    message: str,
    *,
    via: str | None = None,
    timeout: float = 5.0,
    liveness_timeout: float = 90.0,
) -> SendOutcome:
    """Send ``message`` to ``robot_id``: to its registered owner, or injected at ``via``.

    When the target (or, through ``via``, the owner) does not listen on its control channel,
    the outcome says why: alive but unsubscribed, down, or a gateway that does not speak the
    control protocol (``liveness_timeout`` judges its liveness record). A message larger than
    any gateway accepts (:data:`~wsctl.protocol.envelopes.MAX_MESSAGE_BYTES`) is ``rejected`` before
    anything is read or published."""
    started = time.perf_counter()
    target = via
    too_large = message_oversize(message)
    if too_large is not None:  # refused before anything is read or published
        return SendOutcome(REJECTED, robot_id, via, via is not None, too_large)
    owner, conn_id = await client.hmget(keys.conn_key(robot_id), [F_INSTANCE_ID, F_CONN_ID])
    if target is None:
        if not owner:
            why = await why_not_registered(client, keys, robot_id)
            return SendOutcome(NOT_REGISTERED, robot_id, None, False, why)
        target = str(owner)
    writes_conn_id = bool(conn_id) if owner else None
    envelope = Envelope(op=Op.SEND, robot_id=robot_id, message=message, origin="cli")
    too_large = oversize(encode(envelope), MAX_REQUEST_BYTES)  # a robot id of megabytes
    if too_large is not None:
        return SendOutcome(REJECTED, robot_id, target, via is not None, too_large)
    try:
        reply = await request(client, keys, target, envelope, timeout)
    except Unreachable:
        known = writes_conn_id if target == owner else None
        why = await why_unreachable(client, keys, target, known, liveness_timeout)
        return SendOutcome(UNREACHABLE, robot_id, target, via is not None, why)
    elapsed = (time.perf_counter() - started) * 1000
    if reply is None:
        return SendOutcome(
            TIMEOUT, robot_id, target, via is not None, f"no reply within {timeout:g}s"
        )
    reason: str | None = reply.reason
    if reply.status is Status.INSTANCE_UNREACHABLE and owner and str(owner) != target:
        # forwarded to an owner that does not listen: say what kind of instance it is
        reason = await why_unreachable(client, keys, str(owner), writes_conn_id, liveness_timeout)
    return SendOutcome(
        reply.status.value, robot_id, target, via is not None, reason, reply, elapsed
    )
