"""redis_pubsub on fakeredis: a short exchange's subscription and the long-lived one share
their subscribe step (failover across primaries is tested on a real cluster in
tests/integration/test_cluster_failover.py)."""

from __future__ import annotations

import asyncio

import fakeredis

from wsctl.redis.pubsub import subscribe, subscriber_count, subscription


async def test_subscribe_returns_a_subscribed_pubsub() -> None:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    pubsub = await subscribe(client, "replies")
    try:
        assert await subscriber_count(client, "replies") == 1
        await client.publish("replies", "hello")
        message = None
        for _ in range(20):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message:
                break
        assert message is not None and message["data"] == "hello"
    finally:
        await pubsub.aclose()


async def test_subscription_yields_payloads_and_reports_its_state() -> None:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    states: list[bool] = []
    stream = subscription(client, "control", lambda up, _err: states.append(up))
    first = asyncio.ensure_future(anext(stream))
    for _ in range(50):
        if states:
            break
        await asyncio.sleep(0.02)
    await client.publish("control", "payload")
    assert await asyncio.wait_for(first, 5) == "payload"
    assert states == [True]
    await stream.aclose()
