"""Write registry entries exactly the way the seed's code does (naive local ISO, six fields).

This is the seed's ``store_connection`` with its bugs fixed only where they would stop it from
running (awaiting the async client); the data it writes is the seed's, byte for byte in shape.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any


def seed_hash(robot_id: str, instance_id: str, age_s: float = 0.0) -> dict[str, str]:
    now = datetime.now()
    return {
        "instance_id": instance_id,
        "robot_id": robot_id,
        "connected_at": (now - timedelta(seconds=age_s + 5)).isoformat(),
        "last_heartbeat": (now - timedelta(seconds=age_s)).isoformat(),
        "status": "connected",
        "websocket_state": "active",
    }


async def seed_store_connection(
    client: Any, robot_id: str, instance_id: str, age_s: float = 0.0
) -> None:
    await client.hset(f"ws_conn:{robot_id}", mapping=seed_hash(robot_id, instance_id, age_s))
