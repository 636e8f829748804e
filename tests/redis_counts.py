"""Redis's own counters for tests that bound what wsctl costs it: connections received and
commands called (``INFO stats`` / ``INFO commandstats``), summed over a backend's primaries."""

from __future__ import annotations

from typing import Any

import redis

from tests.conftest import Backend

__all__ = ["RedisCounts", "primary_ports"]


def primary_ports(backend: Backend) -> list[int]:
    """The single node's port, or every cluster primary's."""
    if backend.single is not None:
        return [backend.single.port]
    assert backend.cluster is not None
    return backend.cluster.primary_ports()


class RedisCounts:
    """Connections received and calls per command, summed over ``ports``, read through one
    connection per port opened once (so reading opens none). ``commands`` counts every call
    but this reader's own INFO and PING."""

    COMMANDS = ("subscribe", "pubsub", "publish", "hget", "hmget")

    def __init__(self, ports: list[int]) -> None:
        self.clients = [redis.Redis(port=port) for port in ports]
        for client in self.clients:
            client.ping()

    def read(self) -> dict[str, int]:
        """The current totals."""
        totals = dict.fromkeys(("connections", "commands", *self.COMMANDS), 0)
        for client in self.clients:
            totals["connections"] += int(client.info("stats")["total_connections_received"])
            stats: dict[str, Any] = client.info("commandstats")
            for name, row in stats.items():
                command = name.removeprefix("cmdstat_")
                if command in ("info", "ping"):
                    continue  # ours
                totals["commands"] += int(row.get("calls", 0))
                if command in totals:
                    totals[command] += int(row.get("calls", 0))
        return totals

    def per_command(self) -> dict[str, int]:
        """Calls per command (but this reader's own), summed over the ports."""
        calls: dict[str, int] = {}
        for client in self.clients:
            stats: dict[str, Any] = client.info("commandstats")
            for name, row in stats.items():
                command = name.removeprefix("cmdstat_")
                if command not in ("info", "ping"):
                    calls[command] = calls.get(command, 0) + int(row.get("calls", 0))
        return calls

    def close(self) -> None:
        """Close the reading connections."""
        for client in self.clients:
            client.close()
