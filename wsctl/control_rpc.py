"""Request/reply over the control channel: how one instance or command asks another instance
and waits for its answer (gateway forwarding, the registry store's requests, ``send``,
``kick``, ``drain``, ``doctor``). Below ``registry/``, ``gateway/`` and ``ops/``: it uses only
the protocol, pub/sub and liveness modules.

The reply channel is subscribed *before* the request is published, so a fast reply is never
missed; if nobody listens on the instance's control channel (subscribers are counted on every
node of a cluster), the request is not sent and the caller learns at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import replace

from wsctl.instances import is_listening
from wsctl.protocol import Envelope, ProtocolError, Reply, decode_reply, encode
from wsctl.redis_pubsub import publish, subscribe
from wsctl.redis_target import AsyncClient
from wsctl.registry.keys import Keyspace

__all__ = ["Unreachable", "gather_requests", "request"]


class Unreachable(Exception):
    """Nobody is subscribed to the instance's control channel."""


async def request(
    client: AsyncClient,
    keys: Keyspace,
    instance_id: str,
    envelope: Envelope,
    timeout: float,
) -> Reply | None:
    """Send ``envelope`` to ``instance_id`` and wait for its one reply (None on timeout).

    Raises :class:`Unreachable` when the instance does not listen on its control channel.
    """
    channel = keys.reply_channel(uuid.uuid4().hex)
    envelope = replace(envelope, reply_to=channel, sent_at=time.time())
    pubsub = await subscribe(client, channel)
    try:
        if not await is_listening(client, keys, instance_id):
            raise Unreachable(instance_id)
        await publish(client, keys.control_channel(instance_id), encode(envelope))
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=min(remaining, 1.0)
            )
            if not message or message.get("type") != "message":
                continue
            try:
                reply = decode_reply(message["data"])
            except ProtocolError:
                continue
            if reply.id == envelope.id:
                return reply
        return None
    finally:
        # the reply (or the error being raised) is what matters; a close that fails on a
        # connection that broke meanwhile is not news
        with contextlib.suppress(Exception):
            await pubsub.aclose()


async def gather_requests(
    client: AsyncClient,
    keys: Keyspace,
    targets: list[tuple[str, Envelope]],
    timeout: float,
) -> dict[str, Reply | Unreachable | None]:
    """Several requests at once; per instance its reply, None (timeout) or Unreachable."""

    async def one(instance_id: str, envelope: Envelope) -> Reply | Unreachable | None:
        try:
            return await request(client, keys, instance_id, envelope, timeout)
        except Unreachable as exc:
            return exc

    results = await asyncio.gather(*(one(i, e) for i, e in targets))
    return {i: r for (i, _), r in zip(targets, results, strict=True)}
