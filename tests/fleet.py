"""In-process gateway fleets for integration tests (real sockets on 127.0.0.1, real Redis)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from wsctl.config import load_settings
from wsctl.gateway.server import Gateway, GatewayConfig
from wsctl.protocol.envelopes import Status, decode_envelope, encode, reply_to
from wsctl.redis.factory import target_from_settings


@contextlib.asynccontextmanager
async def running_fleet(
    env: dict[str, str], names: tuple[str, ...] = ("gw-a", "gw-b"), **config: Any
) -> AsyncIterator[dict[str, Gateway]]:
    """Start one Gateway per name on free loopback ports; stop them all afterwards."""
    target = target_from_settings(load_settings(env=env))
    gateways: dict[str, Gateway] = {}
    options = {"heartbeat_interval": 0.3, "timeout": 5.0, **config}
    try:
        for name in names:
            gw = Gateway(GatewayConfig(port=0, instance_id=name, **options), target)
            await gw.start()
            gateways[name] = gw
        await asyncio.gather(*(gw.wait_subscribed() for gw in gateways.values()))
        yield gateways
    finally:
        for gw in gateways.values():
            await gw.stop()


async def wait_for(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> None:
    """Poll an async or sync predicate until true (bounded in time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def echo_pings(client: Any, pubsub: Any, count: int) -> None:
    """Answer ``count`` pings that ``pubsub`` gets with pongs, as an instance would (at most
    10 s): the other end of a request test."""
    answered = 0
    for _ in range(200):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
        if message and message["type"] == "message":
            envelope = decode_envelope(message["data"])
            assert envelope.reply_to
            await client.publish(envelope.reply_to, encode(reply_to(envelope, Status.PONG, "echo")))
            answered += 1
            if answered == count:
                return
    raise AssertionError(f"{answered} of {count} requests came")
