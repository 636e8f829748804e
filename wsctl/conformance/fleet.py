"""The conformance kit acting as the fleet around the gateway under test.

It is a requester on the control channel (through a reply inbox of
:mod:`wsctl.protocol.rpc`, recording every message that reaches it, so a reply without its
id or a second reply is seen), a peer instance (``{prefix}peer``: a liveness record saying
protocol 2, and a subscription to its control channel, where the gateway's forwards, kicks
and owner hints arrive), and the other sessions of the registry (it writes entries of its own
robots with the protocol's ``REGISTER`` script, as another instance would).

Everything it writes is under its run's robot-id prefix; every key it wrote, or made the
gateway write (its robots' entries and event streams), is remembered and removed by
:meth:`FleetSide.cleanup`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from redis.exceptions import RedisError

from wsctl.protocol.batch import BATCH_VERSION, Batch, BatchReply, encode_batch
from wsctl.protocol.envelopes import Envelope, ProtocolError, Reply, encode, load_object
from wsctl.protocol.rpc import Inbox, ReplyHandler, Unreachable
from wsctl.redis.pubsub import publish, subscription
from wsctl.redis.target import AsyncClient
from wsctl.registry.instances import InstanceRecord, write_record
from wsctl.registry.keys import Keyspace
from wsctl.registry.model import Registration, format_ts, utcnow
from wsctl.registry.store import RegistryStore
from wsctl.tasks import settle, wait_within

__all__ = ["FleetSide", "Pending", "RecordingInbox", "Tap", "ascii_json", "decoded"]

log = logging.getLogger("wsctl.conformance")

POLL = 0.02  # seconds between two reads of a key the kit waits for
KEEP = 10_000  # messages a tap or the inbox remembers


def ascii_json(request: Envelope | Batch) -> str:
    """The request's JSON with every non-ASCII character escaped: a message holding a lone
    surrogate (text no UTF-8 can carry) travels as ``\\udc80``, as the protocol says (§11)."""
    text = encode_batch(request) if isinstance(request, Batch) else encode(request)
    return json.dumps(json.loads(text), separators=(",", ":"))


def decoded(text: str) -> dict[str, Any] | None:
    """A message as a JSON object, None when it is not one."""
    try:
        return load_object(text)
    except ProtocolError:
        return None


@dataclass(frozen=True)
class Seen:
    """One message that reached the kit's reply inbox, and whether a request claimed it."""

    at: float  # monotonic
    text: str
    matched: bool


class RecordingInbox(Inbox):
    """A reply inbox that also remembers every message it got (the last :data:`KEEP`), and
    whether a waiting request claimed it: the replies nobody asked for are the evidence
    against a gateway that answers without the request's id."""

    def __init__(self, client: AsyncClient, keys: Keyspace, name: str = "") -> None:
        super().__init__(client, keys, name)
        self.seen: deque[Seen] = deque(maxlen=KEEP)
        self._claimed = False
        # while a message is dispatched: the ``instance`` of the reply bundle it is (None: a
        # reply that came alone), so a request knows how each of its replies came
        self.bundle: str | None = None

    def expect(self, ident: str, handler: ReplyHandler) -> None:
        """As :meth:`Inbox.expect`, noting that the message was claimed."""

        def claimed(reply: Reply | BatchReply) -> None:
            self._claimed = True
            handler(reply)

        super().expect(ident, claimed)

    def dispatch(self, data: str | bytes) -> None:
        """As :meth:`Inbox.dispatch`, and remember the message."""
        self._claimed = False
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        obj = decoded(text)
        self.bundle = None
        if obj is not None and "replies" in obj:
            self.bundle = str(obj.get("instance"))
        try:
            super().dispatch(data)
        finally:
            self.bundle = None
        self.seen.append(Seen(time.monotonic(), text, self._claimed))

    def unclaimed_since(self, since: float) -> list[str]:
        """Messages after ``since`` (monotonic) that no request claimed."""
        return [s.text for s in self.seen if s.at >= since and not s.matched]


class Tap:
    """A channel the kit listens on (a peer's control channel, a reply channel nobody else
    reads): every message kept, in order, for checks to wait for."""

    def __init__(self, client: AsyncClient, channel: str) -> None:
        self.client = client
        self.channel = channel
        self.messages: deque[tuple[float, str]] = deque(maxlen=KEEP)
        self._changed = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float) -> bool:
        """Subscribe; False when not subscribed within ``timeout`` seconds."""
        self._task = asyncio.create_task(self._listen(), name=f"tap {self.channel}")
        with contextlib.suppress(TimeoutError):
            await wait_within(self._subscribed.wait(), timeout)
        return self._subscribed.is_set()

    def _state(self, subscribed: bool, exc: BaseException | None) -> None:
        if subscribed:
            self._subscribed.set()
        else:
            self._subscribed.clear()

    async def _listen(self) -> None:
        async for data in subscription(self.client, self.channel, self._state):
            text = data if isinstance(data, str) else bytes(data).decode("utf-8", "replace")
            self.messages.append((time.monotonic(), text))
            self._changed.set()

    def since(self, mark: float) -> list[str]:
        """Messages received after ``mark`` (monotonic)."""
        return [text for at, text in self.messages if at >= mark]

    async def next_match(
        self, predicate: Callable[[dict[str, Any]], bool], since: float, timeout: float
    ) -> dict[str, Any] | None:
        """The first message after ``since`` that is a JSON object ``predicate`` accepts,
        waiting up to ``timeout`` seconds; None when none comes."""
        deadline = time.monotonic() + timeout
        while True:
            self._changed.clear()
            for text in self.since(since):
                obj = decoded(text)
                if obj is not None and predicate(obj):
                    return obj
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await wait_within(self._changed.wait(), remaining)

    async def aclose(self) -> None:
        """Stop listening."""
        if self._task is not None:
            await settle(self._task)
            self._task = None


class Pending:
    """One request in flight: the replies carrying its id as they arrive, and the messages
    nobody claimed that reached the inbox meanwhile (a reply that lost its id)."""

    def __init__(self, inbox: RecordingInbox, request: Envelope | Batch) -> None:
        self.inbox = inbox
        self.request = request
        self.replies: list[Reply | BatchReply] = []
        # per reply: when it came (monotonic) and the instance of the bundle it came in
        # (None: alone)
        self.arrivals: list[tuple[float, str | None]] = []
        self.since = time.monotonic()  # just before the request is published
        self._changed = asyncio.Event()
        inbox.expect(request.id, self._on_reply)

    def _on_reply(self, reply: Reply | BatchReply) -> None:
        self.replies.append(reply)
        self.arrivals.append((time.monotonic(), self.inbox.bundle))
        self._changed.set()

    async def wait(self, count: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until ``count`` replies came; True if they did."""
        deadline = time.monotonic() + timeout
        while len(self.replies) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await wait_within(self._changed.wait(), remaining)
        return True

    @property
    def reply(self) -> Reply | None:
        """The first v1 reply, None when none came."""
        for reply in self.replies:
            if isinstance(reply, Reply):
                return reply
        return None

    @property
    def batch_replies(self) -> list[BatchReply]:
        """The v2 (batch) replies."""
        return [r for r in self.replies if isinstance(r, BatchReply)]

    def unclaimed(self) -> list[str]:
        """Messages no request claimed since this one was sent."""
        return self.inbox.unclaimed_since(self.since)

    def close(self) -> None:
        """Stop collecting replies (later ones are dropped by the inbox)."""
        self.inbox.forget(self.request.id)


class FleetSide:
    """The kit's handle on the deployment's Redis: the registry, the control channels, its
    peer instance, and the list of what to clean up."""

    def __init__(
        self, client: AsyncClient, keys: Keyspace, prefix: str, fleet_timeout: float
    ) -> None:
        self.client = client
        self.keys = keys
        self.prefix = prefix
        self.fleet_timeout = fleet_timeout
        self.store = RegistryStore(client, keys)
        self.inbox = RecordingInbox(client, keys, name=prefix.rstrip("-"))
        self.peer = f"{prefix}peer"  # listens, says protocol 2: receives forwards and kicks
        self.deaf = f"{prefix}deaf"  # nobody listens for it, it has no record
        self.peer_tap = Tap(client, keys.control_channel(self.peer))
        self.robot_ids: set[str] = set()
        self._taps: list[Tap] = [self.peer_tap]
        self._refresher: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self, timeout: float) -> None:
        """Subscribe the inbox and the peer's channel, write the peer's liveness record
        (kept fresh in the background). Raises TimeoutError or a Redis error."""
        self.inbox.start()
        await self.inbox.ensure_ready(timeout)
        if not await self.peer_tap.start(timeout):
            raise TimeoutError(f"could not subscribe to {self.peer_tap.channel}")
        await self._write_peer_record()
        self._refresher = asyncio.create_task(self._refresh_peer(), name="peer record")

    async def _write_peer_record(self) -> None:
        now = format_ts(utcnow())
        record = InstanceRecord(
            instance_id=self.peer,
            host="wsctl-conformance",
            pid=os.getpid(),
            started_at=now,
            last_seen=now,
            version="wsctl conformance",
            protocol=BATCH_VERSION,
        )
        await write_record(self.client, self.keys, record, ttl=self.fleet_timeout)

    async def _refresh_peer(self) -> None:
        every = max(1.0, self.fleet_timeout / 3)
        while True:
            await asyncio.sleep(every)
            try:
                await self._write_peer_record()
            except RedisError as exc:  # Redis frozen on purpose, or failing: next time
                log.debug("peer record not refreshed: %s", exc)

    async def tap(self, name: str, timeout: float) -> Tap:
        """Listen on a reply channel of the run's own (``{reply_prefix}{prefix}{name}``)."""
        tap = Tap(self.client, self.keys.reply_channel(f"{self.prefix}{name}"))
        self._taps.append(tap)
        if not await tap.start(timeout):
            raise TimeoutError(f"could not subscribe to {tap.channel}")
        return tap

    async def aclose(self) -> None:
        """Stop listening everywhere (the inbox, the taps, the peer record's refresher)."""
        if self._refresher is not None:
            await settle(self._refresher)
        for tap in self._taps:
            await tap.aclose()
        await self.inbox.aclose()

    # ------------------------------------------------------------------ robots, entries
    def robot(self, name: str) -> str:
        """The run's robot id for ``name`` (remembered for the clean-up)."""
        robot_id = f"{self.prefix}{name}"
        self.robot_ids.add(robot_id)
        return robot_id

    async def fields(self, robot_id: str) -> dict[str, str]:
        """The robot's entry as stored (empty: none, or a key that is not a hash)."""
        key = self.keys.conn_key(robot_id)
        if await self.client.type(key) != "hash":
            return {}
        found: dict[str, str] = await self.client.hgetall(key)  # type: ignore[assignment]
        return found

    async def wait_fields(
        self, robot_id: str, predicate: Callable[[dict[str, str]], bool], timeout: float
    ) -> tuple[bool, dict[str, str]]:
        """Read the robot's entry until ``predicate`` holds (True) or ``timeout`` passes
        (False); also returns the last entry read."""
        deadline = time.monotonic() + timeout
        while True:
            got = await self.fields(robot_id)
            if predicate(got):
                return True, got
            if time.monotonic() >= deadline:
                return False, got
            await asyncio.sleep(POLL)

    async def register_elsewhere(
        self, robot_id: str, instance_id: str, conn_id: str
    ) -> tuple[str, str] | None:
        """Register a session of ``robot_id`` on another instance, as that instance would
        (``REGISTER``, §4); returns the previous ``(instance_id, conn_id)``."""
        mapping = Registration(robot_id, instance_id, conn_id, utcnow()).to_hash()
        return await self.store.register(robot_id, mapping)

    async def delete_entry(self, robot_id: str) -> None:
        """Remove the robot's entry (one of the run's own: as a flushed Redis would)."""
        await self.client.delete(self.keys.conn_key(robot_id))

    async def events(self, robot_id: str) -> list[dict[str, str]]:
        """The robot's event stream (``{robot_events_prefix}{robot_id}``), oldest first."""
        raw: list[tuple[str, dict[str, str]]] = await self.client.xrange(  # type: ignore[assignment]
            self.keys.robot_events_key(robot_id), count=1000
        )
        return [dict(fields) for _, fields in raw or []]

    async def events_ttl(self, robot_id: str) -> int:
        """The TTL in seconds of the robot's event stream (-1 none, -2 no stream)."""
        return int(await self.client.ttl(self.keys.robot_events_key(robot_id)))

    async def indexed_writer(self, instance_id: str) -> bool:
        """Is the instance's event stream in the index of writer streams?"""
        found = await self.client.sismember(
            self.keys.events_index, self.keys.events_key(instance_id)
        )
        return bool(found)

    # ------------------------------------------------------------------ instances
    async def record(self, instance_id: str) -> tuple[dict[str, str], int]:
        """The instance's liveness record as stored, and its PTTL in milliseconds (-2: no
        record, -1: no TTL)."""
        key = self.keys.instance_key(instance_id)
        if await self.client.type(key) != "hash":
            return {}, int(await self.client.pttl(key))
        found: dict[str, str] = await self.client.hgetall(key)  # type: ignore[assignment]
        return found, int(await self.client.pttl(key))

    async def listening(self, instance_id: str) -> bool:
        """Is anyone subscribed to the instance's control channel?"""
        return await self.store.is_listening(instance_id)

    async def post(self, channel: str, text: str) -> int:
        """PUBLISH one message as is; the receivers counted."""
        return await publish(self.client, channel, text)

    async def post_many(self, messages: list[tuple[str, str]]) -> None:
        """PUBLISH many messages in one pipeline, in order."""
        await self.store.publish_many(messages)

    async def send_requests(
        self, instance_id: str, requests: list[Envelope | Batch], timeout: float
    ) -> list[Pending]:
        """Publish ``requests`` (their reply channel: the kit's inbox) on the instance's
        control channel, in order, in one pipeline; the replies carrying each one's id are
        collected by its :class:`Pending` (close it when done). Raises
        :class:`~wsctl.protocol.rpc.Unreachable` when nobody listens there."""
        await self.inbox.ensure_ready(timeout)
        channel = self.keys.control_channel(instance_id)
        pendings = [Pending(self.inbox, replace(r, reply_to=self.inbox.channel)) for r in requests]
        try:
            if len(pendings) == 1:
                text = ascii_json(pendings[0].request)
                heard = await self.inbox.publish_heard(channel, text)
            else:
                heard = await self.listening(instance_id)
                if heard:
                    published = time.monotonic()  # the clock starts at the publish
                    for pending in pendings:
                        pending.since = published
                    await self.post_many([(channel, ascii_json(p.request)) for p in pendings])
            if not heard:
                raise Unreachable(instance_id)
        except BaseException:
            for pending in pendings:
                pending.close()
            raise
        return pendings

    async def ask(
        self,
        instance_id: str,
        request: Envelope | Batch,
        timeout: float,
        *,
        quiet: float = 0.0,
    ) -> Pending:
        """Send one request and wait up to ``timeout`` seconds for its reply, then ``quiet``
        seconds more for any that should not come; the returned :class:`Pending` is closed."""
        (pending,) = await self.send_requests(instance_id, [request], timeout)
        try:
            await pending.wait(1, timeout)
            if quiet > 0:
                await asyncio.sleep(quiet)
        finally:
            pending.close()
        return pending

    # ------------------------------------------------------------------ clean-up
    def owned_keys(self) -> list[str]:
        """Every key the run made or made the gateway write: its robots' entries and event
        streams, and the peer's liveness record."""
        keys = [self.keys.instance_key(self.peer)]
        for robot_id in sorted(self.robot_ids):
            keys.append(self.keys.conn_key(robot_id))
            keys.append(self.keys.robot_events_key(robot_id))
        return keys

    async def wait_released(
        self, robot_ids: list[str], instance_id: str | None, timeout: float
    ) -> None:
        """Wait (at most ``timeout`` seconds) until no entry of ``robot_ids`` names
        ``instance_id`` (any instance when None): what the gateway does when their sockets
        close."""
        deadline = time.monotonic() + timeout
        ids = sorted(set(robot_ids))
        while ids and time.monotonic() < deadline:
            owners = await self.store.sessions(ids)
            ids = [
                r
                for r, (owner, _) in zip(ids, owners, strict=True)
                if owner is not None and (instance_id is None or owner == instance_id)
            ]
            if ids:
                await asyncio.sleep(POLL * 5)

    async def remove_owned(self) -> tuple[int, list[str]]:
        """DEL every key of :meth:`owned_keys`; returns how many existed and which are
        still there after."""
        keys = self.owned_keys()
        removed = 0
        for start in range(0, len(keys), 500):
            pipe = self.client.pipeline(transaction=False)
            for key in keys[start : start + 500]:
                pipe.delete(key)
            removed += sum(int(n) for n in await pipe.execute())
        left: list[str] = []
        for start in range(0, len(keys), 500):
            pipe = self.client.pipeline(transaction=False)
            chunk = keys[start : start + 500]
            for key in chunk:
                pipe.exists(key)
            left += [k for k, n in zip(chunk, await pipe.execute(), strict=True) if n]
        return removed, left
