"""Publish lanes (:class:`wsctl.redis.internals.PublishLanes`) against real redis-server: what
they write is published in order with its receiver counts, a frozen or killed Redis fails the
writes waiting for replies within the client's socket timeout and the lane comes back, the
bytes waiting are bounded, closing fails what waits, and on a 3+3 cluster each message goes to
its channel's home primary."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoPermissionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.conftest import Backend, slot_owner
from tests.faults import frozen
from wsctl.config import load_settings
from wsctl.protocol.envelopes import MAX_PUBLISH_BYTES, EnvelopeTooLarge
from wsctl.redis.factory import make_client, target_from_settings
from wsctl.redis.internals import (
    LANE_BYTES,
    LANE_RETRY,
    LAST_CHANNELS,
    LaneClosed,
    LaneTimeout,
    PublishLanes,
)
from wsctl.redis.pubsub import PublishUncertain, publish_many
from wsctl.redis.target import AsyncClient, Target
from wsctl.sandbox.redis_servers import RedisClusterProcesses, RedisServer

Results = list[int | BaseException]
TIMEOUT = 0.5  # the clients' socket timeout: a frozen Redis is noticed this soon


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as own:
        yield own


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[AsyncClient]:
    made = make_client(Target("tcp", port=server.port), socket_timeout=TIMEOUT)
    try:
        await made.ping()
        yield made
    finally:
        await made.aclose()


@pytest.fixture
async def lanes(client: AsyncClient) -> AsyncIterator[PublishLanes]:
    made = PublishLanes(client)
    try:
        yield made
    finally:
        await made.aclose()


async def _open(lanes: PublishLanes, messages: list[tuple[str, str]]) -> asyncio.Future[Results]:
    """``lanes.publish(messages)`` once a lane takes it (each refusal starts opening one):
    bounded by a few retries of a failed open."""
    deadline = time.monotonic() + 3 * LANE_RETRY + 2.0
    while True:
        written = lanes.publish(messages)
        if written is not None:
            return written
        assert time.monotonic() < deadline, "no lane opened in time"
        await asyncio.sleep(0.01)


async def _warm(lanes: PublishLanes) -> None:
    """The lane to channel "c"'s node open, one write answered."""
    assert await asyncio.wait_for(await _open(lanes, [("c", "warm")]), 5) == [0]


@contextlib.asynccontextmanager
async def _subscribed(server: RedisServer, channel: str) -> AsyncIterator[Any]:
    """A PubSub of its own subscribed to ``channel`` (closed after the block)."""
    listener = Redis(port=server.port, decode_responses=True)
    subscriber = listener.pubsub()
    try:
        await subscriber.subscribe(channel)
        yield subscriber
    finally:
        await subscriber.aclose()
        await listener.aclose()


async def _received(subscriber: object, count: int, within: float = 5.0) -> list[str]:
    """The data of the next ``count`` messages a subscribed PubSub gets (bounded in time)."""
    got: list[str] = []
    deadline = time.monotonic() + within
    while len(got) < count and time.monotonic() < deadline:
        message = await subscriber.get_message(  # type: ignore[attr-defined]
            ignore_subscribe_messages=True, timeout=0.1
        )
        if message is not None:
            got.append(message["data"])
    return got


async def test_writes_are_published_in_order_and_answered_with_receiver_counts(
    server: RedisServer, lanes: PublishLanes
) -> None:
    async with _subscribed(server, "heard") as subscriber:
        messages = [("heard" if n % 2 else "unheard", f"m{n}") for n in range(1000)]
        first = await _open(lanes, messages[:1])
        assert await asyncio.wait_for(first, 5) == [0]
        # two calls, no await between them: written in call order on the one lane
        one, two = lanes.publish(messages[:500]), lanes.publish(messages[500:])
        assert one is not None and two is not None
        results = [*await asyncio.wait_for(one, 5), *await asyncio.wait_for(two, 5)]
        assert results == [1 if n % 2 else 0 for n in range(1000)]
        got = await _received(subscriber, 500)
        assert got == [f"m{n}" for n in range(1, 1000, 2)]
        assert not lanes.busy


async def test_publish_is_refused_until_the_prepared_lane_is_open_then_writes(
    lanes: PublishLanes,
) -> None:
    lanes.prepare()
    assert lanes.publish([("c", "early")]) is None  # opening: nothing written
    written = await _open(lanes, [("c", "later")])
    assert await asyncio.wait_for(written, 5) == [0]


async def test_a_frozen_redis_fails_waiting_writes_within_the_socket_timeout_and_the_lane_reopens(
    server: RedisServer, lanes: PublishLanes
) -> None:
    await _warm(lanes)
    with frozen(server):
        written = lanes.publish([("c", f"m{n}") for n in range(100)])
        assert written is not None
        started = time.monotonic()
        results = await asyncio.wait_for(written, 5)
        elapsed = time.monotonic() - started
        assert all(isinstance(r, LaneTimeout) for r in results), results[:3]
        assert TIMEOUT - 0.1 <= elapsed < TIMEOUT + 0.5, elapsed
        assert lanes.publish([("c", "frozen")]) is None  # the lane was dropped
    thawed = time.monotonic()
    assert await asyncio.wait_for(await _open(lanes, [("c", "again")]), 5) == [0]
    # tried again LANE_RETRY after the failure, and the one after a failed open
    assert time.monotonic() - thawed < 2 * LANE_RETRY + 1.0


async def test_a_killed_redis_fails_waiting_writes_and_no_lane_is_open_until_it_is_back(
    server: RedisServer, client: AsyncClient
) -> None:
    lanes = PublishLanes(client)
    assert server.pid is not None
    try:
        await _warm(lanes)
        os.kill(server.pid, signal.SIGSTOP)  # the writes wait for replies that never come
        written = lanes.publish([("c", f"m{n}") for n in range(100)])
        assert written is not None
        await asyncio.sleep(0.05)  # the event loop sent them
        server.kill()
        started = time.monotonic()
        results = await asyncio.wait_for(written, 5)
        assert time.monotonic() - started < TIMEOUT, "failed by the connection, not the timeout"
        assert all(isinstance(r, ConnectionError) for r in results), results[:3]
        assert not any(isinstance(r, LaneClosed) for r in results)
        for _ in range(int(2 * LANE_RETRY / 0.1) + 1):  # refused: nothing to open a lane to
            assert lanes.publish([("c", "down")]) is None
            await asyncio.sleep(0.1)
        await asyncio.to_thread(server.start)  # same port
        assert await asyncio.wait_for(await _open(lanes, [("c", "back")]), 5) == [0]
    finally:
        await lanes.aclose()


async def test_writes_beyond_lane_bytes_are_refused_while_redis_does_not_answer(
    server: RedisServer, lanes: PublishLanes
) -> None:
    await _warm(lanes)
    chunk = "x" * (256 << 10)
    accepted: list[asyncio.Future[Results]] = []
    refused = 0
    with frozen(server):
        for _ in range(2 * LANE_BYTES // len(chunk)):
            written = lanes.publish([("c", chunk)])
            if written is None:
                refused += 1
            else:
                accepted.append(written)
        lane = lanes._lanes[""]
        waiting = lane.size
        buffered = lane.conn._writer.transport.get_write_buffer_size()
        results = await asyncio.wait_for(asyncio.gather(*accepted), 5)
    assert refused >= len(accepted) - 1 > 0, (refused, len(accepted))
    assert len(accepted) * len(chunk) <= LANE_BYTES + len(chunk)
    assert waiting <= LANE_BYTES + 64 and buffered <= LANE_BYTES + 64, (waiting, buffered)
    assert all(isinstance(r[0], RedisTimeoutError) for r in results)


async def test_closing_fails_waiting_writes_with_lane_closed(
    server: RedisServer, client: AsyncClient
) -> None:
    lanes = PublishLanes(client)
    assert await asyncio.wait_for(await _open(lanes, [("c", "warm")]), 5) == [0]
    with frozen(server):
        written = lanes.publish([("c", "a"), ("c", "b")])
        assert written is not None
        started = time.monotonic()
        await asyncio.wait_for(lanes.aclose(), 5)
        results = await asyncio.wait_for(written, 1)
        assert time.monotonic() - started < TIMEOUT  # closing does not wait for Redis
    assert [type(r) for r in results] == [LaneClosed, LaneClosed]
    assert lanes.publish([("c", "after")]) is None


async def test_an_oversize_message_raises_and_nothing_of_the_call_is_written(
    server: RedisServer, lanes: PublishLanes
) -> None:
    async with _subscribed(server, "c") as subscriber:
        assert await asyncio.wait_for(await _open(lanes, [("c", "warm")]), 5) == [1]
        assert await _received(subscriber, 1) == ["warm"]
        with pytest.raises(EnvelopeTooLarge):
            lanes.publish([("c", "fits"), ("c", "x" * (MAX_PUBLISH_BYTES + 1))])
        assert not lanes.busy
        written = lanes.publish([("c", "next")])
        assert written is not None and await asyncio.wait_for(written, 5) == [1]
        assert await _received(subscriber, 1) == ["next"]  # "fits" never went out


def _cluster_client(redis_cluster: object) -> AsyncClient:
    backend = Backend("cluster", {"REDIS_USE_CLUSTER": "true", "REDIS_NODES": ""})
    backend.env["REDIS_NODES"] = redis_cluster.startup  # type: ignore[attr-defined]
    return make_client(target_from_settings(load_settings(env=backend.env)), socket_timeout=2.0)


@pytest.mark.cluster
async def test_on_a_cluster_each_message_goes_to_its_channels_home_primary(
    redis_cluster: object,
) -> None:
    client = _cluster_client(redis_cluster)
    listeners: list[Redis] = []
    try:
        await client.ping()  # type: ignore[misc]
        # one channel homed on each primary, a subscriber on that primary only: PUBLISH
        # counts the receivers of the node it ran on
        homes: dict[str, str] = {}
        for n in range(1000):
            node = client.get_node_from_key(f"lane-{n}")  # type: ignore[union-attr]
            homes.setdefault(str(node.name), f"lane-{n}")
        assert len(homes) == 3, homes
        subscribers = []
        for name, channel in homes.items():
            host, port = name.rsplit(":", 1)
            listener = Redis(host=host, port=int(port), decode_responses=True)
            listeners.append(listener)
            subscriber = listener.pubsub()
            await subscriber.subscribe(channel)
            subscribers.append((channel, subscriber))
        lanes = PublishLanes(client)
        try:
            lanes.prepare()
            channels = list(homes.values())
            messages = [(channels[n % 3], f"{channels[n % 3]}:{n}") for n in range(300)]
            results = await asyncio.wait_for(await _open(lanes, messages), 5)
            assert results == [1] * 300  # each heard on its home node
            assert set(lanes._lanes) == set(homes)
            for channel, subscriber in subscribers:
                got = await _received(subscriber, 100)
                assert got == [text for c, text in messages if c == channel]
        finally:
            await lanes.aclose()
            for _, subscriber in subscribers:
                await subscriber.aclose()
    finally:
        for listener in listeners:
            await listener.aclose()
        await client.aclose()


@contextlib.asynccontextmanager
async def _cluster_lanes(redis_cluster: object) -> AsyncIterator[tuple[Any, PublishLanes]]:
    """A cluster client whose slot map was read, and its lanes (being opened)."""
    client = _cluster_client(redis_cluster)
    lanes = PublishLanes(client)
    try:
        await client.ping()  # type: ignore[misc]
        lanes.prepare()
        yield client, lanes
    finally:
        await lanes.aclose()
        await client.aclose()


@pytest.mark.cluster
async def test_a_clusters_lanes_forget_the_nodes_of_channels_no_lane_waits_for(
    redis_cluster: object,
) -> None:
    """Every requester's reply channel passes through the lanes: past LAST_CHANNELS, the
    channels whose node's lane waits for nothing are forgotten (memory stays bounded)."""
    async with _cluster_lanes(redis_cluster) as (_, lanes):
        for start in range(0, 3 * LAST_CHANNELS, 200):
            messages = [(f"reply-{n}", "r") for n in range(start, start + 200)]
            assert await asyncio.wait_for(await _open(lanes, messages), 5) == [0] * 200
        assert 0 < len(lanes._last) <= LAST_CHANNELS


@pytest.mark.cluster
async def test_a_channel_moved_to_another_node_waits_for_its_unanswered_message_there(
    redis_cluster: RedisClusterProcesses,
) -> None:
    """A channel's last message waits for its node's answer (the node frozen) when the slot
    map moves the channel to another node: a call writing to it now is refused, even when the
    call also carries a message for the old node (it would overtake the first)."""
    async with _cluster_lanes(redis_cluster) as (client, lanes):
        assert isinstance(client, RedisCluster)
        home = client.get_node_from_key("moving")
        other = next(n for n in client.get_primaries() if n.name != home.name)
        beside = next(
            f"beside-{n}"
            for n in range(1000)
            if client.get_node_from_key(f"beside-{n}").name == home.name
        )
        assert await asyncio.wait_for(await _open(lanes, [("moving", "m0")]), 5) == [0]
        with frozen(slot_owner(redis_cluster, "moving")):
            first = lanes.publish([("moving", "m1")])
            assert first is not None
            client.nodes_manager.slots_cache[client.keyslot("moving")] = [other]
            assert lanes.publish([("moving", "m2")]) is None
            assert lanes.publish([("moving", "m2"), (beside, "x")]) is None
        await asyncio.wait_for(first, 5)
        written = lanes.publish([("moving", "m2")])  # answered: it may go to the new node
        assert written is not None and await asyncio.wait_for(written, 5) == [0]


async def test_a_lane_the_server_closes_while_idle_is_dropped_at_once_and_opened_again(
    server: RedisServer, client: AsyncClient
) -> None:
    """A server closing an idle connection (its client ``timeout``, a restart) is seen while
    nothing waits (a read is always pending): the next write is refused, not lost in a dead
    socket, and the lane opens again."""
    killer = Redis(port=server.port, decode_responses=True)
    lanes = PublishLanes(client)
    try:
        await _warm(lanes)
        await killer.client_kill_filter(_type="normal", skipme=True)
        await asyncio.sleep(0.2)  # the close reaches the lane's reader
        assert lanes.publish([("c", "into a dead socket?")]) is None
        assert await asyncio.wait_for(await _open(lanes, [("c", "again")]), 5) == [0]
    finally:
        await lanes.aclose()
        await killer.aclose()


def _no_pipeline(client: AsyncClient, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make ``client``'s pipelines count and fail: what still publishes went on a lane."""
    made: list[int] = []

    def refuse(*args: object, **kwargs: object) -> None:
        made.append(1)
        raise AssertionError("the pool's pipeline was used")

    monkeypatch.setattr(client, "pipeline", refuse)
    return made


async def test_publish_many_goes_through_the_pool_until_a_lane_is_open_then_on_the_lane(
    server: RedisServer, client: AsyncClient, lanes: PublishLanes, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _subscribed(server, "heard") as subscriber:
        messages = [("heard", "m0"), ("unheard", "m1")]
        # no lane yet: the pipeline publishes (and the call starts opening the lane)
        assert await publish_many(client, messages, lanes) == [1, 0]
        await _warm(lanes)
        made = _no_pipeline(client, monkeypatch)
        assert await publish_many(client, [("heard", "m2"), ("unheard", "m3")], lanes) == [1, 0]
        assert made == []
        assert await _received(subscriber, 2) == ["m0", "m2"]
        with pytest.raises(AssertionError, match="pipeline was used"):
            await publish_many(client, messages)  # no lanes given: the pool's way


async def test_publish_many_raises_a_frozen_lanes_timeout_in_time_then_uses_the_pool(
    server: RedisServer, client: AsyncClient, lanes: PublishLanes
) -> None:
    await _warm(lanes)
    with frozen(server):
        started = time.monotonic()
        with pytest.raises(LaneTimeout):
            await asyncio.wait_for(publish_many(client, [("c", "m0"), ("c", "m1")], lanes), 5)
        assert time.monotonic() - started < TIMEOUT + 0.5
    # the lane was dropped (reopened LANE_RETRY later): the pool publishes meanwhile
    assert await asyncio.wait_for(publish_many(client, [("c", "m2")], lanes), 5) == [0]


async def test_publish_many_refuses_an_oversize_message_before_any_lane_writes(
    server: RedisServer, client: AsyncClient, lanes: PublishLanes
) -> None:
    await _warm(lanes)
    async with _subscribed(server, "c") as subscriber:
        big = "x" * (MAX_PUBLISH_BYTES + 1)
        with pytest.raises(EnvelopeTooLarge):
            await publish_many(client, [("c", "first"), ("c", big)], lanes)
        assert await publish_many(client, [("c", "after")], lanes) == [1]
        assert await _received(subscriber, 2, within=1.0) == ["after"]


async def test_publish_many_sends_what_a_lost_lane_carried_once_more_through_the_pool(
    server: RedisServer, client: AsyncClient, lanes: PublishLanes
) -> None:
    """The lane's connection is lost with writes waiting for Redis's replies: they go once
    more through the pool's pipeline (as the client's retry does for a pipeline), so the call
    returns receiver counts instead of failing."""
    await _warm(lanes)
    async with _subscribed(server, "c") as subscriber:
        messages = [("c", f"m{n}") for n in range(50)]
        with frozen(server):
            call = asyncio.ensure_future(publish_many(client, messages, lanes))
            await asyncio.sleep(0.05)  # written on the lane, waiting for replies
            assert lanes.busy
            lanes._lanes[""].conn._writer.transport.abort()
            await asyncio.sleep(0.05)  # the lane failed; the pipeline waits for Redis
        assert await asyncio.wait_for(call, 5) == [1] * 50
        got = await _received(subscriber, 50)
        assert set(got) == {text for _, text in messages}


async def test_publish_many_says_uncertain_when_a_lost_lanes_messages_fail_through_the_pool_too(
    server: RedisServer, client: AsyncClient, lanes: PublishLanes
) -> None:
    """Written on the lane, the lane lost, then Redis gone before the pool could send them
    again: what became of them is not known (Redis may have run them), so the call raises
    PublishUncertain, which the gateway reports as ``timeout`` "it may have been published"."""
    await _warm(lanes)
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)  # the write waits for a reply that never comes
    call = asyncio.ensure_future(publish_many(client, [("c", "m0")], lanes))
    await asyncio.sleep(0.05)
    assert lanes.busy
    server.kill()  # a stopped process dies too: the lane is lost, the pool refused
    with pytest.raises(PublishUncertain):
        await asyncio.wait_for(call, 5)


async def test_publish_many_raises_redis_refusing_a_publish_on_the_lane_as_is(
    server: RedisServer, client: AsyncClient, lanes: PublishLanes
) -> None:
    """An error reply is Redis's answer: raised as it is, not sent again through the pool and
    not taken for a message that may have been published."""
    await _warm(lanes)
    admin = Redis(port=server.port)
    try:
        await admin.execute_command("ACL", "SETUSER", "default", "-publish")
        with pytest.raises(NoPermissionError):
            await asyncio.wait_for(publish_many(client, [("c", "m0")], lanes), 5)
        assert not lanes.busy
    finally:
        await admin.execute_command("ACL", "SETUSER", "default", "+publish")
        await admin.aclose()
