"""Owner hints: an instance whose owner cache sent a message to a non-owner learns the real
owner. Real gateway processes (``wsctl gateway``), real robots over WebSockets, real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import re
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import Backend, open_test_store
from tests.fleet import wait_for
from tests.robot_clients import frames
from wsctl.protocol.batch import Batch, BatchReply, Item, decode_any_reply, encode_batch
from wsctl.protocol.envelopes import Envelope, Op, Reply, Status, encode
from wsctl.redis.pubsub import make_pubsub
from wsctl.registry.model import Registration, utcnow
from wsctl.sandbox.gateways import GatewayProcess

ATTEMPTS = 3  # the owner cache lives 1 s: a slow move lets it expire, and the attempt is redone


@contextlib.contextmanager
def gateways(redis_url: str, logs: Path, *names: str) -> Iterator[dict[str, GatewayProcess]]:
    """``wsctl gateway`` processes, stopped afterwards whatever happens."""
    started: dict[str, GatewayProcess] = {}
    try:
        for name in names:
            started[name] = GatewayProcess(
                redis_url=redis_url, instance_id=name, heartbeat_interval=0.5
            ).start(logs)
        yield started
    finally:
        for gw in started.values():
            gw.stop()


def counter(gw: GatewayProcess, name: str) -> int:
    """One counter of the gateway's ``/metrics`` (over HTTP, as Prometheus reads it)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = re.search(rf"^wsctl_gateway_{name}_total\{{[^}}]*\}} (\d+)$", text, re.M)
    assert found, f"{name} not in /metrics"
    return int(found.group(1))


async def send_via(store: Any, via: str, robot_id: str, text: str, batch: bool = True) -> Any:
    """One message for ``robot_id`` published to ``via``'s control channel; its one reply
    (a batch reply of one item, or a single reply)."""
    channel = store.keys.reply_channel(uuid.uuid4().hex)
    if batch:
        request = encode_batch(Batch(items=(Item("0", robot_id, text),), reply_to=channel))
    else:
        request = encode(Envelope(op=Op.SEND, robot_id=robot_id, message=text, reply_to=channel))
    pubsub, _ = make_pubsub(store.client)
    await pubsub.subscribe(channel)
    try:
        await store.client.publish(store.keys.control_channel(via), request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while loop.time() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message and message.get("type") == "message":
                return decode_any_reply(message["data"])
    finally:
        await pubsub.aclose()
    raise AssertionError(f"no reply for {robot_id} via {via}")


def status_and_route(reply: Any) -> tuple[Status, list[str]]:
    route = [hop.instance for hop in reply.route]
    if isinstance(reply, BatchReply):
        ((outcome),) = list(reply.outcomes())
        return outcome.status, route
    assert isinstance(reply, Reply)
    return reply.status, route


async def owner_is(store: Any, robot_id: str, instance: str) -> bool:
    entry = await store.get(robot_id)
    return entry is not None and entry.instance_id == instance


async def _move_and_send(
    store: Any, gws: dict[str, GatewayProcess], robot_id: str, batch: bool
) -> tuple[ClientConnection, list[tuple[Status, list[str]]]]:
    """The robot is on gw-a: prime gw-c's cache (a message via gw-c), move the robot to gw-b,
    then send two messages via gw-c. Returns the new connection and the three outcomes."""
    old = await connect(f"{gws['gw-a'].url}/ws/{robot_id}", ping_interval=None)
    try:
        await wait_for(lambda: owner_is(store, robot_id, "gw-a"))
        outcomes = [status_and_route(await send_via(store, "gw-c", robot_id, "m0", batch))]
        new = await connect(f"{gws['gw-b'].url}/ws/{robot_id}", ping_interval=None)
        await wait_for(lambda: owner_is(store, robot_id, "gw-b"))
        # gw-a has dropped the superseded session (the kick closes it with 4001)
        await asyncio.wait_for(old.wait_closed(), 5)
        assert old.close_code == 4001
        for text in ("m1", "m2"):
            outcomes.append(status_and_route(await send_via(store, "gw-c", robot_id, text, batch)))
    finally:
        await old.close()
    return new, outcomes


async def _moved_robot_case(
    store: Any, gws: dict[str, GatewayProcess], robot: str, batch: bool
) -> None:
    for _ in range(ATTEMPTS):
        corrected = counter(gws["gw-c"], "owner_cache_corrected")
        hints = counter(gws["gw-a"], "owner_hints_sent")
        robot_id = f"{robot}-{uuid.uuid4().hex[:6]}"
        new, outcomes = await _move_and_send(store, gws, robot_id, batch)
        try:
            assert outcomes[0] == (Status.DELIVERED, ["gw-c", "gw-a"])
            if outcomes[1][1] == ["gw-c", "gw-b"]:
                continue  # gw-c's cache had expired before the move: nothing to correct
            # m1 follows gw-c's stale cache to gw-a, which forwards it on and hints gw-c...
            assert outcomes[1] == (Status.DELIVERED, ["gw-c", "gw-a", "gw-b"])
            # ...so m2 goes straight to the new owner
            assert outcomes[2] == (Status.DELIVERED, ["gw-c", "gw-b"])
            assert await frames(new) == ["m1", "m2"]
            await wait_for(
                lambda n=corrected + 1: counter(gws["gw-c"], "owner_cache_corrected") == n
            )
            assert counter(gws["gw-a"], "owner_hints_sent") == hints + 1
            return
        finally:
            await new.close()
    raise AssertionError(f"the move never happened within the cache's lifetime ({ATTEMPTS}x)")


async def test_a_via_whose_cache_names_the_old_owner_learns_the_new_one(
    single: Backend, tmp_path: Path
) -> None:
    async with open_test_store(single) as store:
        with gateways(single.env["WSCTL_REDIS_URL"], tmp_path, "gw-a", "gw-b", "gw-c") as gws:
            await _moved_robot_case(store, gws, "mv-batch", batch=True)
            await _moved_robot_case(store, gws, "mv-single", batch=False)


async def test_a_via_sent_to_a_ghost_owner_delivers_after_one_not_connected(
    single: Backend, tmp_path: Path
) -> None:
    async with open_test_store(single) as store:
        with gateways(single.env["WSCTL_REDIS_URL"], tmp_path, "gw-a", "gw-b", "gw-c") as gws:
            robot_id = "ghost-1"
            # an entry naming gw-a, which holds no socket: gw-c reads it and caches gw-a
            await store.register(robot_id, Registration(robot_id, "gw-a", "c0", utcnow()).to_hash())
            first = status_and_route(await send_via(store, "gw-c", robot_id, "g0"))
            assert first == (Status.NOT_CONNECTED, ["gw-c", "gw-a"])  # ghost removed there
            # gw-a's hint ("no owner") makes gw-c forget gw-a (whether or not its 1 s expired)
            await wait_for(lambda: counter(gws["gw-c"], "owner_cache_corrected") == 1)
            assert counter(gws["gw-a"], "owner_hints_sent") == 1
            conn = await connect(f"{gws['gw-b'].url}/ws/{robot_id}", ping_interval=None)
            try:
                await wait_for(lambda: owner_is(store, robot_id, "gw-b"))
                second = status_and_route(await send_via(store, "gw-c", robot_id, "g1"))
                assert second == (Status.DELIVERED, ["gw-c", "gw-b"])
                assert await frames(conn) == ["g1"]
            finally:
                await conn.close()
