"""``wsctl kick`` and ``wsctl ping``: ask one instance, over its control channel, to close a
robot's socket or to answer. Return outcomes; never print."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from wsctl.errors import (
    EXIT_NEGATIVE,
    EXIT_NOT_REGISTERED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
)
from wsctl.ops.send import why_unreachable
from wsctl.protocol.envelopes import CloseCode, Envelope, Op, Status
from wsctl.protocol.rpc import Unreachable, request
from wsctl.redis.target import AsyncClient
from wsctl.registry.keys import Keyspace
from wsctl.registry.model import F_CONN_ID, F_INSTANCE_ID
from wsctl.shell import command, quoted, word

__all__ = [
    "DEFAULT_KICK_REASON",
    "KickOutcome",
    "KickStatus",
    "PingOutcome",
    "PingStatus",
    "kick_robot",
    "ping_instance",
]

DEFAULT_KICK_REASON = "kicked by operator"


class KickStatus(StrEnum):
    """What became of a kick; each status maps to one documented exit code."""

    KICKED = "kicked"
    NOT_CONNECTED = "not_connected"
    NOT_REGISTERED = "not_registered"
    OWNER_UNREACHABLE = "owner_unreachable"
    TIMEOUT = "timeout"
    ERROR = "error"


_KICK_EXIT = {
    KickStatus.KICKED: EXIT_OK,
    KickStatus.NOT_CONNECTED: EXIT_NEGATIVE,
    KickStatus.NOT_REGISTERED: EXIT_NOT_REGISTERED,
    KickStatus.OWNER_UNREACHABLE: EXIT_UNREACHABLE,
    KickStatus.TIMEOUT: EXIT_TIMEOUT,
    KickStatus.ERROR: EXIT_NEGATIVE,
}


@dataclass(frozen=True)
class KickOutcome:
    """The result of :func:`kick_robot`: its status, the owner and session it reached, the
    close code and close reason the robot got (when it was kicked), why it was not (``detail``)
    and a shell-quoted command to run next when there is one."""

    status: KickStatus
    robot_id: str
    owner: str | None = None
    conn_id: str | None = None
    detail: str | None = None  # why the outcome is not "kicked"
    close_code: int | None = None
    elapsed_ms: float = 0.0
    fix: str | None = None  # a command to run next (shell-quoted)
    close_reason: str | None = None  # the reason the robot's socket was closed with

    @property
    def exit_code(self) -> int:
        """The documented ``wsctl kick`` exit code of this outcome."""
        return _KICK_EXIT[self.status]

    def as_dict(self) -> dict[str, Any]:
        """The outcome as the stable JSON object of ``wsctl kick -o json``."""
        return {
            "status": self.status.value,
            "robot_id": self.robot_id,
            "owner": self.owner,
            "conn_id": self.conn_id,
            "close_code": self.close_code,
            "close_reason": self.close_reason,
            "detail": self.detail,
            "fix": self.fix,
            "elapsed_ms": round(self.elapsed_ms, 3),
        }

    def summary(self) -> str:
        """One line for a person (ids that hold control characters or bytes that are not
        UTF-8 as their ``$'...'`` shell words; the rest escaped by the caller's printer)."""
        where = f" on {word(self.owner)}" if self.owner else ""
        text = f"{word(self.robot_id)}{where}: {self.status.value.replace('_', ' ')}"
        if self.status is KickStatus.KICKED:
            why = quoted(self.close_reason or "")
            text += f" (closed with {self.close_code} {why}, entry removed)"
            text += f" in {self.elapsed_ms:.1f} ms"
        if self.detail:
            text += f" ({self.detail})"
        return text


async def kick_robot(
    client: AsyncClient,
    keys: Keyspace,
    robot_id: str,
    reason: str = DEFAULT_KICK_REASON,
    *,
    timeout: float = 5.0,
    liveness_timeout: float = 90.0,
) -> KickOutcome:
    """Have the robot's registered owner close the socket of the registered session (close
    code 4002 with ``reason``) and remove its entry, fenced by that session's ``conn_id``."""
    started = time.perf_counter()
    owner_raw, conn_raw = await client.hmget(keys.conn_key(robot_id), [F_INSTANCE_ID, F_CONN_ID])
    if not owner_raw:
        return KickOutcome(KickStatus.NOT_REGISTERED, robot_id, detail="no registry entry")
    owner, conn_id = str(owner_raw), (str(conn_raw) if conn_raw else None)
    close_reason = reason or DEFAULT_KICK_REASON
    envelope = Envelope(
        op=Op.KICK,
        robot_id=robot_id,
        conn_id=conn_id,
        message=close_reason,
        origin="cli",
    )
    try:
        reply = await request(client, keys, owner, envelope, timeout)
    except Unreachable:
        why = await why_unreachable(client, keys, owner, bool(conn_id), liveness_timeout)
        return KickOutcome(KickStatus.OWNER_UNREACHABLE, robot_id, owner, conn_id, why)
    elapsed = (time.perf_counter() - started) * 1000
    if reply is None:
        return KickOutcome(
            KickStatus.TIMEOUT, robot_id, owner, conn_id, f"no reply within {timeout:g}s"
        )
    if reply.status is Status.KICKED:
        return KickOutcome(
            KickStatus.KICKED,
            robot_id,
            owner,
            conn_id,
            None,
            int(CloseCode.KICKED),
            elapsed,
            close_reason=close_reason,
        )
    if reply.status is Status.NOT_CONNECTED:
        return KickOutcome(
            KickStatus.NOT_CONNECTED,
            robot_id,
            owner,
            conn_id,
            f"{owner} holds no such session: the entry is a ghost",
            fix=command("wsctl", "registry", "rm", robot_id, "--if-instance", owner),
        )
    return KickOutcome(KickStatus.ERROR, robot_id, owner, conn_id, reply.reason or "error")


class PingStatus(StrEnum):
    """What became of an instance ping; each status maps to one documented exit code."""

    PONG = "pong"
    UNREACHABLE = "instance_unreachable"
    TIMEOUT = "timeout"


_PING_EXIT = {
    PingStatus.PONG: EXIT_OK,
    PingStatus.UNREACHABLE: EXIT_UNREACHABLE,
    PingStatus.TIMEOUT: EXIT_TIMEOUT,
}


@dataclass(frozen=True)
class PingOutcome:
    """The result of :func:`ping_instance`: round trip, version and connection count
    reported by the instance, and the instances the request went through."""

    status: PingStatus
    instance_id: str
    rtt_ms: float | None = None
    version: str | None = None
    connections: int | None = None
    reason: str | None = None
    route: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """The documented ``wsctl ping`` exit code of this outcome."""
        return _PING_EXIT[self.status]

    def as_dict(self) -> dict[str, Any]:
        """The outcome as the stable JSON object of ``wsctl ping -o json``."""
        return {
            "status": self.status.value,
            "instance_id": self.instance_id,
            "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 3),
            "version": self.version,
            "connections": self.connections,
            "reason": self.reason,
        }

    def summary(self) -> str:
        """One line for a person: round trip, version and connections, or what failed."""
        if self.status is PingStatus.PONG:
            return (
                f"pong from {word(self.instance_id)} in {self.rtt_ms or 0:.1f} ms: "
                f"version {self.version or '?'}, {self.connections} connections"
            )
        return f"{word(self.instance_id)}: {self.status.value.replace('_', ' ')} ({self.reason})"


async def ping_instance(
    client: AsyncClient,
    keys: Keyspace,
    instance_id: str,
    *,
    timeout: float = 5.0,
    liveness_timeout: float = 90.0,
) -> PingOutcome:
    """Round-trip the instance's control channel: its version and connection count."""
    started = time.perf_counter()
    try:
        reply = await request(
            client, keys, instance_id, Envelope(op=Op.PING, origin="cli"), timeout
        )
    except Unreachable:
        why = await why_unreachable(client, keys, instance_id, None, liveness_timeout)
        return PingOutcome(PingStatus.UNREACHABLE, instance_id, reason=why)
    elapsed = (time.perf_counter() - started) * 1000
    if reply is None or reply.status is not Status.PONG:
        return PingOutcome(PingStatus.TIMEOUT, instance_id, reason=f"no pong within {timeout:g}s")
    connections = reply.data.get("connections")
    version = reply.data.get("version")
    return PingOutcome(
        PingStatus.PONG,
        instance_id,
        elapsed,
        str(version) if version is not None else None,
        connections if isinstance(connections, int) and not isinstance(connections, bool) else None,
    )
