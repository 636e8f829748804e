"""Classic pub/sub on a real 3+3 cluster: subscribers and publishers meet on the primary that
owns the channel's hash slot, so a message needs no cluster-bus hop to reach them."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Backend, open_test_store
from tests.redis_counts import RedisCounts
from wsctl.redis.pubsub import Audience, make_pubsub, publish, publish_many, subscription

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster(backend: Backend) -> Backend:
    if backend.name != "cluster":
        pytest.skip("cluster only")
    return backend


async def test_a_subscriber_listens_on_its_channels_slot_owner_and_publishers_publish_there(
    cluster: Backend,
) -> None:
    async with open_test_store(cluster) as store:
        client = store.client
        channels = [f"ws_ctl:slot-{n}" for n in range(12)]  # spread over the primaries
        owners = {client.get_node_from_key(c).name for c in channels}
        assert len(owners) == 3
        for channel in channels:
            pubsub, node = make_pubsub(client, channel=channel)
            try:
                assert node == client.get_node_from_key(channel).name
                await pubsub.subscribe(channel)
                # PUBLISH answers how many subscribers that node delivered to itself: 1 means
                # the message reached the subscriber without the cluster bus
                assert await publish(client, channel, "one") == 1
                got = None
                for _ in range(20):  # the subscribe confirmation comes first
                    got = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                    if got is not None:
                        break
                assert got is not None and got["data"] == "one"
            finally:
                await pubsub.aclose()


async def test_publish_many_keeps_each_channels_order_across_primaries(cluster: Backend) -> None:
    async with open_test_store(cluster) as store:
        client = store.client
        channels = [f"ws_reply:order-{n}" for n in range(6)]
        received: dict[str, list[str]] = {c: [] for c in channels}
        ready = asyncio.Event()
        subscribed: set[str] = set()

        async def listen(channel: str) -> None:
            def state(ok: bool, _: BaseException | None) -> None:
                if ok:
                    subscribed.add(channel)
                    if len(subscribed) == len(channels):
                        ready.set()

            async for data in subscription(client, channel, state):
                received[channel].append(data)
                if len(received[channel]) == 50:
                    return

        tasks = [asyncio.create_task(listen(c)) for c in channels]
        try:
            await asyncio.wait_for(ready.wait(), 10)
            messages = [(c, str(k)) for k in range(50) for c in channels]
            for start in range(0, len(messages), 60):
                await publish_many(client, messages[start : start + 60])
            await asyncio.wait_for(asyncio.gather(*tasks), 10)
        finally:
            for task in tasks:
                task.cancel()
        assert all(got == [str(k) for k in range(50)] for got in received.values())


async def test_a_subscriber_away_from_the_home_node_is_heard_and_believed_for_a_second(
    cluster: Backend,
) -> None:
    """A subscriber whose home primary failed listens on another one: PUBLISH on the home node
    counts 0 there, yet the message reaches it (cluster bus). :class:`Audience` confirms the 0
    over every node once, then believes it for a second; nobody anywhere is not heard."""
    async with open_test_store(cluster) as store:
        client = store.client
        channel = "ws_ctl:away"
        home = client.get_node_from_key(channel).name
        pubsub, node = make_pubsub(client, avoid=frozenset({home}), channel=channel)
        assert node != home
        await pubsub.subscribe(channel)
        try:
            audience = Audience()
            assert cluster.cluster is not None
            counts = RedisCounts(cluster.cluster.primary_ports())
            before = counts.read()
            for _ in range(5):
                assert await audience.heard(client, channel, await publish(client, channel, "x"))
            after = counts.read()
            counts.close()
            assert after["pubsub"] - before["pubsub"] == 3  # one question, every primary
            received = 0
            for _ in range(40):
                got = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                received += got is not None
                if received == 5:
                    break
            assert received == 5
        finally:
            await pubsub.aclose()
        nobody = "ws_ctl:nobody-anywhere"
        assert not await audience.heard(client, nobody, await publish(client, nobody, "x"))
