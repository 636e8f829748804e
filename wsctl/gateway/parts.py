"""What every part of the fleet core (sending, batches, the control channel, liveness) uses of
:class:`wsctl.gateway.core.FleetCore`, declared once: each part's own ``Core`` protocol extends
:class:`CoreParts` with what only that part needs. Protocols, not an import of the core: the
core imports its parts, and no part imports the core (no import cycle)."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from wsctl.gateway.events import EventSink
from wsctl.gateway.local import LocalConn, LocalConnections, Metrics
from wsctl.redis.internals import PublishLanes
from wsctl.redis.target import AsyncClient, Target
from wsctl.registry.keys import Keyspace
from wsctl.registry.store import RegistryStore

__all__ = ["CoreParts"]


class CoreParts(Protocol):
    """The fleet core as its parts see it: identity, sessions, counters, Redis."""

    instance_id: str
    keys: Keyspace
    target: Target
    local: LocalConnections
    metrics: Metrics
    events: EventSink
    finishing: bool
    lanes: PublishLanes | None  # PUBLISH on connections of their own (None: the pool only)

    @property
    def config(self) -> Any:
        """The core's :class:`~wsctl.gateway.core.CoreConfig`."""

    @property
    def client(self) -> AsyncClient:
        """The core's Redis client."""

    @property
    def store(self) -> RegistryStore:
        """The core's registry store."""

    def _lock(self, robot_id: str) -> asyncio.Lock: ...

    def _drop(self, conn: LocalConn) -> bool: ...

    def _redis_failed(self, where: str, exc: BaseException) -> None: ...

    async def _remove_entry(self, conn: LocalConn) -> None: ...
