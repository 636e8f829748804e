"""Back-pressure, never failure: a client that runs out of connections waits for one, and a
busy client is never reported as Redis being down (real redis-server)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.exceptions import MaxConnectionsError

from tests.conftest import Backend
from tests.redis_counts import RedisCounts, primary_ports
from wsctl.gateway.core import CoreConfig, FleetCore
from wsctl.redis.factory import PoolBusy, close_client, is_pool_busy, make_client
from wsctl.redis.target import Target


def _target(single: Backend) -> Target:
    assert single.single is not None
    return Target("tcp", port=single.single.port)


async def test_more_commands_than_connections_wait_for_one_instead_of_failing(
    single: Backend,
) -> None:
    client = make_client(_target(single), max_connections=4)
    counts = RedisCounts(primary_ports(single))
    try:
        before = counts.read()
        results = await asyncio.gather(
            *(client.set(f"bp:{n}", n) for n in range(2000)), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        assert errors == []
        after = counts.read()
        assert after["connections"] - before["connections"] <= 4
    finally:
        counts.close()
        await close_client(client)


async def test_a_wait_for_a_connection_that_runs_out_says_the_client_is_busy(
    single: Backend,
) -> None:
    client = make_client(_target(single), max_connections=1, socket_timeout=0.2, retries=0)
    try:
        held = await client.connection_pool.get_connection()  # the only one, kept busy
        with pytest.raises(PoolBusy) as busy:
            await client.get("bp:x")
        assert is_pool_busy(busy.value) and "no free Redis connection" in str(busy.value)
        await client.connection_pool.release(held)
        assert await client.get("bp:x") is None  # and it works as soon as one is free
    finally:
        await close_client(client)


async def test_a_busy_pool_is_not_reported_as_redis_down(
    single: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    core = FleetCore(CoreConfig(instance_id="gw-busy"), _target(single))
    await core.start()
    try:
        caplog.set_level(logging.INFO, logger="wsctl.gateway")
        assert core.redis_ok
        for _ in range(3):
            core._redis_failed("send", PoolBusy("no free Redis connection"))
            core._redis_failed("control", MaxConnectionsError())
        assert core.redis_ok
        assert (core.metrics.redis_busy, core.metrics.redis_errors) == (6, 0)
        text = core.metrics_text()
        assert 'wsctl_gateway_redis_up{instance_id="gw-busy"} 1' in text
        assert 'wsctl_gateway_redis_busy_total{instance_id="gw-busy"} 6' in text
        lines = [r.getMessage() for r in caplog.records]
        assert not [line for line in lines if "redis unavailable" in line]
        assert len([line for line in lines if "pool busy" in line]) == 1  # once a minute
    finally:
        await core.stop()
