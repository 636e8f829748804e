"""Robots on two real uvicorn instances of the blast app (tests/blast_app.py: the FastAPI
example plus an endpoint that makes app code send), for the tests of messages sent from app
code under load and faults."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import Backend, open_test_store
from tests.fastapi_fleet import all_listening, fastapi_gateways
from tests.fleet import wait_for
from tests.robot_clients import registered
from tests.uvicorn_fleet import UvicornGateway

__all__ = ["ROBOTS", "BlastFleet", "blast_fleet", "check_received", "duplicates"]

BLAST_APP = "tests.blast_app:app"
ROBOTS = 60  # half on each instance


@dataclass
class BlastFleet:
    """Two instances of the blast app, robots on both (robot i on instance i % 2), and what
    each robot received."""

    sender: UvicornGateway
    other: UvicornGateway
    robots: list[str]
    sent: int = 0  # messages numbered so far
    received: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))

    def blast(
        self, count: int, in_flight: int, mode: str = "send", timeout: float = 5.0
    ) -> dict[str, Any]:
        """App code on ``sender`` sends ``count`` messages, ``in_flight`` at once, numbered on
        from the last blast's (every message of the fleet's life is distinct)."""
        first = self.sent
        self.sent += count
        body = {
            "first": first,
            "robots": self.robots,
            "count": count,
            "in_flight": in_flight,
            "mode": mode,
            "timeout": timeout,
        }
        return self.post("/test/blast", body)

    def send_many(self, message: str, **selection: Any) -> dict[str, Any]:
        """App code on ``sender`` runs ``fleet.send_many`` (``robots=[...]`` or ``glob=...``)."""
        return self.post("/test/send_many", {"message": message, **selection})

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` as JSON to the sender, its JSON answer."""
        request = urllib.request.Request(
            self.sender.http_url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            result: dict[str, Any] = json.loads(resp.read())
        return result

    def total(self) -> int:
        """Frames received by every robot, all told."""
        return sum(len(v) for v in self.received.values())


async def _read(robot_id: str, ws: ClientConnection, into: dict[str, list[str]]) -> None:
    with contextlib.suppress(Exception):  # the socket closes when the test ends
        async for frame in ws:
            into[robot_id].append(str(frame))


@contextlib.asynccontextmanager
async def blast_fleet(
    backend: Backend,
    log_dir: Path,
    heartbeat_interval: float = 300,
    extra_env: dict[str, str] | None = None,
    robot_count: int = ROBOTS,
) -> AsyncIterator[BlastFleet]:
    """Two blast-app instances on ``backend`` (by default with heartbeats far apart: none falls
    inside a measured run, whose commands are the sends' alone), ``robot_count`` robots
    connected and registered, each robot's frames collected."""
    env = {"WSCTL_TIMEOUT": "900", **(extra_env or {})}
    with fastapi_gateways(
        backend, log_dir, heartbeat_interval=heartbeat_interval, app=BLAST_APP, extra_env=env
    ) as (ga, gb):
        async with open_test_store(backend) as store:
            await wait_for(lambda: all_listening(store, ["fa-a", "fa-b"]), timeout=10)
            robots = [f"blast-{n}" for n in range(robot_count)]
            sockets = [
                await connect(f"{(ga, gb)[n % 2].ws_url}/ws/{robot_id}", max_queue=None)
                for n, robot_id in enumerate(robots)
            ]
            fleet = BlastFleet(ga, gb, robots)
            readers = [
                asyncio.create_task(_read(r, ws, fleet.received))
                for r, ws in zip(robots, sockets, strict=True)
            ]
            try:
                await wait_for(lambda: registered(store, robots), timeout=10)
                await asyncio.sleep(1.0)  # the connects' events are written by now
                yield fleet
            finally:
                for ws in sockets:
                    await ws.close()
                await asyncio.gather(*readers)


def check_received(fleet: BlastFleet, first: int, count: int) -> None:
    """Messages ``first`` to ``first + count - 1`` arrived at their robots exactly once, each
    robot's in sending order, and nothing else did (since ``received`` was last cleared)."""
    expected: dict[str, list[int]] = collections.defaultdict(list)
    for n in range(first, first + count):
        expected[fleet.robots[n % len(fleet.robots)]].append(n)
    for robot_id in fleet.robots:
        got = [json.loads(frame)["n"] for frame in fleet.received[robot_id]]
        assert got == expected[robot_id], robot_id


def duplicates(fleet: BlastFleet) -> dict[str, list[int]]:
    """Per robot, the message numbers it received more than once (none, it should be)."""
    found: dict[str, list[int]] = {}
    for robot_id, frames in fleet.received.items():
        numbers = collections.Counter(json.loads(frame)["n"] for frame in frames)
        again = sorted(n for n, times in numbers.items() if times > 1)
        if again:
            found[robot_id] = again
    return found
