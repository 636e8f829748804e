"""Fault helpers for tests: freeze a real redis-server, fill it with seed-shaped entries."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from datetime import datetime, timedelta

import redis

from wsctl.sandbox.redis_servers import RedisServer


@contextlib.contextmanager
def frozen(server: RedisServer) -> Iterator[None]:
    """The server stopped (SIGSTOP) inside the block, resumed whatever happens."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def fill(server: RedisServer, count: int, age_s: float = 0.0, prefix: str = "robot-") -> None:
    """``count`` entries shaped like the seed's, written in pipelines."""
    client = redis.Redis(port=server.port, decode_responses=True)
    try:
        now = datetime.now()
        heartbeat = (now - timedelta(seconds=age_s)).isoformat()
        connected = (now - timedelta(seconds=age_s + 5)).isoformat()
        pipe = client.pipeline(transaction=False)
        for i in range(count):
            robot = f"{prefix}{i}"
            pipe.hset(
                f"ws_conn:{robot}",
                mapping={
                    "instance_id": "gw-a",
                    "robot_id": robot,
                    "connected_at": connected,
                    "last_heartbeat": heartbeat,
                    "status": "connected",
                    "websocket_state": "active",
                },
            )
            if len(pipe) >= 2000:
                pipe.execute()
        pipe.execute()
    finally:
        client.close()
