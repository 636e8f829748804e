"""Batched send envelopes (protocol v2) through real gateways, real robots and real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import Backend, open_test_store
from tests.fleet import running_fleet, wait_for
from tests.robot_clients import frames, registered, robots
from wsctl.protocol.batch import (
    Batch,
    BatchReply,
    Item,
    decode_any_reply,
    encode_batch,
)
from wsctl.protocol.envelopes import Envelope, Op, Status, encode
from wsctl.redis.pubsub import make_pubsub


async def _exchange(
    store: Any, channel: str, messages: list[tuple[str, str]], expect: int, timeout: float = 5
) -> list[Any]:
    """Publish ``messages`` (channel, text) and collect replies on ``channel`` until ``expect``
    item outcomes (batch replies) or single replies have arrived."""
    pubsub, _ = make_pubsub(store.client)
    await pubsub.subscribe(channel)
    replies: list[Any] = []
    try:
        for target, text in messages:
            await store.client.publish(target, text)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        count = 0
        while count < expect and loop.time() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message and message.get("type") == "message":
                reply = decode_any_reply(message["data"])
                replies.append(reply)
                count += len(reply) if isinstance(reply, BatchReply) else 1
    finally:
        await pubsub.aclose()
    return replies


def _outcomes(replies: list[Any]) -> dict[str, tuple[Status, str]]:
    out: dict[str, tuple[Status, str]] = {}
    for reply in replies:
        for outcome in reply.outcomes():
            assert outcome.id not in out, f"two outcomes for item {outcome.id}"
            out[outcome.id] = (outcome.status, reply.instance)
    return out


async def test_a_batch_through_a_non_owner_reaches_every_robot_in_order_once(
    backend: Backend,
) -> None:
    async with (
        running_fleet(backend.env) as fleet,
        open_test_store(backend) as store,
    ):
        urls = {f"b{n}": fleet["gw-a" if n % 2 else "gw-b"].ws_url for n in range(6)}
        async with robots(urls) as conns:
            await wait_for(lambda: registered(store, list(urls)))
            items = [
                Item(f"{n}-{k}", robot_id, f"m{k}-{robot_id}")
                for k in range(3)
                for n, robot_id in enumerate(urls)
            ]
            items.append(Item("ghost", "nobody-here", "x"))
            channel = store.keys.reply_channel("batch-test")
            batch = Batch(items=tuple(items), reply_to=channel, origin="test")
            replies = await _exchange(
                store,
                channel,
                [(store.keys.control_channel("gw-a"), encode_batch(batch))],
                expect=len(items),
            )
            outcomes = _outcomes(replies)
            assert len(outcomes) == len(items)
            assert outcomes.pop("ghost")[0] is Status.NOT_CONNECTED
            assert all(status is Status.DELIVERED for status, _ in outcomes.values())
            # the owner answers for what it delivered: gw-a its own, gw-b the forwarded ones
            assert {outcomes[f"{n}-0"][1] for n in range(1, 6, 2)} == {"gw-a"}
            assert {outcomes[f"{n}-0"][1] for n in range(0, 6, 2)} == {"gw-b"}
            assert len(replies) == 2  # one reply per instance that resolved items
            for robot_id, conn in conns.items():
                assert await frames(conn) == [f"m{k}-{robot_id}" for k in range(3)]


async def test_a_control_message_published_twice_reaches_the_robot_once(
    backend: Backend,
) -> None:
    """A PUBLISH redis-py retried on a new connection just as Redis resumed runs twice: the
    receiving instance drops the identical copy (a batch, and a single envelope alike), and
    counts it in /metrics."""
    async with (
        running_fleet(backend.env, names=("gw-a",)) as fleet,
        open_test_store(backend) as store,
    ):
        async with robots({"twice": fleet["gw-a"].ws_url}) as conns:
            await wait_for(lambda: registered(store, ["twice"]))
            channel = store.keys.control_channel("gw-a")
            batch = encode_batch(Batch(items=(Item("0", "twice", "batched"),), origin="test"))
            single = encode(Envelope(op=Op.SEND, robot_id="twice", message="single"))
            for text in (batch, batch, single, single):
                await store.client.publish(channel, text)
            assert await frames(conns["twice"]) == ["batched", "single"]
            core = fleet["gw-a"].core
            assert core.recent.dropped == 2
            assert "wsctl_gateway_control_duplicates_dropped_total" in core.metrics_text()


async def test_a_batch_partly_held_here_is_forwarded_and_answered_in_one_round_trip(
    single: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance holding some of a batch's robots forwards the rest and publishes its own
    reply in the same pipeline as the forward: one round trip, not two."""
    from wsctl.gateway import batch_router

    pipelines: list[list[str]] = []
    original = batch_router.publish_many

    async def counting(client: Any, messages: list[tuple[str, str]], lanes: Any) -> list[int]:
        pipelines.append([channel for channel, _ in messages])
        return await original(client, messages, lanes)

    monkeypatch.setattr(batch_router, "publish_many", counting)
    async with running_fleet(single.env) as fleet, open_test_store(single) as store:
        urls = {"here": fleet["gw-a"].ws_url, "there": fleet["gw-b"].ws_url}
        async with robots(urls) as conns:
            await wait_for(lambda: registered(store, list(urls)))
            channel = store.keys.reply_channel("one-trip")
            batch = Batch(
                items=(Item("0", "here", "a"), Item("1", "there", "b")),
                reply_to=channel,
                origin="test",
            )
            replies = await _exchange(
                store, channel, [(store.keys.control_channel("gw-a"), encode_batch(batch))], 2
            )
            assert _outcomes(replies) == {
                "0": (Status.DELIVERED, "gw-a"),
                "1": (Status.DELIVERED, "gw-b"),
            }
            assert await frames(conns["there"]) == ["b"]
        # gw-a: the forward to gw-b and its reply together; gw-b: its reply
        assert sorted(pipelines) == sorted([["ws_ctl:gw-b", channel], [channel]]), pipelines


async def test_a_shared_message_batch_is_written_to_each_socket_once(single: Backend) -> None:
    async with (
        running_fleet(single.env, names=("gw-a",)) as fleet,
        open_test_store(single) as store,
    ):
        urls = {f"s{n}": fleet["gw-a"].ws_url for n in range(20)}
        async with robots(urls) as conns:
            await wait_for(lambda: registered(store, list(urls)))
            channel = store.keys.reply_channel("shared")
            batch = Batch(
                items=tuple(Item(str(n), r) for n, r in enumerate(urls)),
                message='{"cmd":"reboot"}',
                reply_to=channel,
            )
            replies = await _exchange(
                store, channel, [(store.keys.control_channel("gw-a"), encode_batch(batch))], 20
            )
            assert len(_outcomes(replies)) == 20 and len(replies) == 1
            for conn in conns.values():
                assert await frames(conn) == ['{"cmd":"reboot"}']


async def test_single_and_batched_envelopes_work_side_by_side(single: Backend) -> None:
    async with (
        running_fleet(single.env) as fleet,
        open_test_store(single) as store,
    ):
        async with robots({"x1": fleet["gw-b"].ws_url}) as conns:
            await wait_for(lambda: registered(store, ["x1"]))
            channel = store.keys.reply_channel("mixed")
            single_env = Envelope(op=Op.SEND, robot_id="x1", message="old", reply_to=channel)
            batch = Batch(items=(Item("1", "x1", "new"),), reply_to=channel)
            replies = await _exchange(
                store,
                channel,
                [
                    (store.keys.control_channel("gw-a"), encode(single_env)),
                    (store.keys.control_channel("gw-a"), encode_batch(batch)),
                ],
                expect=2,
            )
            assert sorted(type(r).__name__ for r in replies) == ["BatchReply", "Reply"]
            assert sorted(await frames(conns["x1"])) == ["new", "old"]


async def test_a_batch_to_an_owner_that_does_not_listen_says_unreachable(
    single: Backend,
) -> None:
    async with (
        running_fleet(single.env, names=("gw-a",)) as fleet,
        open_test_store(single) as store,
    ):
        from wsctl.registry.model import Registration, utcnow

        await store.register("far-1", Registration("far-1", "gw-gone", "c1", utcnow()).to_hash())
        channel = store.keys.reply_channel("unreach")
        batch = Batch(items=(Item("1", "far-1", "hi"),), reply_to=channel)
        replies = await _exchange(
            store, channel, [(store.keys.control_channel("gw-a"), encode_batch(batch))], 1
        )
        (outcome,) = list(replies[0].outcomes())
        assert outcome.status is Status.INSTANCE_UNREACHABLE and "gw-gone" in (outcome.reason or "")
        assert fleet["gw-a"].metrics.messages_failed == 1
        # as for single envelopes, the failure is in the event log of the robot
        await fleet["gw-a"].core.events.flush()
        events = await store.client.xrange(store.keys.robot_events_key("far-1"))
        assert [f["event"] for _, f in events] == ["forward_failed"]


@pytest.mark.parametrize("hops", [0, 2])
async def test_hop_limit_holds_for_batches(single: Backend, hops: int) -> None:
    async with (
        running_fleet(single.env) as fleet,
        open_test_store(single) as store,
    ):
        async with robots({"h1": fleet["gw-b"].ws_url}):
            await wait_for(lambda: registered(store, ["h1"]))
            channel = store.keys.reply_channel("hops")
            batch = Batch(items=(Item("1", "h1", "hi"),), reply_to=channel, hops=hops)
            replies = await _exchange(
                store, channel, [(store.keys.control_channel("gw-a"), encode_batch(batch))], 1
            )
            (outcome,) = list(replies[0].outcomes())
            expected = Status.DELIVERED if hops == 0 else Status.REJECTED
            assert outcome.status is expected


async def test_the_liveness_record_says_the_instance_speaks_batches(single: Backend) -> None:
    from wsctl.protocol.batch import BATCH_VERSION
    from wsctl.registry.instances import get_record

    async with (
        running_fleet(single.env, names=("gw-a",)),
        open_test_store(single) as store,
    ):
        record = await get_record(store.client, store.keys, "gw-a")
        assert record is not None and record.protocol == BATCH_VERSION


def _spy_writes(gateway: Any, robot_ids: list[str]) -> list[tuple[str, bytes]]:
    """Record what the gateway writes to each robot's transport: (robot id, the bytes object)."""
    written: list[tuple[str, bytes]] = []
    for robot_id in robot_ids:
        conn = gateway.core.local.get(robot_id)
        transport = conn.sock.ws.transport
        real = transport.write

        def write(data: bytes, robot_id: str = robot_id, real: Any = real) -> None:
            written.append((robot_id, data))
            real(data)

        transport.write = write
    return written


async def test_an_identical_payload_to_many_sockets_is_framed_once(single: Backend) -> None:
    from websockets.frames import Frame, Opcode

    async with (
        running_fleet(single.env, names=("gw-a",)) as fleet,
        open_test_store(single) as store,
    ):
        urls = {f"f{n}": fleet["gw-a"].ws_url for n in range(25)}
        async with robots(urls) as conns:
            await wait_for(lambda: registered(store, list(urls)))
            written = _spy_writes(fleet["gw-a"], list(urls))
            channel = store.keys.reply_channel("frame-once")
            payload = '{"cmd":"update","to":"every robot"}'
            batch = Batch(
                items=tuple(Item(str(n), r) for n, r in enumerate(urls)),
                message=payload,
                reply_to=channel,
            )
            replies = await _exchange(
                store, channel, [(store.keys.control_channel("gw-a"), encode_batch(batch))], 25
            )
            assert len(_outcomes(replies)) == 25
            for conn in conns.values():
                assert await frames(conn) == [payload]
            # one write per socket, and all of them the very same bytes object: one frame
            assert sorted(r for r, _ in written) == sorted(urls)
            frame_ids = {id(data) for _, data in written}
            assert len(frame_ids) == 1
            assert written[0][1] == Frame(Opcode.TEXT, payload.encode()).serialize(mask=False)


async def test_the_messages_of_one_robot_in_a_batch_leave_in_one_write_in_order(
    single: Backend,
) -> None:
    async with (
        running_fleet(single.env, names=("gw-a",)) as fleet,
        open_test_store(single) as store,
    ):
        urls = {"w1": fleet["gw-a"].ws_url, "w2": fleet["gw-a"].ws_url}
        async with robots(urls) as conns:
            await wait_for(lambda: registered(store, list(urls)))
            written = _spy_writes(fleet["gw-a"], list(urls))
            channel = store.keys.reply_channel("one-write")
            items = [Item(f"{k}-{r}", r, f"{r}:{k}") for k in range(5) for r in urls]
            batch = Batch(items=tuple(items), reply_to=channel)
            replies = await _exchange(
                store, channel, [(store.keys.control_channel("gw-a"), encode_batch(batch))], 10
            )
            assert all(s is Status.DELIVERED for s, _ in _outcomes(replies).values())
            for robot_id, conn in conns.items():
                assert await frames(conn) == [f"{robot_id}:{k}" for k in range(5)]
            assert sorted(r for r, _ in written) == ["w1", "w2"]  # one write each
