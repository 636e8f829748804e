"""What real gateways (wsctl gateway, and a FastAPI app on the fleet core under uvicorn) publish
over a real redis-server validates against docs/envelope.schema.json.

Every message on the control and reply channels is captured with PSUBSCRIBE while the fleet does
each thing the protocol describes: forwarding, kicks on reconnect, refusals, pings, inventories,
resyncs, drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import jsonschema
from websockets.asyncio.client import connect

from tests.conftest import Backend, open_test_store
from tests.fastapi_fleet import fastapi_gateways
from tests.fleet import running_fleet, wait_for
from tests.seedlike import seed_store_connection
from wsctl.ops.send import send_message
from wsctl.protocol.envelopes import (
    ROBOT_PING,
    ROBOT_PING_UNSUPPORTED,
    CloseCode,
    Envelope,
    Op,
    Status,
    encode,
)
from wsctl.protocol.rpc import request

SCHEMA = json.loads(
    (Path(__file__).parents[2] / "docs" / "envelope.schema.json").read_text(encoding="utf-8")
)


@contextlib.asynccontextmanager
async def captured(
    client: object, instances: tuple[str, ...]
) -> AsyncIterator[list[tuple[str, str]]]:
    """Every (channel, payload) published on the control channels of ``instances`` and on
    ws_reply:* while inside. The control channels are subscribed by name, not by a pattern: a
    pattern subscriber counts in every PUBLISH's receivers, so a dead owner's channel would
    look heard (docs/protocol.md §7)."""
    seen: list[tuple[str, str]] = []
    pubsub = client.pubsub()  # type: ignore[attr-defined]
    await pubsub.subscribe(*(f"ws_ctl:{name}" for name in instances))
    await pubsub.psubscribe("ws_reply:*")

    async def listen() -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message and message["type"] in ("message", "pmessage"):
                seen.append((message["channel"], message["data"]))

    task = asyncio.create_task(listen())
    try:
        yield seen
        await asyncio.sleep(0.3)  # the last replies
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await pubsub.aclose()


async def test_everything_real_gateways_publish_validates_against_the_schema(
    single: Backend, tmp_path: Path
) -> None:
    async with (
        running_fleet(single.env, max_message_bytes=100) as fleet,
        open_test_store(single) as store,
        captured(store.client, ("gw-a", "gw-b", "fa-a")) as seen,
    ):
        # a FastAPI instance on the fleet core too (uvicorn): it cannot ping a robot
        with fastapi_gateways(single, tmp_path, names=("fa-a",)) as (fa,):
            async with connect(f"{fa.ws_url}/ws/robot-fa"):
                await wait_for(lambda: store.get("robot-fa"))
                ping = Envelope(op=Op.PING, robot_id="robot-fa")
                reply = await request(store.client, store.keys, "fa-a", ping, 5)
                assert reply is not None and reply.status is Status.PONG
                assert reply.data[ROBOT_PING] == ROBOT_PING_UNSUPPORTED
                sent = await send_message(store.client, store.keys, "robot-fa", "m", via="gw-a")
                assert sent.status == "delivered" and sent.route == ["gw-a", "fa-a"]
        client, keys = store.client, store.keys
        async with connect(f"{fleet['gw-a'].ws_url}/ws/robot-1") as first:
            await wait_for(lambda: store.get("robot-1"))
            # the robot connects again elsewhere: gw-b kicks gw-a's session (no reply_to)
            async with connect(f"{fleet['gw-b'].ws_url}/ws/robot-1") as robot:
                await wait_for(lambda: first.close_code == CloseCode.SUPERSEDED)

                async def moved() -> bool:
                    entry = await store.get("robot-1")
                    return entry is not None and entry.instance_id == "gw-b"

                await wait_for(moved)
                sent = await send_message(client, keys, "robot-1", "hi", via="gw-a")
                assert sent.status == "delivered" and sent.route == ["gw-a", "gw-b"]
                assert await asyncio.wait_for(robot.recv(), 5) == "hi"
                assert (await send_message(client, keys, "robot-1", "x" * 101)).status == "rejected"
                assert (await send_message(client, keys, "nobody", "x", via="gw-a")).status == (
                    "not_connected"
                )
                await seed_store_connection(client, "lost", "gw-gone")
                outcome = await send_message(client, keys, "lost", "x", via="gw-a")
                assert outcome.status == "instance_unreachable"
                # a message that already used up its hops is refused where it lands
                spent = Envelope(op=Op.SEND, robot_id="robot-1", message="m", hops=2)
                reply = await request(client, keys, "gw-a", spent, 5)
                assert reply is not None and reply.status is Status.REJECTED
                for envelope, status in [
                    (Envelope(op=Op.PING), Status.PONG),
                    (Envelope(op=Op.PING, robot_id="robot-1"), Status.PONG),
                    (Envelope(op=Op.PING, robot_id="robot-9"), Status.NOT_CONNECTED),
                    (Envelope(op=Op.INVENTORY), Status.INVENTORY),
                    (Envelope(op=Op.RESYNC), Status.RESYNCED),
                    (Envelope(op=Op.KICK, robot_id="robot-1", message="bye"), Status.KICKED),
                    (Envelope(op=Op.DRAIN, message='{"batch": 10}'), Status.DRAINING),
                    (Envelope(op=Op.UNDRAIN), Status.UNDRAINED),
                ]:
                    reply = await request(client, keys, "gw-b", envelope, 5)
                    assert reply is not None and reply.status is status, envelope
                await wait_for(lambda: robot.close_code == CloseCode.KICKED)
                assert robot.close_reason == "bye"
        # a broken envelope gets no reply and breaks nothing
        await client.publish("ws_ctl:gw-a", "{not json")
        await client.publish("ws_ctl:gw-a", encode(Envelope(op=Op.PING, reply_to="ws_reply:z")))
    messages = [json.loads(p) for _, p in seen if p != "{not json"]
    for message in messages:
        jsonschema.validate(message, SCHEMA)
    ops = {m["op"] for m in messages if "op" in m}
    statuses = {m["status"] for m in messages if "status" in m}
    assert ops == {o.value for o in Op}
    # `error` needs Redis to fail mid-request: the unit tests build it
    assert statuses == {s.value for s in Status} - {"error"}
    unsupported = [m for m in messages if m.get("data", {}).get(ROBOT_PING)]
    assert unsupported and unsupported[0]["instance"] == "fa-a"
    assert {m["instance"] for m in messages if "status" in m} >= {"gw-a", "gw-b", "fa-a"}
    kicks = [m for m in messages if m.get("op") == "kick" and m["origin"] == "gw-b"]
    assert kicks and kicks[0]["reply_to"] is None and kicks[0]["conn_id"]
    forwarded = [m for m in messages if m.get("op") == "send" and m["hops"] == 1]
    assert forwarded and forwarded[0]["route"][0]["instance"] == "gw-a"
