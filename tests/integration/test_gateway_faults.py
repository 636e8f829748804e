"""Gateways ride out Redis faults: a frozen server (SIGSTOP/SIGCONT during heartbeats) and a
server killed and restarted empty. Sockets stay open; within one heartbeat interval after Redis
answers again every live robot is registered again, including entries that were lost."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect

from tests.conftest import Backend, open_test_store
from tests.fleet import running_fleet, wait_for
from wsctl.sandbox.processes import free_port
from wsctl.sandbox.redis_servers import RedisServer

INTERVAL = 0.5
# one heartbeat interval, plus what a loaded 2-core machine needs to run one batch
WITHIN = INTERVAL + 2.5


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own (it gets frozen and killed); stopped afterwards."""
    server = RedisServer(port=free_port()).start()
    try:
        yield server
    finally:
        if server.pid:
            os.kill(server.pid, signal.SIGCONT)
        server.stop()


async def _registered(store, gw, robots: list[str]) -> bool:  # type: ignore[no-untyped-def]
    entries = {e.robot_id: e for e in await store.read_keys([f"ws_conn:{r}" for r in robots])}
    return all(
        r in entries and entries[r].conn_id == gw.local.get(r).conn_id  # type: ignore[union-attr]
        for r in robots
    )


async def test_frozen_redis_during_heartbeats_keeps_sockets_and_reregisters(
    own_redis: RedisServer,
) -> None:
    env = {"WSCTL_REDIS_URL": own_redis.url}
    backend = Backend("single", env)
    async with (
        running_fleet(env, names=("gw-a",), heartbeat_interval=INTERVAL, timeout=30) as fleet,
        open_test_store(backend) as store,
    ):
        gw = fleet["gw-a"]
        robots = [f"frozen-{n}" for n in range(20)]
        sockets = [await connect(f"{gw.ws_url}/ws/{r}") for r in robots]
        await wait_for(lambda: _registered(store, gw, robots))
        assert own_redis.pid is not None
        os.kill(own_redis.pid, signal.SIGSTOP)
        await asyncio.sleep(4 * INTERVAL)  # several heartbeats start against a frozen server
        late = await connect(f"{gw.ws_url}/ws/frozen-late")  # connects during the freeze
        gone = sockets.pop()  # and one robot leaves during the freeze
        await gone.close()
        await asyncio.sleep(2 * INTERVAL)
        os.kill(own_redis.pid, signal.SIGCONT)
        thawed = time.monotonic()
        # entries lost while it was away (e.g. a failover to a stale replica)
        await store.client.delete("ws_conn:frozen-0", "ws_conn:frozen-1")
        live = [*robots[:-1], "frozen-late"]
        await wait_for(lambda: _registered(store, gw, live), timeout=WITHIN)
        assert time.monotonic() - thawed <= WITHIN
        await wait_for(lambda: _absent(store, robots[-1]), timeout=WITHIN)
        assert all(ws.state.name == "OPEN" for ws in [*sockets, late])
        assert gw.redis_ok
        for ws in [*sockets, late]:
            await ws.close()


async def _exists(store, key: str) -> bool:  # type: ignore[no-untyped-def]
    return bool(await store.client.exists(key))


async def _absent(store, robot_id: str) -> bool:  # type: ignore[no-untyped-def]
    return await store.get(robot_id) is None


async def test_redis_killed_and_restarted_empty_gets_every_live_robot_back_within_an_interval(
    own_redis: RedisServer,
) -> None:
    env = {"WSCTL_REDIS_URL": own_redis.url}
    backend = Backend("single", env)
    async with running_fleet(
        env, names=("gw-a",), heartbeat_interval=INTERVAL, timeout=30
    ) as fleet:
        gw = fleet["gw-a"]
        robots = [f"survivor-{n}" for n in range(20)]
        sockets = [await connect(f"{gw.ws_url}/ws/{r}") for r in robots]
        async with open_test_store(backend) as store:
            await wait_for(lambda: _registered(store, gw, robots))
        own_redis.kill()
        await wait_for(lambda: not gw.redis_ok, timeout=5)
        await asyncio.sleep(3 * INTERVAL)  # heartbeats fail meanwhile; sockets stay open
        own_redis.start()  # same port, empty: every entry and the liveness record were lost
        restarted = time.monotonic()
        async with open_test_store(backend) as store:
            await wait_for(lambda: _registered(store, gw, robots), timeout=WITHIN)
            # the liveness record is written by the same heartbeat, after the entries
            await wait_for(lambda: _exists(store, "ws_inst:gw-a"), timeout=WITHIN)
            assert time.monotonic() - restarted <= WITHIN
        await wait_for(lambda: gw.subscribed, timeout=5)
        assert all(ws.state.name == "OPEN" for ws in sockets)
        for ws in sockets:
            await ws.close()
