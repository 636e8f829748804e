"""A gateway written the original design's way (shared/seed/connection-registry-design.md), as a
test fixture: what operators run today, which does NOT speak wsctl's control protocol.

Run: ``uvicorn tests.original_gateway:app --port P`` from a checkout. It registers
``ws_conn:{robot_id}`` hashes (the original six fields, naive local ISO timestamps), has no
control channel and no liveness record, refreshes ``last_heartbeat`` only when a robot sends a
message, and deletes the entry unconditionally on disconnect.

Changed from the original, only where it would not run otherwise:
* ``aioredis`` (which no longer imports on Python 3.11) -> ``redis.asyncio``, its successor with
  the same API; cluster startup nodes as ``ClusterNode`` objects;
* Redis calls are awaited (the original called them without ``await``, on a ``redis_client``
  attribute that did not exist, and instantiated a ``RedisManager`` class that did not exist);
* configuration from the environment only, defaulting to Redis on 127.0.0.1 (never the
  original's addresses or credentials); ``REDIS_NODES`` is ``host:port,host:port``;
* the WebSocket endpoint and the lifespan hook, which the article describes but does not show;
* ``forward_message_to_instance``, called but never defined in the article: there is no
  control channel, so it can only fail.
Its bugs (the unconditional delete, ``KEYS``, naive timestamps) are kept on purpose.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, ClassVar

from fastapi import FastAPI, WebSocket, WebSocketDisconnect


class RedisConfig:
    HOST = os.getenv("REDIS_HOST", "127.0.0.1")
    PORT = int(os.getenv("REDIS_PORT", "6379"))
    DB = int(os.getenv("REDIS_DB", "0"))
    USERNAME = os.getenv("REDIS_USERNAME", "")
    PASSWORD = os.getenv("REDIS_PASSWORD", "")
    USE_CLUSTER = os.getenv("REDIS_USE_CLUSTER", "False").lower() == "true"
    REDIS_NODES: ClassVar[list[dict[str, Any]]] = [
        {"host": host, "port": int(port)}
        for host, _, port in (
            node.strip().rpartition(":")
            for node in os.getenv("REDIS_NODES", "").split(",")
            if node.strip()
        )
    ]
    CLUSTER_REQUIRE_FULL_COVERAGE = False
    WEBSOCKET_CONNECTION_PREFIX = "ws_conn:"
    HEARTBEAT_INTERVAL = 30
    CONNECTION_TIMEOUT = 90


class InstanceConfig:
    @staticmethod
    def get_instance_id() -> str:
        instance_id = os.getenv("SERVER_INSTANCE_ID")
        if instance_id:
            return instance_id
        hostname = socket.gethostname()
        port = os.getenv("PORT", "8000")
        pid = os.getpid()
        hash_input = f"{hostname}:{port}:{pid}"
        return hashlib.md5(hash_input.encode()).hexdigest()[:16]


class RedisConnectionManager:
    def __init__(self) -> None:
        self.redis: Any = None
        self.config = RedisConfig()
        self.instance_id = InstanceConfig.get_instance_id()

    async def connect(self) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        if self.config.USE_CLUSTER:
            self.redis = RedisCluster(
                startup_nodes=[ClusterNode(n["host"], n["port"]) for n in self.config.REDIS_NODES],
                username=self.config.USERNAME or None,
                password=self.config.PASSWORD or None,
                decode_responses=True,
                require_full_coverage=self.config.CLUSTER_REQUIRE_FULL_COVERAGE,
            )
        else:
            self.redis = Redis(
                host=self.config.HOST,
                port=self.config.PORT,
                db=self.config.DB,
                username=self.config.USERNAME or None,
                password=self.config.PASSWORD or None,
                decode_responses=True,
            )
        await self.redis.ping()

    async def store_connection(self, robot_id: str, additional_data: dict[str, str]) -> None:
        connection_data = {
            "instance_id": self.instance_id,
            "robot_id": robot_id,
            "connected_at": datetime.now().isoformat(),
            "last_heartbeat": datetime.now().isoformat(),
            **(additional_data or {}),
        }
        key = f"{RedisConfig.WEBSOCKET_CONNECTION_PREFIX}{robot_id}"
        await self.redis.hset(key, mapping=connection_data)

    async def get_connection_info(self, robot_id: str) -> dict[str, str] | None:
        key = f"{RedisConfig.WEBSOCKET_CONNECTION_PREFIX}{robot_id}"
        data: dict[str, str] = await self.redis.hgetall(key)
        return data if data else None

    async def remove_connection(self, robot_id: str) -> int:
        key = f"{RedisConfig.WEBSOCKET_CONNECTION_PREFIX}{robot_id}"
        return int(await self.redis.delete(key))

    async def update_heartbeat(self, robot_id: str) -> None:
        key = f"{RedisConfig.WEBSOCKET_CONNECTION_PREFIX}{robot_id}"
        if await self.redis.exists(key):
            await self.redis.hset(key, "last_heartbeat", datetime.now().isoformat())

    async def get_all_connections(self) -> list[dict[str, str]]:
        pattern = f"{RedisConfig.WEBSOCKET_CONNECTION_PREFIX}*"
        keys = await self.redis.keys(pattern)
        connections = []
        for key in keys:
            data = await self.redis.hgetall(key)
            if data:
                connections.append(data)
        return connections


redis_manager = RedisConnectionManager()


class ConnectionManager:
    def __init__(self) -> None:
        self.active_connections: dict[str, WebSocket] = {}
        self.instance_id = InstanceConfig.get_instance_id()

    async def connect(self, websocket: WebSocket, robot_id: str) -> None:
        await websocket.accept()
        self.active_connections[robot_id] = websocket
        await redis_manager.store_connection(
            robot_id, {"status": "connected", "websocket_state": "active"}
        )
        logging.info("robot %s connected to instance %s", robot_id, self.instance_id)

    async def disconnect(self, robot_id: str) -> None:
        if robot_id in self.active_connections:
            del self.active_connections[robot_id]
        await redis_manager.remove_connection(robot_id)

    async def is_websocket_alive(self, robot_id: str) -> bool:
        websocket = self.active_connections.get(robot_id)
        if websocket is None:
            return False
        return "DISCONNECTED" not in (
            websocket.client_state.name,
            websocket.application_state.name,
        )

    async def send_personal_message(self, message: str, robot_id: str) -> bool:
        if robot_id in self.active_connections:
            websocket = self.active_connections[robot_id]
            if await self.is_websocket_alive(robot_id):
                try:
                    await websocket.send_text(message)
                    await redis_manager.update_heartbeat(robot_id)
                    return True
                except Exception:
                    await self.disconnect(robot_id)
            else:
                await redis_manager.remove_connection(robot_id)
                info = await redis_manager.get_connection_info(robot_id)
                if info and info.get("instance_id") != self.instance_id:
                    return await self.forward_message_to_instance(
                        message, robot_id, info.get("instance_id", "")
                    )
                return False
        info = await redis_manager.get_connection_info(robot_id)
        if not info:
            return False
        target_instance = info.get("instance_id", "")
        if target_instance == self.instance_id:
            await redis_manager.remove_connection(robot_id)
            return False
        return await self.forward_message_to_instance(message, robot_id, target_instance)

    async def forward_message_to_instance(
        self, message: str, robot_id: str, instance_id: str
    ) -> bool:
        logging.warning("cannot forward to %s: no cross-instance channel", instance_id)
        return False


manager = ConnectionManager()


@contextlib.asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    await redis_manager.connect()
    yield
    await redis_manager.redis.aclose()


app = FastAPI(lifespan=lifespan)


@app.websocket("/ws/{robot_id}")
async def robot_endpoint(websocket: WebSocket, robot_id: str) -> None:
    await manager.connect(websocket, robot_id)
    try:
        while True:
            await websocket.receive_text()
            # a robot that sends anything is alive
            await redis_manager.update_heartbeat(robot_id)
    except WebSocketDisconnect:
        await manager.disconnect(robot_id)


@app.post("/send/{robot_id}")
async def send_message_to_robot(robot_id: str, message_data: dict[str, Any]) -> dict[str, bool]:
    message_json = json.dumps(message_data, ensure_ascii=False)
    return {"success": await manager.send_personal_message(message_json, robot_id)}
