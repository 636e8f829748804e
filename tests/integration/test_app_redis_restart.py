"""Two real uvicorn instances of the FastAPI example on a Redis of their own, which the tests
kill, restart empty or freeze: the instances register their robots again as soon as they see
Redis back (not at their next heartbeat), and /healthz and /metrics' redis_up tell the same."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from pathlib import Path

from tests.blast_fleet import ROBOTS, blast_fleet
from tests.conftest import Backend
from tests.fastapi_fleet import fastapi_gateways
from tests.fleet import wait_for
from tests.uvicorn_fleet import UvicornGateway
from wsctl.sandbox.redis_servers import RedisServer


def _metric(gw: UvicornGateway, name: str) -> float:
    with urllib.request.urlopen(gw.http_url + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_after_redis_restarts_empty_cross_instance_sends_are_delivered_within_2s(
    tmp_path: Path,
) -> None:
    """Heartbeats 300 s apart: the entries Redis lost come back because each instance
    re-registers its robots when its subscriptions are made again."""
    with RedisServer() as server:
        backend = Backend("own", {"WSCTL_REDIS_URL": server.url}, single=server)
        async with blast_fleet(backend, tmp_path, extra_env={"WSCTL_SOCKET_TIMEOUT": "1"}) as fleet:
            gateways = [fleet.sender, fleet.other]
            server.kill()
            for gw in gateways:
                await wait_for(lambda g=gw: _metric(g, "wsctl_gateway_reply_inbox_up") == 0, 5)
            await asyncio.to_thread(server.start)  # same port, no data
            restarted = time.monotonic()
            outcomes: dict[str, int] = {}
            for _ in range(40):  # bounded: 40 blasts of at most 1 s
                result = await asyncio.to_thread(fleet.blast, ROBOTS, ROBOTS, "send", 1.0)
                outcomes = result["outcomes"]
                if outcomes == {"delivered": ROBOTS}:
                    break
                assert time.monotonic() - restarted < 10, result
                await asyncio.sleep(0.05)
            took = time.monotonic() - restarted
            assert outcomes == {"delivered": ROBOTS}
            assert took < 2.5, f"every robot reachable {took:.1f}s after the restart"
            print(f"\n[restart] every robot reachable {took:.2f}s after Redis came back empty")


async def test_redis_up_and_healthz_agree_while_redis_is_frozen_and_after(
    tmp_path: Path,
) -> None:
    with RedisServer() as server:
        backend = Backend("own", {"WSCTL_REDIS_URL": server.url}, single=server)
        with fastapi_gateways(backend, tmp_path, ("up-a",), heartbeat_interval=300) as (gw,):
            assert _metric(gw, "wsctl_gateway_redis_up") == 1
            assert server.pid is not None
            os.kill(server.pid, signal.SIGSTOP)
            try:
                # /metrics alone (nothing asks /healthz): redis_up says 0 within a probe
                await wait_for(
                    lambda: _metric(gw, "wsctl_gateway_redis_up") == 0, timeout=4, interval=0.1
                )
                assert gw.get("/healthz") == (503, "redis unavailable\n")
                assert _metric(gw, "wsctl_gateway_redis_up") == 0
            finally:
                os.kill(server.pid, signal.SIGCONT)
            await wait_for(
                lambda: _metric(gw, "wsctl_gateway_redis_up") == 1, timeout=4, interval=0.1
            )
            assert gw.get("/healthz") == (200, "ok\n")
