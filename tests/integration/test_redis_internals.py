"""The bulk fast path against real Redis: really taken, bounded in time, and never fooled by
RESP3 push frames (then redis-py's own reader is used, and that is logged once at debug).

These run against whatever redis-py is installed; CI runs the suite with the newest release and
with the lowest allowed one (.ci/lower-bounds.txt, docs/development.md)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import pytest
import redis
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.conftest import Backend, open_test_store
from tests.faults import fill, frozen
from wsctl.redis import internals as redis_internals
from wsctl.redis.factory import make_client
from wsctl.redis.internals import bulk_execute, bulk_path_counts
from wsctl.redis.target import Target
from wsctl.sandbox.redis_servers import RedisServer


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as own:
        yield own


async def test_the_fast_path_is_taken_for_bulk_reads_on_real_redis(backend: Backend) -> None:
    print("redis-py", redis.__version__)
    async with open_test_store(backend) as store:
        for i in range(120):
            await store.client.hset(f"ws_conn:r{i}", mapping={"instance_id": "gw", "robot_id": "x"})
        fast, fallback = bulk_path_counts.fast, bulk_path_counts.fallback
        entries = [e async for e in store.iter_entries()]
        assert len(entries) == 120
        assert bulk_path_counts.fast > fast
        assert bulk_path_counts.fallback == fallback


async def test_factory_clients_speak_resp2_on_every_connection(server: RedisServer) -> None:
    client = make_client(Target("tcp", port=server.port))
    try:
        await client.ping()
        conn = await client.connection_pool.get_connection()
        try:
            assert conn.protocol == 2
        finally:
            await client.connection_pool.release(conn)
    finally:
        await client.aclose()


async def test_push_frames_between_replies_are_not_counted_as_replies(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A RESP3 connection with client tracking gets an invalidation push in the middle of a
    batch (the batch changes a key it read): the replies must still line up with the commands.
    """
    pool = ConnectionPool(port=server.port, decode_responses=True, protocol=3, max_connections=1)
    client = Redis(connection_pool=pool)
    redis_internals._logged_fallbacks.clear()
    caplog.set_level(logging.DEBUG, logger="wsctl.redis")
    try:
        await client.hset("k0", "f", "0")
        await client.hset("k1", "f", "1")
        await client.execute_command("CLIENT", "TRACKING", "ON")
        calls = [
            ("k0", ("HGETALL", "k0")),  # tracked from now on
            ("k0", ("HSET", "k0", "f", "z")),  # invalidates k0: a push frame to this client
            ("k1", ("HGETALL", "k1")),
        ]
        fast, fallback = bulk_path_counts.fast, bulk_path_counts.fallback
        first = await bulk_execute(client, calls)
        second = await bulk_execute(client, calls)
    finally:
        await client.aclose()
    assert first == [{"f": "0"}, 0, {"f": "1"}]
    assert second == [{"f": "z"}, 0, {"f": "1"}]
    assert bulk_path_counts.fast == fast and bulk_path_counts.fallback == fallback + 2
    notes = [r for r in caplog.records if "fast path not taken" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.DEBUG
    assert "RESP3" in notes[0].getMessage()


async def test_a_bulk_read_on_a_frozen_server_fails_within_the_socket_timeout(
    server: RedisServer,
) -> None:
    fill(server, 2000)
    client = make_client(Target("tcp", port=server.port), socket_timeout=0.5)
    keys = [f"ws_conn:robot-{i}" for i in range(2000)]
    calls = [(key, ("HGETALL", key)) for key in keys]
    try:
        assert len(await bulk_execute(client, calls)) == 2000  # the connection is warm
        fast = bulk_path_counts.fast
        with frozen(server):
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError):
                await asyncio.wait_for(bulk_execute(client, calls), 10)
            elapsed = time.monotonic() - started
        assert bulk_path_counts.fast == fast + 1  # it was the fast reader that gave up
        assert elapsed < 0.5 + 0.5, elapsed
        # the connection that timed out was dropped: the next batch is read correctly
        replies = await bulk_execute(client, calls[:3])
        robots = [dict(zip(r[::2], r[1::2], strict=True))["robot_id"] for r in replies]
        assert robots == ["robot-0", "robot-1", "robot-2"]  # RESP2: flat field/value lists
    finally:
        await client.aclose()
