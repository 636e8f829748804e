"""A gateway written from docs/protocol.md alone takes part in a wsctl fleet.

The gateway below uses nothing of wsctl: raw redis-py commands, the Lua bodies as printed in the
document, envelopes and replies as plain JSON dicts built by §8-§10. If the document left out
something a gateway needs, wsctl's commands would fail against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from tests.conftest import Backend, ainvoke, open_test_store
from tests.fleet import running_fleet, wait_for

DOC = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")
LUA = dict(re.findall(r"<!-- lua:([A-Z_]+) -->\n```lua\n(.*?)```", DOC, re.S))


class DocGateway:
    """A level-2 gateway per docs/protocol.md, single node, no heartbeat loop (the test is
    shorter than one interval): register, fenced disconnect, kick, liveness record, and the
    send/ping/inventory/kick/resync ops."""

    def __init__(self, redis: Any, instance_id: str) -> None:
        self.redis = redis
        self.id = instance_id
        self.sessions: dict[str, tuple[str, Any, float]] = {}  # robot -> (conn_id, ws, since)
        self.port = 0

    async def _eval(self, name: str, key: str, *args: str) -> Any:
        return await self.redis.eval(LUA[name], 1, key, *args)

    def _fields(self, robot: str, conn_id: str) -> list[str]:
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        fields = {
            "instance_id": self.id,
            "robot_id": robot,
            "connected_at": now,
            "last_heartbeat": now,
            "status": "connected",
            "websocket_state": "active",
            "conn_id": conn_id,
        }
        return [x for pair in fields.items() for x in pair]

    async def handle(self, ws: Any) -> None:
        robot = ws.request.path.removeprefix("/ws/")
        conn_id = uuid.uuid4().hex
        old = self.sessions.get(robot)
        if old is not None:
            await old[1].close(4001, "superseded by a newer connection")
        self.sessions[robot] = (conn_id, ws, time.time())
        prev_instance, prev_conn = await self._eval(
            "REGISTER", f"ws_conn:{robot}", "instance_id", "conn_id", *self._fields(robot, conn_id)
        )
        if prev_instance and prev_instance != self.id and prev_conn != conn_id:
            await self.publish(
                prev_instance,
                {
                    "v": 1,
                    "op": "kick",
                    "id": uuid.uuid4().hex,
                    "robot_id": robot,
                    "conn_id": prev_conn,
                    "reply_to": None,
                    "origin": self.id,
                },
            )
        with contextlib.suppress(Exception):
            async for _ in ws:
                pass
        if self.sessions.get(robot, ("",))[0] == conn_id:
            del self.sessions[robot]
            await self._eval(
                "COMPARE_AND_DELETE", f"ws_conn:{robot}", "hash", "conn_id", "=" + conn_id
            )

    async def publish(self, instance: str, envelope: dict[str, Any]) -> None:
        await self.redis.publish(f"ws_ctl:{instance}", json.dumps(envelope))

    async def liveness(self) -> None:
        key = f"ws_inst:{self.id}"
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        await self.redis.hset(
            key,
            mapping={
                "instance_id": self.id,
                "host": "127.0.0.1",
                "port": str(self.port),
                "pid": "0",
                "ws_url": f"ws://127.0.0.1:{self.port}",
                "started_at": now,
                "last_seen": now,
                "version": "doc-1",
                "connections": str(len(self.sessions)),
            },
        )
        await self.redis.pexpire(key, 90_000)

    async def on_envelope(self, raw: str) -> None:
        try:
            env = json.loads(raw)
            assert env["v"] == 1 and env["id"]
        except Exception:
            return  # §7: drop what does not decode
        route = [*env.get("route", []), {"instance": self.id, "at": time.time()}]
        robot = env.get("robot_id")
        op, data, reason = env.get("op"), {}, None
        session = self.sessions.get(robot) if robot else None
        if op == "send" and session is not None:
            await session[1].send(env["message"])
            status = "delivered"
        elif op == "send":
            status, reason = "not_connected", "no socket here"
        elif op == "kick" and session and env.get("conn_id") in (None, session[0]):
            del self.sessions[robot]
            if env.get("message") is None:
                await session[1].close(4001, "superseded by a newer connection")
            else:
                await session[1].close(4002, env["message"])
            await self._eval(
                "COMPARE_AND_DELETE", f"ws_conn:{robot}", "hash", "conn_id", "=" + session[0]
            )
            status = "kicked"
        elif op == "ping" and not robot:
            status, data = "pong", {"connections": len(self.sessions), "version": "doc-1"}
        elif op == "inventory":
            status = "inventory"
            data = {
                "connections": [
                    {"robot_id": r, "conn_id": c, "since": s}
                    for r, (c, _, s) in self.sessions.items()
                ]
            }
        elif op == "resync":
            status, data = "resynced", {"reregistered": 0}
        else:
            status, reason = "not_connected", "no socket here"
        if env.get("reply_to"):
            reply = {
                "v": 1,
                "id": env["id"],
                "status": status,
                "instance": self.id,
                "robot_id": robot,
                "reason": reason,
                "route": route,
                "sent_at": env.get("sent_at", 0),
                "replied_at": time.time(),
                "data": data,
            }
            await self.redis.publish(env["reply_to"], json.dumps(reply))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[DocGateway]:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(f"ws_ctl:{self.id}")

        async def control() -> None:
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                if msg and msg["type"] == "message":
                    await self.on_envelope(msg["data"])

        task = asyncio.create_task(control())
        async with serve(self.handle, "127.0.0.1", 0) as server:
            self.port = server.sockets[0].getsockname()[1]
            await self.liveness()
            try:
                yield self
            finally:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                await pubsub.aclose()
                await self.redis.delete(f"ws_inst:{self.id}")


async def test_a_gateway_built_from_the_document_alone_works_with_wsctl(single: Backend) -> None:
    async with (
        open_test_store(single) as store,
        DocGateway(store.client, "doc-gw").running() as doc,
        running_fleet(single.env, names=("gw-a",)) as fleet,
    ):
        robot = await connect(f"ws://127.0.0.1:{doc.port}/ws/robot-1")
        await wait_for(lambda: store.get("robot-1"))
        res = await ainvoke(["send", "robot-1", "direct"], env=single.env)
        assert res.code == 0, res.out + res.err
        assert await asyncio.wait_for(robot.recv(), 5) == "direct"
        res = await ainvoke(["send", "robot-1", "forwarded", "--via", "gw-a"], env=single.env)
        assert res.code == 0 and "via gw-a -> owner doc-gw -> robot-1: delivered" in res.out
        assert await asyncio.wait_for(robot.recv(), 5) == "forwarded"
        res = await ainvoke(["doctor", "-o", "json"], env=single.env)
        assert res.code == 0, res.out
        rows = {r["instance_id"]: r for r in json.loads(res.out)["instances"]}
        assert rows["doc-gw"] == {
            "instance_id": "doc-gw",
            "liveness": "alive",
            "listening": True,
            "entries": 1,
            "sockets": 1,
            "not_checked": [],
        }
        # the robot moves to gw-a: gw-a kicks doc-gw's session, whose fenced clean-up keeps
        # gw-a's new entry
        async with connect(f"{fleet['gw-a'].ws_url}/ws/robot-1"):
            await wait_for(lambda: robot.close_code == 4001)
            await asyncio.sleep(0.2)
            entry = await store.get("robot-1")
            assert entry is not None and entry.instance_id == "gw-a"

        async def gone() -> bool:
            return await store.get("robot-1") is None

        await wait_for(gone)  # gw-a's session ended: its own fenced clean-up removed it
