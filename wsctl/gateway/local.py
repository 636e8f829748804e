"""The instance's in-memory session table and its counters. No I/O."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsctl.gateway.outcomes import SendResult

__all__ = [
    "MAX_CLOSE_REASON",
    "LocalConn",
    "LocalConnections",
    "Metrics",
    "close_reason",
    "prometheus_label",
]

MAX_CLOSE_REASON = 120  # bytes; WebSocket close reasons are limited to 123


@dataclass(eq=False)
class LocalConn:
    """One robot's socket session on this instance.

    ``closed`` is set the moment the session ends (socket gone, superseded, kicked) and never
    cleared: from then on nothing may register or re-register it. ``sent_close`` is the close
    code and reason this instance closed the socket with, if it did (for the event log, when
    the transport does not report the close frame). ``delivered`` is the app's outcome of a
    message written to this session, made once (immutable, shared by its messages).
    """

    robot_id: str
    conn_id: str
    sock: Any  # a wsctl.gateway.core.RobotSocket
    since: float = field(default_factory=time.time)
    registered: bool = False
    closed: bool = False
    registration: dict[str, str] = field(default_factory=dict)
    sent_close: tuple[int, str] | None = None
    delivered: SendResult | None = None  # the outcome of a message written to it (shared)

    def __post_init__(self) -> None:
        # a socket that closes itself (a slow consumer, wsctl.gateway.outbound) records the
        # close on its session, for the event log
        attach = getattr(self.sock, "attach", None)
        if attach is not None:
            attach(self)


class LocalConnections:
    """robot_id -> the newest local session. Older sessions of the same robot are closed."""

    def __init__(self) -> None:
        self._by_robot: dict[str, LocalConn] = {}

    def add(self, conn: LocalConn) -> LocalConn | None:
        """Add ``conn``; returns the session it replaces, if any."""
        previous = self._by_robot.get(conn.robot_id)
        self._by_robot[conn.robot_id] = conn
        return previous

    def remove(self, conn: LocalConn) -> bool:
        """Remove ``conn`` only if it is still the current session of its robot."""
        if self._by_robot.get(conn.robot_id) is conn:
            del self._by_robot[conn.robot_id]
            return True
        return False

    def get(self, robot_id: str) -> LocalConn | None:
        """The robot's session on this instance, or None."""
        return self._by_robot.get(robot_id)

    def __len__(self) -> int:
        return len(self._by_robot)

    def __iter__(self) -> Iterator[LocalConn]:
        return iter(list(self._by_robot.values()))

    def inventory(self) -> list[dict[str, Any]]:
        """Every session held, as the ``inventory`` reply's ``connections`` list."""
        return [
            {"robot_id": c.robot_id, "conn_id": c.conn_id, "since": c.since}
            for c in self._by_robot.values()
        ]


COUNTERS = (
    "connections_opened",
    "connections_closed",
    "connections_superseded",
    "connections_kicked",
    "slow_consumers",
    "messages_delivered",
    "messages_forwarded",
    "messages_failed",
    "redis_errors",
    "redis_busy",
    "reregistered",
    "ghosts_removed",
    "cleanup_retries",
    "cleanup_abandoned",
    "closed_entries_recreated",
    "owner_hints_sent",
    "owner_cache_corrected",
    "control_resubscribes",
    "envelopes_refused",
)


@dataclass
class Metrics:
    """Counters exported at ``/metrics`` in Prometheus text format.

    ``cleanup_retries`` counts retried fenced deletes of closed sessions' entries (a delete on
    disconnect that failed); ``cleanup_abandoned`` the ones given up after the retry window;
    ``closed_entries_recreated`` entries a heartbeat in flight re-created for a session that
    had just closed (each deleted again). ``owner_hints_sent`` counts owner hints this
    instance sent to an instance that forwarded it messages for robots it does not hold, and
    ``owner_cache_corrected`` the owner-cache entries corrected by hints it received (the
    cache named the hinting instance). ``control_resubscribes`` counts the times the control
    channel's subscription was lost and made again (requests published to it in between were
    lost; each loss is logged); ``envelopes_refused`` the forwards and replies this instance
    did not publish because they were larger than one control-channel message may be
    (answered ``rejected`` or ``error`` instead).
    ``redis_busy`` counts commands that found every pooled Redis connection in use for too
    long (the client was busy; not counted in ``redis_errors``, and ``redis_up`` stays 1).
    """

    connections_opened: int = 0
    connections_closed: int = 0  # sessions ended, whatever ended them
    connections_superseded: int = 0
    connections_kicked: int = 0
    slow_consumers: int = 0  # sessions closed because the robot did not read (1008)
    messages_delivered: int = 0
    messages_forwarded: int = 0
    messages_failed: int = 0
    redis_errors: int = 0
    redis_busy: int = 0
    reregistered: int = 0
    ghosts_removed: int = 0
    cleanup_retries: int = 0
    cleanup_abandoned: int = 0
    closed_entries_recreated: int = 0
    owner_hints_sent: int = 0
    owner_cache_corrected: int = 0
    control_resubscribes: int = 0
    envelopes_refused: int = 0

    def render(
        self, instance_id: str, connections: int, redis_ok: bool, cleanup_pending: int = 0
    ) -> str:
        """The Prometheus text of the gateway's own counters, labelled with the instance id."""
        label = f'{{instance_id="{prometheus_label(instance_id)}"}}'
        lines = [
            "# TYPE wsctl_gateway_connections gauge",
            f"wsctl_gateway_connections{label} {connections}",
            "# TYPE wsctl_gateway_redis_up gauge",
            f"wsctl_gateway_redis_up{label} {1 if redis_ok else 0}",
            "# TYPE wsctl_gateway_cleanup_pending gauge",
            f"wsctl_gateway_cleanup_pending{label} {cleanup_pending}",
        ]
        for name in COUNTERS:
            lines.append(f"# TYPE wsctl_gateway_{name}_total counter")
            lines.append(f"wsctl_gateway_{name}_total{label} {getattr(self, name)}")
        return "\n".join(lines) + "\n"


def prometheus_label(value: str) -> str:
    """A Prometheus label value: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def close_reason(text: str) -> str:
    """``text`` cut to what fits a WebSocket close frame (UTF-8, whole characters)."""
    raw = text.encode("utf-8", "replace")[:MAX_CLOSE_REASON]
    return raw.decode("utf-8", "ignore")
