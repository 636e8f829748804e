"""The reply inbox: one subscription per process for every reply it waits for, on real Redis
and real gateways (single node and 3+3 cluster)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import redis

from tests.conftest import Backend, open_test_store
from tests.fleet import echo_pings, running_fleet, wait_for
from tests.redis_counts import RedisCounts, primary_ports
from wsctl.protocol.envelopes import Envelope, Op, Status
from wsctl.protocol.rpc import Unreachable, gather_requests, inbox_for, request
from wsctl.redis.factory import connect
from wsctl.redis.target import Target
from wsctl.registry.keys import Keyspace
from wsctl.sandbox.redis_servers import RedisServer


async def test_requests_share_one_subscription_and_open_no_connection_each(
    backend: Backend,
) -> None:
    """Fifty pings from one client (sequential, then at once): one SUBSCRIBE for all, one
    PUBLISH each, no subscriber count, and one after the other no new connection at all."""
    async with (
        running_fleet(backend.env, names=("gw-a",)),
        open_test_store(backend) as store,
    ):
        keys = store.keys
        reply = await request(store.client, keys, "gw-a", Envelope(op=Op.PING), 5)
        assert reply is not None and reply.status is Status.PONG  # inbox subscribed, pool warm
        counts = RedisCounts(primary_ports(backend))
        before = counts.read()
        for _ in range(25):
            reply = await request(store.client, keys, "gw-a", Envelope(op=Op.PING), 5)
            assert reply is not None and reply.status is Status.PONG
        sequential = counts.read()
        assert sequential["connections"] == before["connections"], (before, sequential)
        replies = await gather_requests(
            store.client, keys, [("gw-a", Envelope(op=Op.PING)) for _ in range(25)], 5
        )
        assert len(replies) == 1  # keyed by instance; all 25 were answered
        after = counts.read()
        counts.close()
        assert after["subscribe"] - before["subscribe"] == 0
        assert after["pubsub"] - before["pubsub"] == 0
        # 50 requests + 50 replies (the gateway publishes its own)
        assert after["publish"] - before["publish"] == 100


async def test_nobody_listening_is_known_from_the_publish_count(backend: Backend) -> None:
    async with open_test_store(backend) as store:
        await inbox_for(store.client, store.keys).wait_ready(5)
        counts = RedisCounts(primary_ports(backend))
        before = counts.read()
        started = time.monotonic()
        with pytest.raises(Unreachable):
            await request(store.client, store.keys, "nobody", Envelope(op=Op.PING), 5)
        assert time.monotonic() - started < 1.0
        after = counts.read()
        counts.close()
        assert after["publish"] - before["publish"] == 1
        # a single node counts every subscriber; a cluster confirms a 0 over every node
        expected = 0 if backend.single is not None else len(primary_ports(backend))
        assert after["pubsub"] - before["pubsub"] == expected


async def test_the_inbox_is_back_within_a_second_after_redis_is_killed_and_restarted() -> None:
    with RedisServer() as server:
        target = Target("tcp", port=server.port)
        async with connect(target, socket_timeout=1.0) as client:
            inbox = inbox_for(client, Keyspace())
            assert await inbox.wait_ready(5)
            server.kill()
            await wait_for(lambda: not inbox.subscribed, timeout=5)
            await asyncio.sleep(3.0)  # down long enough for any backoff to reach its cap
            await asyncio.to_thread(server.start)
            restarted = time.monotonic()
            await wait_for(lambda: inbox.subscribed, timeout=5, interval=0.01)
            assert time.monotonic() - restarted < 1.0
            assert inbox.resubscribed == 1
            # and it carries replies again: a request answered by a subscriber of our own
            listener = redis.asyncio.Redis(port=server.port, decode_responses=True)
            pubsub = listener.pubsub()
            await pubsub.subscribe(Keyspace().control_channel("echo"))
            try:
                answering = asyncio.create_task(echo_pings(listener, pubsub, 1))
                reply = await request(client, Keyspace(), "echo", Envelope(op=Op.PING), 5)
                assert reply is not None and reply.status is Status.PONG
                await answering
            finally:
                await pubsub.aclose()
                await listener.aclose()


async def test_a_lost_and_a_restored_inbox_subscription_log_one_line_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "inbox-s3cret"
    with RedisServer(password=secret) as server:
        target = Target("tcp", port=server.port, password=secret)
        async with connect(target, socket_timeout=1.0) as client:
            inbox = inbox_for(client, Keyspace())
            assert await inbox.wait_ready(5)
            with caplog.at_level(logging.INFO, logger="wsctl.control"):
                server.kill()
                await wait_for(lambda: not inbox.subscribed, timeout=5)
                await asyncio.sleep(1.5)  # several failed retries while Redis is away
                await asyncio.to_thread(server.start)
                await wait_for(lambda: inbox.subscribed, timeout=5, interval=0.01)
    lines = [r for r in caplog.records if r.name == "wsctl.control" and "reply inbox" in r.message]
    assert [(r.levelno, inbox.channel in r.message) for r in lines] == [
        (logging.WARNING, True),
        (logging.INFO, True),
    ], [r.message for r in lines]
    assert "lost its subscription" in lines[0].message
    assert "subscribed again (1 time(s)" in lines[1].message
    assert not [r for r in caplog.records if secret in r.getMessage()]


async def test_closing_the_client_stops_its_inbox(single: Backend) -> None:
    async with open_test_store(single) as store:
        inbox = inbox_for(store.client, store.keys)
        assert await inbox.wait_ready(5)
    assert not inbox.subscribed
    assert inbox._task is None
