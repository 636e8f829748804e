"""``wsctl send``: push one message to a robot through the fleet and report the route."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from wsctl.errors import (
    EXIT_NEGATIVE,
    EXIT_NOT_REGISTERED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
)
from wsctl.ops.control import Unreachable, request
from wsctl.protocol import Envelope, Op, Reply
from wsctl.redis_target import AsyncClient
from wsctl.registry.keys import Keyspace
from wsctl.registry.model import F_INSTANCE_ID

NOT_REGISTERED = "not_registered"
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
    status: str
    robot_id: str
    target: str | None  # the instance the message was injected at
    via: bool  # True when --via chose the target
    reason: str | None = None
    reply: Reply | None = None
    elapsed_ms: float = 0.0

    @property
    def exit_code(self) -> int:
        return _EXIT.get(self.status, EXIT_NEGATIVE)

    @property
    def route(self) -> list[str]:
        return [hop.instance for hop in self.reply.route] if self.reply else []

    def as_dict(self) -> dict[str, Any]:
        hops = self.reply.hop_latencies_ms() if self.reply else []
        return {
            "status": self.status,
            "robot_id": self.robot_id,
            "target": self.target,
            "via": self.via,
            "route": self.route,
            "hops": [{"instance": i, "latency_ms": round(ms, 3)} for i, ms in hops],
            "answered_by": self.reply.instance if self.reply else None,
            "reason": self.reason,
            "elapsed_ms": round(self.elapsed_ms, 3),
        }

    def summary(self) -> str:
        """``via gw-a -> owner gw-b -> robot-17: delivered in 2.1 ms``."""
        route = self.route or ([self.target] if self.target else [])
        parts = [
            ("via " if i == 0 and self.via else "owner " if i == len(route) - 1 else "hop ")
            + instance
            for i, instance in enumerate(route)
        ]
        parts.append(self.robot_id)
        text = " -> ".join(parts) + f": {self.status.replace('_', ' ')}"
        if self.status == "delivered":
            text += f" in {self.elapsed_ms:.1f} ms"
        if self.reason:
            text += f" ({self.reason})"
        return text


async def send_message(
    client: AsyncClient,
    keys: Keyspace,
    robot_id: str,
    message: str,
    *,
    via: str | None = None,
    timeout: float = 5.0,
) -> SendOutcome:
    """Send ``message`` to ``robot_id``: to its registered owner, or injected at ``via``."""
    started = time.perf_counter()
    target = via
    if target is None:
        owner = await client.hget(keys.conn_key(robot_id), F_INSTANCE_ID)
        if not owner:
            return SendOutcome(NOT_REGISTERED, robot_id, None, False, "no registry entry")
        target = str(owner)
    envelope = Envelope(op=Op.SEND, robot_id=robot_id, message=message, origin="cli")
    try:
        reply = await request(client, keys, target, envelope, timeout)
    except Unreachable:
        return SendOutcome(
            UNREACHABLE,
            robot_id,
            target,
            via is not None,
            f"{target} is not listening on its control channel",
        )
    elapsed = (time.perf_counter() - started) * 1000
    if reply is None:
        return SendOutcome(
            TIMEOUT, robot_id, target, via is not None, f"no reply within {timeout:g}s"
        )
    return SendOutcome(
        reply.status.value, robot_id, target, via is not None, reply.reason, reply, elapsed
    )
