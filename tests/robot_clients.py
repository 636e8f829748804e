"""Robots as tests see them: real WebSocket clients of real gateways, what they received, and
whether the registry lists them yet. Shared by the messaging tests (fan-out, batches, owner
hints)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

__all__ = ["frames", "registered", "robots"]


@contextlib.asynccontextmanager
async def robots(urls: dict[str, str]) -> AsyncIterator[dict[str, ClientConnection]]:
    """robot id -> an open client connection to the given gateway URL (closed on exit)."""
    conns: dict[str, ClientConnection] = {}
    try:
        for robot_id, url in urls.items():
            conns[robot_id] = await connect(f"{url}/ws/{robot_id}", ping_interval=None)
        yield conns
    finally:
        await asyncio.gather(*(c.close() for c in conns.values()), return_exceptions=True)


async def frames(conn: ClientConnection, wait: float = 0.3) -> list[str]:
    """Every frame ``conn`` receives until none comes for ``wait`` seconds."""
    got: list[str] = []
    with contextlib.suppress(TimeoutError):
        while True:
            got.append(str(await asyncio.wait_for(conn.recv(), wait)))
    return got


async def registered(store: Any, robot_ids: list[str]) -> bool:
    """True when the registry has an entry for every one of ``robot_ids`` (one pipeline)."""
    pipe = store.client.pipeline(transaction=False)
    for robot_id in robot_ids:
        pipe.exists(store.keys.conn_key(robot_id))
    return all(await pipe.execute())
