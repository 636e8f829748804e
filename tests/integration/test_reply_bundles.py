"""Bundled batch replies (``reply_hold_ms``) through a real gateway, real robots and real
Redis: an owner answering a steady stream of batches publishes far fewer replies to a
requester that accepts bundles, each item answered once; a requester that does not say so gets
one plain batch reply per batch; a stopping owner publishes the replies it still holds."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.conftest import Backend, open_test_store
from tests.fleet import running_fleet, wait_for
from tests.robot_clients import frames, registered, robots
from wsctl.gateway import batch_router
from wsctl.protocol.batch import Batch, Item, decode_replies, encode_batch
from wsctl.redis.pubsub import make_pubsub

BATCHES = 60


async def _stream(
    store: Any, target: str, channel: str, hold_ms: int, count: int = BATCHES
) -> tuple[list[Any], list[str]]:
    """Publish ``count`` one-item batches to ``target`` about one per ms (robots r0..r3 in
    turn) and collect every message on ``channel`` until each batch is answered (bounded):
    the replies, and the raw messages."""
    pubsub, _ = make_pubsub(store.client)
    await pubsub.subscribe(channel)
    raw: list[str] = []
    replies: list[Any] = []
    try:
        for n in range(count):
            batch = Batch(
                items=(Item("0", f"r{n % 4}", f"m{n}"),),
                id=f"b{n}",
                reply_to=channel,
                origin="test",
                reply_hold_ms=hold_ms,
            )
            await store.client.publish(target, encode_batch(batch))
            await asyncio.sleep(0.001)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while len(replies) < count and loop.time() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message and message.get("type") == "message":
                data = message["data"]
                raw.append(data if isinstance(data, str) else data.decode())
                replies.extend(decode_replies(data))
    finally:
        await pubsub.aclose()
    return replies, raw


def _answered_once(replies: list[Any]) -> list[str]:
    ids = [r.id for r in replies]
    assert len(ids) == len(set(ids)), "a batch answered twice"
    assert all([o.status.value for o in r.outcomes()] == ["delivered"] for r in replies)
    return sorted(ids, key=lambda i: int(i[1:]))


async def test_an_owner_bundles_its_replies_to_a_requester_that_accepts_them(
    single: Backend,
) -> None:
    async with (
        running_fleet(single.env, names=("gw-b",)) as fleet,
        open_test_store(single) as store,
    ):
        urls = {f"r{n}": fleet["gw-b"].ws_url for n in range(4)}
        async with robots(urls) as conns:
            await wait_for(lambda: registered(store, list(urls)))
            channel = store.keys.reply_channel("bundle-test")
            replies, raw = await _stream(store, store.keys.control_channel("gw-b"), channel, 50)
            assert _answered_once(replies) == [f"b{n}" for n in range(BATCHES)]
            assert any("replies" in json.loads(text) for text in raw)
            assert len(raw) <= BATCHES // 2, len(raw)  # far fewer PUBLISHes than batches
            for n in range(4):  # delivery is not held: every message arrived, in order
                assert await frames(conns[f"r{n}"]) == [f"m{k}" for k in range(n, BATCHES, 4)]


async def test_a_requester_that_does_not_accept_bundles_gets_a_plain_reply_per_batch(
    single: Backend,
) -> None:
    async with (
        running_fleet(single.env, names=("gw-b",)) as fleet,
        open_test_store(single) as store,
    ):
        urls = {f"r{n}": fleet["gw-b"].ws_url for n in range(4)}
        async with robots(urls):
            await wait_for(lambda: registered(store, list(urls)))
            channel = store.keys.reply_channel("plain-test")
            replies, raw = await _stream(store, store.keys.control_channel("gw-b"), channel, 0)
            assert _answered_once(replies) == [f"b{n}" for n in range(BATCHES)]
            assert len(raw) == BATCHES
            assert not any("replies" in json.loads(text) for text in raw)


async def _request_held(store: Any, channel: str, n: int) -> None:
    """Batch ``b{n}`` (message ``m{n}`` to r0 on gw-b), whose replies may be held a second."""
    batch = Batch(
        items=(Item("0", "r0", f"m{n}"),), id=f"b{n}", reply_to=channel, reply_hold_ms=1000
    )
    await store.client.publish(store.keys.control_channel("gw-b"), encode_batch(batch))


async def test_a_stopping_owner_publishes_the_replies_it_holds(single: Backend) -> None:
    async with (
        running_fleet(single.env, names=("gw-b",)) as fleet,
        open_test_store(single) as store,
    ):
        gateway = fleet["gw-b"]
        gateway.core.batches.replies.every = 60.0  # held until the owner stops
        async with robots({"r0": gateway.ws_url}):
            await wait_for(lambda: registered(store, ["r0"]))
            channel = store.keys.reply_channel("stop-test")
            pubsub, _ = make_pubsub(store.client)
            await pubsub.subscribe(channel)
            try:
                for n in range(3):
                    await _request_held(store, channel, n)
                await wait_for(lambda: gateway.core.batches.replies.held == 2)
                await gateway.stop()
                assert await _replies(pubsub, 3) == ["b0", "b1", "b2"]
            finally:
                await pubsub.aclose()


async def test_a_stopping_owner_loses_no_reply_being_published_when_it_stops(
    single: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held replies whose PUBLISH is under way (a slow round trip to Redis) when the owner
    stops still reach the requester: the publish is finished, not cancelled."""
    slow = asyncio.Event()
    started = asyncio.Event()
    real = batch_router.publish_many

    async def slow_publish(client: Any, messages: list[tuple[str, str]], lanes: Any) -> list[int]:
        if slow.is_set() and any("stop-slow" in channel for channel, _ in messages):
            started.set()
            await asyncio.sleep(0.3)  # a slow round trip while the held replies go out
        return await real(client, messages, lanes)

    monkeypatch.setattr(batch_router, "publish_many", slow_publish)
    async with (
        running_fleet(single.env, names=("gw-b",)) as fleet,
        open_test_store(single) as store,
    ):
        gateway = fleet["gw-b"]
        async with robots({"r0": gateway.ws_url}):
            await wait_for(lambda: registered(store, ["r0"]))
            channel = store.keys.reply_channel("stop-slow")
            pubsub, _ = make_pubsub(store.client)
            await pubsub.subscribe(channel)
            try:
                for n in range(3):
                    await _request_held(store, channel, n)
                    if n == 0:  # b0 goes at once; b1 and b2 are held, then slow to go
                        got = await _replies(pubsub, 1)
                        slow.set()
                await asyncio.wait_for(started.wait(), 2.0)
                await gateway.stop()
                got.extend(await _replies(pubsub, 2))
                assert got == ["b0", "b1", "b2"]
            finally:
                await pubsub.aclose()


async def _replies(pubsub: Any, count: int) -> list[str]:
    """The ids of the next ``count`` replies on ``pubsub`` (bundled or not), waiting at most
    5 s in all."""
    got: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while len(got) < count and loop.time() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message and message.get("type") == "message":
            got.extend(r.id for r in decode_replies(message["data"]))
    return got
