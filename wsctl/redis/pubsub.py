"""Classic pub/sub: subscriptions that survive node failures, subscriber counts summed over a
cluster, and many PUBLISHes in one pipeline.

Every PUBLISH of wsctl goes through :func:`publish` or :func:`publish_many`, which refuse a
text larger than :data:`wsctl.protocol.envelopes.MAX_PUBLISH_BYTES` before anything is sent: a message
that large could make Redis close the subscriber's connection (its pub/sub output-buffer
limit), and the subscriber loses whatever else was in flight to it. :func:`subscription` says
when its subscription was lost, including the times redis-py re-subscribed on its own."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError, TimeoutError

from wsctl.protocol.envelopes import EnvelopeTooLarge, oversize
from wsctl.redis.target import AsyncClient
from wsctl.redis.topology import refresh_topology

__all__ = [
    "HEARD_TTL",
    "RESUBSCRIBE_MAX_DELAY",
    "Audience",
    "SubscriptionLost",
    "make_pubsub",
    "publish",
    "publish_many",
    "subscribe",
    "subscriber_count",
    "subscription",
]


# The longest wait between two attempts to subscribe again: a restarted Redis is listened to
# again within about this long (an attempt against a server that is down costs little).
RESUBSCRIBE_MAX_DELAY = 0.5


async def subscriber_count(client: AsyncClient, channel: str) -> int:
    """Subscribers of ``channel`` summed over every node (a cluster node only counts its own)."""
    if isinstance(client, RedisCluster):
        # every node at once (a gateway asks this on its message path, once a second)
        replies = await asyncio.gather(
            *(
                client.execute_command("PUBSUB NUMSUB", channel, target_nodes=node)
                for node in client.get_nodes()
            ),
            return_exceptions=True,
        )
        total = 0
        for reply in replies:
            if isinstance(reply, ConnectionError | TimeoutError | OSError):
                continue  # a dead node has no subscribers; the others still count
            if isinstance(reply, BaseException):
                raise reply
            total += _numsub_value(reply)
        return total
    reply = await client.execute_command("PUBSUB NUMSUB", channel)  # type: ignore[no-untyped-call]
    return _numsub_value(reply)


# How long a cluster-wide "someone listens on this channel" is believed without asking again.
HEARD_TTL = 1.0


class Audience:
    """Did a PUBLISH reach anyone? From the receiver count PUBLISH returned, at no cost on a
    single node (it counts every subscriber) and in the usual case on a cluster (wsctl
    publishes on the channel's home primary, where subscribers made by :func:`make_pubsub`
    listen). A cluster count of 0 may hide a subscriber on another node (one whose home node
    failed: it still gets the message, through the cluster bus), so it is checked with
    :func:`subscriber_count` over every node, and a positive answer is believed for
    :data:`HEARD_TTL` seconds per channel (not a question per message). A negative answer is
    never cached: the next PUBLISH asks again."""

    def __init__(self, ttl: float = HEARD_TTL) -> None:
        self.ttl = ttl
        self._heard: dict[str, float] = {}  # channel -> when a cluster-wide count was > 0

    async def heard(self, client: AsyncClient, channel: str, receivers: int) -> bool:
        """True when a PUBLISH on ``channel`` that counted ``receivers`` reached someone."""
        if receivers > 0:
            return True
        if not isinstance(client, RedisCluster):
            return False
        now = time.monotonic()
        seen = self._heard.get(channel)
        if seen is not None and now - seen < self.ttl:
            return True
        if await subscriber_count(client, channel) > 0:
            self._heard[channel] = now
            return True
        self._heard.pop(channel, None)
        return False


def _numsub_value(reply: Any) -> int:
    """Sum the counts of a PUBSUB NUMSUB reply: ``[(channel, n)]``, a flat list, or per node."""
    if isinstance(reply, dict):  # cluster replies may come keyed by node
        return sum(_numsub_value(v) for v in reply.values())
    if not isinstance(reply, list | tuple) or not reply:
        return 0
    if isinstance(reply[0], list | tuple):
        return sum(int(pair[1]) for pair in reply)
    return sum(int(count) for count in reply[1::2])


def _check_size(message: str) -> None:
    problem = oversize(message)
    if problem is not None:
        raise EnvelopeTooLarge(problem)


async def publish(client: AsyncClient, channel: str, message: str) -> int:
    """PUBLISH one message; on a cluster, on the primary that owns the channel's hash slot (see
    :func:`publish_many`). Returns the receivers that node counted (subscribers there).
    Raises :class:`EnvelopeTooLarge`, publishing nothing, for a message over the bound."""
    _check_size(message)
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(channel)
        return int(await client.execute_command("PUBLISH", channel, message, target_nodes=node))
    return int(await client.publish(channel, message))


async def publish_many(client: AsyncClient, messages: list[tuple[str, str]]) -> list[int]:
    """PUBLISH many (channel, message) pairs in one non-transactional pipeline; returns each
    PUBLISH's receiver count (on a cluster, the subscribers of the node it ran on only).

    Through ``execute_command``: redis-py's cluster pipeline blocks its ``publish`` method. A
    classic PUBLISH on any cluster node reaches every subscriber (the cluster bus broadcasts
    it), but the bus adds latency (tens of ms per hop under steady load: it is not written
    with the urgency of a client reply). So on a cluster each message is published on the
    primary that owns its channel's hash slot, where subscribers made by :func:`make_pubsub`
    for that channel listen: no bus hop on the way to them. Commands for one channel go to one
    node on one connection and keep their order.

    Raises :class:`EnvelopeTooLarge`, publishing none of them, when any message is over the
    bound (callers split or refuse first).
    """
    for _, message in messages:
        _check_size(message)
    pipe = client.pipeline(transaction=False)
    if isinstance(client, RedisCluster):
        for channel, message in messages:
            node = client.get_node_from_key(channel)
            pipe.execute_command("PUBLISH", channel, message, target_nodes=node)
    else:
        for channel, message in messages:
            pipe.execute_command("PUBLISH", channel, message)
    return [int(n) for n in await pipe.execute()]


def make_pubsub(
    client: AsyncClient, avoid: frozenset[str] = frozenset(), channel: str | None = None
) -> Any:
    """A PubSub for classic SUBSCRIBE.

    On a cluster it is tied to one primary: the one owning ``channel``'s hash slot, where
    :func:`publish_many` publishes (no cluster-bus hop), unless it is in ``avoid`` (nodes that
    just failed for this subscriber); then one at random among the others: a classic PUBLISH
    on any node reaches subscribers on every node, so any live primary will do. Callers that lose the connection
    call :func:`refresh_topology` and make a new one, avoiding the node that failed.
    Returns ``(pubsub, node_name)``.
    """
    if not isinstance(client, RedisCluster):
        return client.pubsub(), ""
    home = client.get_node_from_key(channel) if channel is not None else None
    if home is not None and home.name not in avoid:
        return client.pubsub(node=home), home.name
    primaries = client.get_primaries()
    choices = [n for n in primaries if n.name not in avoid] or primaries
    node = random.choice(choices)
    return client.pubsub(node=node), node.name


async def _subscribe_avoiding(
    client: AsyncClient, channel: str, failed: set[str]
) -> tuple[Any, str]:
    """A PubSub subscribed to ``channel`` on a primary not in ``failed``, and that primary's
    name ("" on a single node). On a failure the PubSub is closed, its node is added to
    ``failed`` and the error raised."""
    pubsub, node = make_pubsub(client, frozenset(failed), channel)
    try:
        await pubsub.subscribe(channel)
    except asyncio.CancelledError:
        await _close(pubsub)
        raise
    except Exception:  # any failure to subscribe there: avoid that node next time
        if node:
            failed.add(node)
        await _close(pubsub)
        raise
    return pubsub, node


async def _close(pubsub: Any) -> None:
    # closing a PubSub whose connection already failed raises that failure again: it is the
    # error being handled (or about to be), not a new one
    with contextlib.suppress(Exception):
        await pubsub.aclose()


async def subscribe(client: AsyncClient, channel: str, attempts: int = 3) -> Any:
    """A PubSub subscribed to ``channel`` for a short exchange (a request's reply channel),
    trying another cluster primary when one is down; the caller closes it. Raises the last
    connection error after ``attempts`` (at once on a single node, which has no other)."""
    failed: set[str] = set()
    for attempt in range(attempts):
        try:
            pubsub, _ = await _subscribe_avoiding(client, channel, failed)
            return pubsub
        except (ConnectionError, TimeoutError, OSError):
            if not failed or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


class SubscriptionLost(Exception):
    """The connection a subscription listened on was closed (by Redis for its pub/sub output
    buffer, by ``CLIENT KILL``, by the network) and redis-py subscribed again on a new one:
    whatever was published in between never arrived."""


class _Reconnects:
    """Counts the connects of a PubSub's connection after it subscribed, which are redis-py
    subscribing again on its own after the connection was lost. A method because redis-py
    keeps connect callbacks as weak methods."""

    def __init__(self) -> None:
        self.count = 0

    def on_connect(self, _connection: Any) -> None:
        self.count += 1


def _watch(pubsub: Any) -> tuple[Any, _Reconnects]:
    """Start counting the reconnects of ``pubsub``'s connection: (connection, counter)."""
    watch = _Reconnects()
    connection = getattr(pubsub, "connection", None)
    if connection is not None:
        connection.register_connect_callback(watch.on_connect)
    return connection, watch


def _unwatch(connection: Any, watch: _Reconnects) -> None:
    # the connection goes back to its pool: a later reconnect there is none of ours
    if connection is not None:
        connection.deregister_connect_callback(watch.on_connect)


async def subscription(
    client: AsyncClient,
    channel: str,
    on_state: Callable[[bool, BaseException | None], None] | None = None,
) -> AsyncIterator[Any]:
    """Yield the payloads published on ``channel`` for as long as the caller iterates.

    Survives node failures: after any error it waits (0.1 s doubling to
    :data:`RESUBSCRIBE_MAX_DELAY`), and on a cluster
    re-reads the slot map and subscribes on another primary than the one that failed.
    ``on_state(True, None)`` is called once subscribed, ``on_state(False, error)`` on each loss.
    A loss redis-py repairs by itself (it reconnects and subscribes again inside a read, as
    after Redis closed the connection for its output buffer) is reported too: as
    ``on_state(False, SubscriptionLost(...))`` then ``on_state(True, None)``.
    """
    failed: set[str] = set()
    delay = 0.1
    while True:
        pubsub: Any = None
        node = ""
        connection: Any = None
        watch = _Reconnects()
        try:
            if failed:
                await refresh_topology(client)
            pubsub, node = await _subscribe_avoiding(client, channel, failed)
            connection, watch = _watch(pubsub)
            failed.clear()
            delay = 0.1
            if on_state is not None:
                on_state(True, None)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if watch.count:
                    watch.count = 0
                    if on_state is not None:
                        on_state(
                            False,
                            SubscriptionLost(
                                "the connection was closed and redis-py subscribed again"
                            ),
                        )
                        on_state(True, None)
                if message and message.get("type") == "message":
                    yield message["data"]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever broke the subscription: subscribe again, later
            if node:
                failed.add(node)  # the primary we listened on: try another one next time
            if on_state is not None:
                on_state(False, exc)
            await asyncio.sleep(delay)
            delay = min(RESUBSCRIBE_MAX_DELAY, delay * 2)
        finally:
            _unwatch(connection, watch)
            if pubsub is not None:
                await _close(pubsub)
