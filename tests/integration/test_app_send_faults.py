"""Messages sent from app code while Redis fails: frozen (SIGSTOP) mid-blast, killed and
restarted, a cluster primary failing over. Real redis-server processes of the test's own, two
real uvicorn instances of the blast app, real robots."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from tests.blast_fleet import ROBOTS, BlastFleet, blast_fleet, duplicates
from tests.conftest import Backend, slot_owner
from tests.fleet import wait_for
from wsctl.sandbox.redis_servers import RedisClusterProcesses, RedisServer

SOCKET_TIMEOUT = "1"  # the gateways' Redis socket timeout: a frozen Redis is noticed in 1 s


def _metric(fleet_gateway_url: str, name: str) -> float:
    with urllib.request.urlopen(fleet_gateway_url + "/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def _until_all_delivered(fleet: BlastFleet, count: int, within: float) -> float:
    """Blast ``count`` messages until one blast is delivered in full; seconds it took."""
    started = time.monotonic()
    while True:
        result = await asyncio.to_thread(fleet.blast, count, count, "send", 1.0)
        if result["outcomes"] == {"delivered": count}:
            return time.monotonic() - started
        assert time.monotonic() - started < within, result
        await asyncio.sleep(0.1)


async def test_redis_frozen_mid_blast_every_send_ends_in_time_and_nothing_arrives_twice(
    tmp_path: Path,
) -> None:
    """Redis stopped up to three times mid-blast, each time resumed while redis-py retries the
    commands that timed out (on a new connection: a resumed Redis runs both copies of a
    PUBLISH, and before receivers dropped copies a robot got such messages twice)."""
    timeout = 2.0
    count, in_flight = 24_000, 1000
    with RedisServer() as server:
        backend = Backend("own", {"WSCTL_REDIS_URL": server.url}, single=server)
        env = {"WSCTL_SOCKET_TIMEOUT": SOCKET_TIMEOUT}
        async with blast_fleet(backend, tmp_path, extra_env=env) as fleet:
            assert server.pid is not None
            blasting = asyncio.create_task(
                asyncio.to_thread(fleet.blast, count, in_flight, "send", timeout)
            )
            await asyncio.sleep(0.3)
            assert not blasting.done()  # the first freeze comes mid-blast
            for freeze in (1.3, 1.5, 1.7):
                if blasting.done():
                    break  # resumed within the retry of a timed-out command
                os.kill(server.pid, signal.SIGSTOP)
                try:
                    await asyncio.sleep(freeze)
                finally:
                    os.kill(server.pid, signal.SIGCONT)
                await asyncio.sleep(0.7)
            thawed = time.monotonic()
            result = await blasting
            outcomes = collections.Counter(result["outcomes"])
            assert sum(outcomes.values()) == count
            assert set(outcomes) <= {"delivered", "timeout", "error"}, result
            # each chunk of sends ends within its timeout, whatever Redis does
            assert result["seconds"] < (count / in_flight) * (timeout + 0.5), result
            # after SIGCONT sends work again at once
            after = await asyncio.to_thread(fleet.blast, ROBOTS, ROBOTS, "send", timeout)
            assert after["outcomes"] == {"delivered": ROBOTS}, after
            assert time.monotonic() - thawed < (count / in_flight) * timeout + 2.0
            await asyncio.sleep(1.0)  # anything Redis still held has arrived by now
            assert duplicates(fleet) == {}
            # redis_up said 0 while Redis was frozen, and says 1 again soon after
            await wait_for(lambda: _metric(fleet.sender.http_url, "wsctl_gateway_redis_up"), 10)
            dropped = _metric(
                fleet.other.http_url, "wsctl_gateway_control_duplicates_dropped_total"
            )
            print(f"\n[frozen] {dict(outcomes)}; copies dropped by the owner: {dropped:g}")


async def test_redis_killed_and_restarted_the_inbox_is_back_within_a_second(
    tmp_path: Path,
) -> None:
    with RedisServer() as server:
        backend = Backend("own", {"WSCTL_REDIS_URL": server.url}, single=server)
        env = {"WSCTL_SOCKET_TIMEOUT": SOCKET_TIMEOUT}
        async with blast_fleet(backend, tmp_path, heartbeat_interval=0.5, extra_env=env) as fleet:
            urls = [fleet.sender.http_url, fleet.other.http_url]
            server.kill()
            for url in urls:
                await wait_for(lambda u=url: _metric(u, "wsctl_gateway_reply_inbox_up") == 0, 5)
            down = await asyncio.to_thread(fleet.blast, ROBOTS, ROBOTS, "send", 1.0)
            assert set(down["outcomes"]) <= {"delivered", "error", "timeout"}, down
            await asyncio.sleep(2.0)
            await asyncio.to_thread(server.start)  # same port, empty
            restarted = time.monotonic()
            for url in urls:
                await wait_for(
                    lambda u=url: _metric(u, "wsctl_gateway_reply_inbox_up") == 1,
                    timeout=5,
                    interval=0.01,
                )
            assert time.monotonic() - restarted < 1.0
            # the heartbeat registers every robot again; then every send is delivered
            await _until_all_delivered(fleet, ROBOTS, within=10)
            assert duplicates(fleet) == {}


@pytest.mark.cluster
async def test_a_primary_failing_over_mid_blast_sends_resume_without_a_restart(
    tmp_path: Path,
) -> None:
    with RedisClusterProcesses() as cluster:
        backend = Backend(
            "own-cluster",
            {"REDIS_USE_CLUSTER": "true", "REDIS_NODES": cluster.startup},
            cluster=cluster,
        )
        env = {"WSCTL_SOCKET_TIMEOUT": SOCKET_TIMEOUT}
        async with blast_fleet(backend, tmp_path, heartbeat_interval=0.5, extra_env=env) as fleet:
            # the primary the robots' owner listens on (its control channel's home)
            victim = slot_owner(cluster, "ws_ctl:fa-b")
            blasting = asyncio.create_task(asyncio.to_thread(fleet.blast, 4000, 500, "send", 1.0))
            await asyncio.sleep(0.3)
            victim.kill()
            killed = time.monotonic()
            result = await blasting
            assert sum(result["outcomes"].values()) == 4000
            assert set(result["outcomes"]) <= {"delivered", "timeout", "error"}, result
            took = await _until_all_delivered(fleet, ROBOTS, within=30)
            print(
                f"\n[failover] sends delivered in full {time.monotonic() - killed:.1f}s "
                f"after the kill ({took:.1f}s of retries)"
            )
            assert duplicates(fleet) == {}
