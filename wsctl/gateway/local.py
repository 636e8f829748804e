"""The gateway's in-memory connection table and its counters. No I/O."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LocalConn:
    """One robot's WebSocket session on this instance."""

    robot_id: str
    conn_id: str
    ws: Any
    since: float = field(default_factory=time.time)
    registered: bool = False
    registration: dict[str, str] = field(default_factory=dict)


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
        return self._by_robot.get(robot_id)

    def __len__(self) -> int:
        return len(self._by_robot)

    def __iter__(self) -> Iterator[LocalConn]:
        return iter(list(self._by_robot.values()))

    def inventory(self) -> list[dict[str, Any]]:
        return [
            {"robot_id": c.robot_id, "conn_id": c.conn_id, "since": c.since}
            for c in self._by_robot.values()
        ]


@dataclass
class Metrics:
    """Counters exported at ``/metrics`` in Prometheus text format."""

    connections_opened: int = 0
    connections_superseded: int = 0
    messages_delivered: int = 0
    messages_forwarded: int = 0
    messages_failed: int = 0
    redis_errors: int = 0
    reregistered: int = 0

    def render(self, instance_id: str, connections: int, redis_ok: bool) -> str:
        label = f'{{instance_id="{instance_id}"}}'
        lines = [
            "# TYPE wsctl_gateway_connections gauge",
            f"wsctl_gateway_connections{label} {connections}",
            "# TYPE wsctl_gateway_redis_up gauge",
            f"wsctl_gateway_redis_up{label} {1 if redis_ok else 0}",
        ]
        for name in (
            "connections_opened",
            "connections_superseded",
            "messages_delivered",
            "messages_forwarded",
            "messages_failed",
            "redis_errors",
            "reregistered",
        ):
            lines.append(f"# TYPE wsctl_gateway_{name}_total counter")
            lines.append(f"wsctl_gateway_{name}_total{label} {getattr(self, name)}")
        return "\n".join(lines) + "\n"
