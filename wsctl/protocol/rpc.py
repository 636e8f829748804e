"""Request/reply over the control channel: how one instance or command asks another instance
and waits for its answer (gateway forwarding, the registry store's requests, ``send``,
``kick``, ``drain``, ``doctor``, fan-out ``send``). Below ``registry/``, ``gateway/`` and
``ops/``: it uses only the protocol, pub/sub and client modules.

Every process has one **reply inbox** per Redis client (:func:`inbox_for`): one channel,
``{reply_prefix}inbox-{token}``, subscribed once and kept (it subscribes again by itself after
a Redis restart or a cluster failover, within :data:`~wsctl.redis.pubsub.RESUBSCRIBE_MAX_DELAY`,
and leaves a frozen node that does not answer its PING: see
:class:`~wsctl.redis.pubsub.Liveness`).
A request is published with ``reply_to`` naming that channel and waits on a future matched by
its id, so a request costs one PUBLISH: no SUBSCRIBE, no new connection, no subscriber count.
Whether anyone listens comes from PUBLISH's receiver count (on a cluster, a count of 0 on the
channel's home primary is confirmed over every node, and a positive answer remembered for a
second: see :class:`~wsctl.redis.pubsub.Audience`). Requests wait until the inbox is
subscribed before they publish, so a fast reply is never missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from redis import exceptions as rx
from redis.exceptions import TimeoutError as RedisTimeoutError

from wsctl.protocol.batch import BatchReply, decode_replies
from wsctl.protocol.envelopes import Envelope, ProtocolError, Reply, encode
from wsctl.redis.factory import on_close
from wsctl.redis.pubsub import Audience, publish, subscription
from wsctl.redis.target import AsyncClient
from wsctl.registry.keys import Keyspace
from wsctl.tasks import settle_all, wait_within

__all__ = ["Inbox", "ReplyHandler", "Unreachable", "gather_requests", "inbox_for", "request"]

log = logging.getLogger("wsctl.control")

# What the inbox hands a reply to: a v1 reply, or a batch reply (v2).
ReplyHandler = Callable[[Reply | BatchReply], None]


class Unreachable(Exception):
    """Nobody is subscribed to the instance's control channel."""


class Inbox:
    """One process's reply channel on one Redis client: subscribed once, kept, and shared by
    every request, batch and fan-out of the process.

    Callers register a handler under the id replies will carry (:meth:`expect`): an envelope's
    id, or a batch's id (whose v1 item replies, ``{batch id}:{item id}``, reach the same
    handler). Replies nobody expects (late ones, after a timeout) are dropped.
    """

    def __init__(self, client: AsyncClient, keys: Keyspace, name: str = "") -> None:
        self.client = client
        self.keys = keys
        token = f"{name}-{uuid.uuid4().hex}" if name else uuid.uuid4().hex
        self.channel = keys.reply_channel(f"inbox-{token}")
        self.audience = Audience()
        self.subscribed = False
        self.resubscribed = 0  # times the subscription came back after a loss
        self.last_error: BaseException | None = None
        self._handlers: dict[str, ReplyHandler] = {}
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()  # set (and replaced) at every change of state
        self._task: asyncio.Task[None] | None = None
        self._was_subscribed = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start listening (idempotent; the subscription is made in the background)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen(), name="reply inbox")

    async def _listen(self) -> None:
        async for data in subscription(self.client, self.channel, self._state):
            self.dispatch(data)

    def _state(self, subscribed: bool, exc: BaseException | None) -> None:
        """The subscription's state changed: one log line when it is lost (not per failed
        retry while Redis stays away) and one when it is back. The error's type only: its
        text may name the Redis server, and a log is not the place for anything more."""
        was = self.subscribed
        self.subscribed = subscribed
        if subscribed:
            if self._was_subscribed:
                self.resubscribed += 1
                log.info(
                    "reply inbox %s subscribed again (%d time(s) since start)",
                    self.channel,
                    self.resubscribed,
                )
            self._was_subscribed = True
            self.last_error = None
            self._ready.set()
        else:
            if was:
                log.warning(
                    "reply inbox %s lost its subscription (%s); subscribing again",
                    self.channel,
                    type(exc).__name__ if exc is not None else "closed",
                )
            self.last_error = exc
            self._ready.clear()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @property
    def refused(self) -> BaseException | None:
        """The error of the subscription's last attempt when Redis refused it (connection
        refused or reset, authentication failed): known at once, not worth waiting out; None
        while subscribed, before the first attempt ends, or when Redis was only slow."""
        exc = self.last_error
        if self.subscribed or exc is None:
            return None
        if isinstance(exc, (rx.TimeoutError, TimeoutError)):
            return None
        if isinstance(exc, (rx.ConnectionError, ConnectionError)):
            return exc
        return None

    async def wait_ready(self, timeout: float) -> bool:
        """Start if needed and wait until subscribed; False after ``timeout`` seconds, or as
        soon as Redis refuses the subscription (:attr:`refused`)."""
        self.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        # False at once when Redis refuses (a refused connection is known at once)
        while not self._ready.is_set() and self.refused is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await wait_within(self._changed.wait(), remaining)
        return self._ready.is_set()

    async def aclose(self) -> None:
        """Stop listening (pending requests end as timeouts)."""
        if self._task is not None:
            await settle_all([self._task], timeout=2.0)
            self._task = None
        self.subscribed = False
        self._ready.clear()

    # ------------------------------------------------------------------ replies
    def expect(self, ident: str, handler: ReplyHandler) -> None:
        """Hand replies carrying ``ident`` (or ``{ident}:{item}``) to ``handler``."""
        self._handlers[ident] = handler

    def forget(self, ident: str) -> None:
        """Stop handing replies for ``ident`` to anyone."""
        self._handlers.pop(ident, None)

    @property
    def pending(self) -> int:
        """Ids replies are awaited for."""
        return len(self._handlers)

    def dispatch(self, data: str | bytes) -> None:
        """Hand one message of the reply channel to its handler (malformed ones are ignored):
        each reply of a bundle (:class:`~wsctl.protocol.batch.ReplyBundle`) as if it had come
        alone."""
        try:
            replies = decode_replies(data)
        except ProtocolError:
            return
        for reply in replies:
            self._dispatch_one(reply)

    def _dispatch_one(self, reply: Reply | BatchReply) -> None:
        handler = self._handlers.get(reply.id)
        if handler is None and isinstance(reply, Reply) and ":" in reply.id:
            handler = self._handlers.get(reply.id.partition(":")[0])
        if handler is None:
            return
        try:
            handler(reply)
        except Exception:  # a handler's bug must not end the inbox (every request would hang)
            log.exception("reply handler for %s failed", reply.id[:16])

    # ------------------------------------------------------------------ requests
    async def ensure_ready(self, timeout: float) -> None:
        """Wait until subscribed; raise the subscription's last error (a Redis failure) if it
        is not by ``timeout``, or a Redis timeout when there was none (Redis is that slow)."""
        if await self.wait_ready(timeout):
            return
        if self.last_error is not None:
            raise self.last_error
        raise RedisTimeoutError(f"the reply inbox was not subscribed within {timeout:g}s")

    async def publish_heard(self, channel: str, text: str) -> bool:
        """PUBLISH ``text`` on ``channel``; True when some subscriber got it."""
        receivers = await publish(self.client, channel, text)
        return await self.audience.heard(self.client, channel, receivers)

    async def request(self, instance_id: str, envelope: Envelope, timeout: float) -> Reply | None:
        """Send ``envelope`` to ``instance_id`` and wait for its one reply (None on timeout).

        Raises :class:`Unreachable` when nobody listens on the instance's control channel (the
        envelope reached no subscriber), and a Redis error when Redis fails.
        """
        deadline = time.monotonic() + timeout
        await self.ensure_ready(timeout)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Reply] = loop.create_future()

        def on_reply(reply: Reply | BatchReply) -> None:
            if isinstance(reply, Reply) and not answer.done():
                answer.set_result(reply)

        envelope = replace(envelope, reply_to=self.channel, sent_at=time.time())
        self.expect(envelope.id, on_reply)
        try:
            channel = self.keys.control_channel(instance_id)
            if not await self.publish_heard(channel, encode(envelope)):
                raise Unreachable(instance_id)
            try:
                return await wait_within(answer, max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return None
        finally:
            self.forget(envelope.id)


# One inbox per client and reply prefix; closed with the client (wsctl.redis.factory.close_client).
_inboxes: weakref.WeakKeyDictionary[Any, dict[str, Inbox]] = weakref.WeakKeyDictionary()


def inbox_for(client: AsyncClient, keys: Keyspace, name: str = "") -> Inbox:
    """The process's reply inbox on ``client`` (made and started on first use; closed by
    :func:`wsctl.redis.factory.close_client`). ``name`` goes into the channel name, for
    whoever reads ``PUBSUB CHANNELS``."""
    mine = _inboxes.setdefault(client, {})
    inbox = mine.get(keys.reply_prefix)
    if inbox is None:
        inbox = mine[keys.reply_prefix] = Inbox(client, keys, name)
        on_close(client, inbox.aclose)
    inbox.start()
    return inbox


async def request(
    client: AsyncClient,
    keys: Keyspace,
    instance_id: str,
    envelope: Envelope,
    timeout: float,
) -> Reply | None:
    """Send ``envelope`` to ``instance_id`` through the process's inbox and wait for its one
    reply (None on timeout). Raises :class:`Unreachable` when the instance does not listen on
    its control channel."""
    return await inbox_for(client, keys).request(instance_id, envelope, timeout)


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
