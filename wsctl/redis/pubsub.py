"""Classic pub/sub: subscriptions that survive node failures, subscriber counts summed over a
cluster, and many PUBLISHes in one pipeline.

Every PUBLISH of wsctl goes through :func:`publish` or :func:`publish_many`, which refuse a
text larger than :data:`wsctl.protocol.envelopes.MAX_PUBLISH_BYTES` before anything is sent: a message
that large could make Redis close the subscriber's connection (its pub/sub output-buffer
limit), and the subscriber loses whatever else was in flight to it. :func:`subscription` says
when its subscription was lost, including the times redis-py re-subscribed on its own, and
notices a node that stopped answering (frozen, or cut off without a reset): a read on a
subscribed connection has no deadline of its own, so a silent subscription asks its node with a
PING (see :class:`Liveness`)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from enum import Enum
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError, RedisError, ResponseError, TimeoutError

from wsctl.config import DEFAULT_SOCKET_TIMEOUT
from wsctl.protocol.envelopes import EnvelopeTooLarge, oversize
from wsctl.redis.internals import LaneClosed, LaneTimeout
from wsctl.redis.target import AsyncClient
from wsctl.redis.topology import refresh_topology
from wsctl.tasks import wait_within

if TYPE_CHECKING:
    from wsctl.redis.internals import PublishLanes

__all__ = [
    "HEARD_TTL",
    "PING_AFTER_SILENCE",
    "RESUBSCRIBE_MAX_DELAY",
    "Audience",
    "Liveness",
    "LivenessStep",
    "PublishUncertain",
    "SubscriptionLost",
    "SubscriptionUnanswered",
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


class PublishUncertain(RedisError):
    """Messages were written to Redis and no answer came (the lane's connection was lost and
    the pool failed too, or the lanes were closed): they may have been published. (An error
    reply is an answer: raised as it is.)"""


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


async def publish_many(
    client: AsyncClient,
    messages: list[tuple[str, str]],
    lanes: PublishLanes | None = None,
) -> list[int]:
    """PUBLISH many (channel, message) pairs; returns each PUBLISH's receiver count (on a
    cluster, the subscribers of the node it ran on only).

    With ``lanes`` (a gateway's :class:`~wsctl.redis.internals.PublishLanes`), on them when
    they take the messages: written at once on a connection of their own per node, without
    redis-py's pool and pipeline (less CPU per forwarded message: see docs/performance.md);
    else, or when a lane is not open, in one non-transactional pipeline. Messages whose lane
    lost its connection go once more through the pipeline, as the client's own retry does for
    a pipeline (a receiver drops a copy, see :class:`~wsctl.gateway.dedup.RecentPayloads`;
    other subscribers, such as a reply inbox, may get both). A lane that timed out (a stalled
    Redis) raises its :class:`~wsctl.redis.internals.LaneTimeout`, and an error reply (Redis
    refused: its ACL) is raised as it is; messages written on a lane whose
    outcome stays unknown (the lanes closed before Redis answered, or the pool failed too)
    raise :class:`PublishUncertain`; a pipeline that failed raises its error. What the other
    messages of the call did is not reported.

    Raises :class:`EnvelopeTooLarge`, publishing none of them, when any message is over the
    bound (callers split or refuse first).
    """
    for _, message in messages:
        _check_size(message)
    written = None if lanes is None else lanes.publish(messages)
    if written is None:
        return await _pipelined(client, messages)
    results = await written
    lost: list[int] = []  # messages whose lane's connection was lost: once more, pooled
    counts: list[int] = []
    for index, result in enumerate(results):
        if isinstance(result, LaneTimeout | ResponseError):  # too slow, or Redis said no
            raise result
        if isinstance(result, LaneClosed):
            raise PublishUncertain(str(result)) from result
        if isinstance(result, BaseException):
            lost.append(index)
            result = 0
        counts.append(result)
    if lost:
        try:
            again = await _pipelined(client, [messages[i] for i in lost])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # written on the lane, then not through the pool either
            raise PublishUncertain(f"{type(exc).__name__}: {exc}") from exc
        for index, count in zip(lost, again, strict=True):
            counts[index] = count
    return counts


async def _pipelined(client: AsyncClient, messages: list[tuple[str, str]]) -> list[int]:
    """PUBLISH ``messages`` in one non-transactional pipeline on a connection of the client's
    pool.

    Through ``execute_command``: redis-py's cluster pipeline blocks its ``publish`` method. A
    classic PUBLISH on any cluster node reaches every subscriber (the cluster bus broadcasts
    it), but the bus adds latency (tens of ms per hop under steady load: it is not written
    with the urgency of a client reply). So on a cluster each message is published on the
    primary that owns its channel's hash slot, where subscribers made by :func:`make_pubsub`
    for that channel listen: no bus hop on the way to them. Commands for one channel go to one
    node on one connection and keep their order.
    """
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


class SubscriptionUnanswered(TimeoutError):
    """The node a subscription listened on did not answer a PING (or confirm the SUBSCRIBE)
    within the bound: it is frozen (SIGSTOP, a paused VM, a long fork) or cut off without a
    reset. A Redis timeout like any command's; the subscription is dropped and made again,
    on a cluster on another primary."""


# How long a subscription may hear nothing before it asks its node whether it is alive (a
# PING on the subscribed connection, answered in order after anything published before it).
# A subscription that receives messages never pings; an idle one pings every 2 s at most
# (two subscriptions per gateway: a negligible load on Redis). A frozen node is noticed
# within this plus the answer bound (the client's socket timeout): 7 s at the default 5 s.
PING_AFTER_SILENCE = 2.0

# The shortest and the longest read between two looks at the subscription's liveness: short
# enough that a PING falls due on time, long enough that a read always happens (a loop
# starved of CPU still reads what arrived before it judges the node silent).
_READ_MIN = 0.05
_READ_MAX = 1.0


class LivenessStep(Enum):
    """What a subscription does next about its node's liveness (:meth:`Liveness.step`)."""

    LISTEN = "listen"  # keep reading: heard lately, or an answer is still awaited in time
    PING = "ping"  # silent for long enough: ask the node
    LOST = "lost"  # asked, and no answer within the bound: the node counts as gone


class Liveness:
    """Is a subscription's node alive? Pure: every decision takes ``now`` (monotonic seconds).

    Anything read on the connection (a message, a subscribe confirmation, a PING's answer)
    shows the node alive. After :attr:`silence` seconds without a read the subscription
    PINGs; when nothing is read within :attr:`answer_within` seconds of a PING the
    subscription is lost. A new subscription starts as if it had just asked: its SUBSCRIBE
    must be confirmed within the same bound, so a subscription on a frozen node is never
    reported as made."""

    def __init__(
        self, now: float, answer_within: float, silence: float = PING_AFTER_SILENCE
    ) -> None:
        self.silence = silence
        self.answer_within = answer_within
        self.heard_at = now
        self.asked_at: float | None = now  # the SUBSCRIBE awaits its confirmation
        self.confirmed = False

    def heard(self, now: float) -> None:
        """Something was read on the connection at ``now``."""
        self.heard_at = now
        self.asked_at = None
        self.confirmed = True

    def asked(self, now: float) -> None:
        """A PING was sent at ``now``."""
        self.asked_at = now

    def step(self, now: float) -> LivenessStep:
        """What to do at ``now`` (after a read that found nothing, or before the next)."""
        if self.asked_at is not None:
            return (
                LivenessStep.LOST
                if now - self.asked_at >= self.answer_within
                else LivenessStep.LISTEN
            )
        return LivenessStep.PING if now - self.heard_at >= self.silence else LivenessStep.LISTEN

    def read_for(self, now: float) -> float:
        """How long the next read may wait for a message: until the next :meth:`step` can
        change, within ``[0.05, 1.0]`` seconds."""
        if self.asked_at is not None:
            due = self.asked_at + self.answer_within
        else:
            due = self.heard_at + self.silence
        return min(_READ_MAX, max(_READ_MIN, due - now))


def _answer_bound(pubsub: Any) -> float:
    """How long the node of ``pubsub`` may take to answer: its connection's socket timeout
    (what every other command against it is allowed), else wsctl's default."""
    connection = getattr(pubsub, "connection", None)
    timeout = getattr(connection, "socket_timeout", None)
    if isinstance(timeout, int | float) and timeout > 0:
        return float(timeout)
    return DEFAULT_SOCKET_TIMEOUT


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
    ``on_state(True, None)`` is called once the SUBSCRIBE is confirmed, ``on_state(False,
    error)`` on each loss. A loss redis-py repairs by itself (it reconnects and subscribes
    again inside a read, as after Redis closed the connection for its output buffer) is
    reported too: as ``on_state(False, SubscriptionLost(...))`` then ``on_state(True, None)``.

    A node that stops answering (frozen: the connection stays open and silent) is noticed by
    :class:`Liveness`: after :data:`PING_AFTER_SILENCE` seconds without a read the
    subscription PINGs, and without an answer within the client's socket timeout it is lost
    (``on_state(False, SubscriptionUnanswered(...))``), its connection dropped without waiting
    on the node, and it is made again (on a cluster, avoiding that node).
    """
    loop = asyncio.get_running_loop()
    failed: set[str] = set()
    delay = 0.1
    while True:
        pubsub: Any = None
        node = ""
        connection: Any = None
        watch = _Reconnects()
        lost: Exception | None = None
        try:
            if failed:
                await refresh_topology(client)
            pubsub, node = await _subscribe_avoiding(client, channel, failed)
            connection, watch = _watch(pubsub)
            bound = _answer_bound(pubsub)
            alive = Liveness(loop.time(), bound)
            while True:
                message = await pubsub.get_message(timeout=alive.read_for(loop.time()))
                now = loop.time()
                if message is not None:
                    if not alive.confirmed:  # the SUBSCRIBE's confirmation comes first
                        failed.clear()
                        delay = 0.1
                        if on_state is not None:
                            on_state(True, None)
                    alive.heard(now)
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
                if message is not None:
                    if message.get("type") == "message":
                        yield message["data"]
                    continue
                step = alive.step(now)
                if step is LivenessStep.LOST:
                    what = "a PING" if alive.confirmed else "the SUBSCRIBE"
                    raise SubscriptionUnanswered(f"no answer to {what} within {bound:g}s")
                if step is LivenessStep.PING:
                    try:
                        await wait_within(pubsub.ping(), bound)
                    except builtins.TimeoutError:
                        raise SubscriptionUnanswered(
                            f"a PING could not be sent within {bound:g}s"
                        ) from None
                    alive.asked(loop.time())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever broke the subscription: subscribe again, later
            lost = exc
            if node:
                failed.add(node)  # the primary we listened on: try another one next time
        finally:
            _unwatch(connection, watch)
            if pubsub is not None:
                await _close(pubsub)  # closes the socket; waits on nothing from the node
        if on_state is not None:
            on_state(False, lost)
        await asyncio.sleep(delay)
        delay = min(RESUBSCRIBE_MAX_DELAY, delay * 2)
