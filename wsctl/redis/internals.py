"""Everything in wsctl that goes below redis-py's public API, in one module (house rule 5).

- :func:`bulk_execute`: the bulk fast path. Single-key commands are packed by wsctl
  (:func:`pack_commands`), written as one raw pipeline per node on a pooled connection, and their
  replies parsed straight from the connection's stream with a hiredis reader, skipping
  redis-py's per-command pipeline machinery (a third of bulk-read time).
- :class:`PublishLanes`: PUBLISH written to a dedicated connection per node without an
  await, its replies read in order by one task per connection (a fleet core's batches, and
  the outbox's hand-over from inside the app's own ``publish`` calls).
- :func:`start_on_a_live_node`: lets a cluster client start when the first primary of its slot
  map is down.

Internals used: ``Connection._reader`` / ``._writer`` / ``.encoder`` / ``send_packed_command`` /
``read_response``, ``ConnectionPool.get_connection``, ``ClusterNode.acquire_connection`` /
``release``, ``RedisCluster.commands_parser`` / ``nodes_manager``, and
``redis._parsers.base.BaseParser.parse_error``. Tested against the lowest and the newest
supported redis-py.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    ConnectionError,
    MovedError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from wsctl.protocol.envelopes import EnvelopeTooLarge, oversize
from wsctl.redis.target import AsyncClient

__all__ = [
    "LANE_BYTES",
    "LAST_CHANNELS",
    "BulkPathCounts",
    "LaneClosed",
    "LaneTimeout",
    "PublishLanes",
    "bulk_execute",
    "bulk_path_counts",
    "pack_commands",
    "start_on_a_live_node",
]

log = logging.getLogger("wsctl.redis")


def start_on_a_live_node(cluster: RedisCluster) -> None:
    """redis-py reads COMMAND from the first primary of the slot map at start-up and fails when
    that primary is down, even with ``require_full_coverage=False``. Let it fall back to the
    next primaries, and make the one that answered the default node (slots of a dead primary
    stay uncovered and are reported; the rest of the cluster stays usable)."""
    parser: Any = cluster.commands_parser
    original = parser.initialize

    async def initialize(node: Any = None) -> None:
        primaries = cluster.nodes_manager.get_nodes_by_server_type("primary")
        candidates = [node, *(n for n in primaries if n is not node)] if node else primaries
        last: BaseException | None = None
        for candidate in candidates:
            try:
                await original(candidate)
            except (ConnectionError, RedisTimeoutError, OSError) as exc:
                last = exc
                continue
            cluster.nodes_manager.default_node = candidate
            return
        if last is not None:
            raise last
        await original(node)

    parser.initialize = initialize


# ------------------------------------------------------------------ bulk single-key commands


def _bulk_string(word: str) -> bytes:
    data = word.encode("utf-8", "surrogateescape")
    return b"$%d\r\n%s\r\n" % (len(data), data)


def pack_commands(commands: Iterable[Sequence[str]], fixed: int = 1) -> list[bytes]:
    """RESP encoding of commands whose arguments are all text (the bulk hot path).

    The first ``fixed`` words are the same in every command (a name, a script SHA, "1"):
    they are encoded once, into one byte template per command length that the remaining
    arguments are formatted into with a single ``%``.
    """
    templates: dict[int, bytes] = {}
    packed: list[bytes] = []
    for args in commands:
        count = len(args)
        template = templates.get(count)
        if template is None:
            head = b"*%d\r\n" % count + b"".join(map(_bulk_string, args[:fixed]))
            template = templates[count] = head.replace(b"%", b"%%") + b"$%d\r\n%s\r\n" * (
                count - fixed
            )
        if count == fixed + 1:  # one-key commands (HGETALL, TYPE): the commonest case
            data = args[fixed].encode("utf-8", "surrogateescape")
            packed.append(template % (len(data), data))
            continue
        values: list[int | bytes] = []
        for arg in args[fixed:]:
            data = arg.encode("utf-8", "surrogateescape")
            values.append(len(data))
            values.append(data)
        packed.append(template % tuple(values))
    return packed


def _reply_error(message: str) -> Exception:
    """An error reply as the redis-py exception it would have raised (NOSCRIPT, MOVED, ...)."""
    return BaseParser.parse_error(message)  # type: ignore[no-any-return, no-untyped-call]


@dataclass
class BulkPathCounts:
    """How many bulk batches were read by the fast reader and how many by redis-py's (the
    fallback). Tests assert on it; the fallback is also logged once per reason at debug."""

    fast: int = 0
    fallback: int = 0


bulk_path_counts = BulkPathCounts()
_logged_fallbacks: set[str] = set()


def _why_not_fast(conn: Any) -> str | None:
    """Why the fast reader cannot read replies on ``conn`` (None when it can).

    It needs redis-py's plain asyncio stream, decoded responses, and RESP2: under RESP3 the
    server may send push frames (invalidations, maintenance notifications) between replies,
    and counting them as replies would shift every reply after them.
    """
    if not isinstance(getattr(conn, "_reader", None), asyncio.StreamReader):
        return "the connection has no asyncio stream (redis-py internals changed?)"
    encoder = getattr(conn, "encoder", None)
    if encoder is None or not getattr(encoder, "decode_responses", False):
        return "the connection does not decode responses"
    protocol = getattr(conn, "protocol", None)
    if str(protocol) != "2":
        return f"the connection speaks RESP{protocol}, where push frames may arrive"
    return None


def _address(conn: Any) -> str:
    """``host:port`` (or the socket path) of a connection, for messages."""
    path = getattr(conn, "path", None)
    if path:
        return str(path)
    return f"{getattr(conn, 'host', '?')}:{getattr(conn, 'port', '?')}"


def _note_fallback(reason: str) -> None:
    bulk_path_counts.fallback += 1
    if reason not in _logged_fallbacks:
        _logged_fallbacks.add(reason)
        log.debug("bulk fast path not taken (%s): using redis-py's reader", reason)


def _reply_reader(conn: Any) -> hiredis.Reader:
    """A hiredis reader decoding replies as ``conn`` would, errors as redis-py's exceptions."""
    encoder = conn.encoder
    return hiredis.Reader(
        replyError=_reply_error, encoding=encoder.encoding, errors=encoder.encoding_errors
    )


async def _read_replies(conn: Any, count: int) -> list[Any]:
    """Read ``count`` replies straight from the connection's stream with a hiredis reader
    (one parse call per reply, no per-reply coroutine). Each wait for data is bounded by the
    connection's ``socket_timeout``, as redis-py bounds its own reads."""
    stream: asyncio.StreamReader = conn._reader
    timeout: float | None = conn.socket_timeout
    reader = _reply_reader(conn)
    gets = reader.gets
    loop = asyncio.get_running_loop()
    replies: list[Any] = []
    try:
        async with asyncio.timeout(None) as deadline:
            while len(replies) < count:
                reply = gets()
                if reply is False:
                    if timeout:
                        deadline.reschedule(loop.time() + timeout)
                    data = await stream.read(1 << 16)
                    if not data:
                        raise ConnectionError("connection closed while reading replies")
                    reader.feed(data)
                    continue
                replies.append(reply)
    except TimeoutError:  # the builtin, raised by asyncio.timeout
        raise RedisTimeoutError(f"Timeout reading from {_address(conn)}") from None
    return replies


async def _run_packed(conn: Any, packed: list[bytes]) -> list[Any]:
    """Send many commands on one connection, read every reply; per-command Redis errors are
    returned as exception objects (the stream stays in sync), anything else disconnects."""
    try:
        await conn.send_packed_command(b"".join(packed), check_health=False)
        why_not = _why_not_fast(conn)
        if why_not is None:
            bulk_path_counts.fast += 1
            return await _read_replies(conn, len(packed))
        _note_fallback(why_not)
        results: list[Any] = []
        for _ in packed:
            try:
                results.append(await conn.read_response())
            except ResponseError as exc:
                results.append(exc)
        return results
    except BaseException:
        await conn.disconnect()
        raise


async def bulk_execute(
    client: AsyncClient, calls: Sequence[tuple[str, Sequence[str]]], fixed: int = 1
) -> list[Any]:
    """Run single-key commands, given as ``(key, command words)``, as one raw pipeline per
    node, skipping redis-py's per-command pipeline machinery (a third of bulk-read time).

    Replies come back in order, untransformed (HGETALL is a flat list); a per-command Redis
    error is returned as the exception. On a cluster, commands are grouped by the node serving
    their key's slot; a MOVED/ASK reply (resharding, failover) is retried through the regular
    client, which follows redirects and refreshes its slot map. The first ``fixed`` words are
    the same in every command (encoded once).
    """
    if not calls:
        return []
    commands = [words for _, words in calls]
    if not isinstance(client, RedisCluster):
        assert isinstance(client, Redis)
        pool = client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            return await _run_packed(conn, pack_commands(commands, fixed))
        finally:
            await pool.release(conn)

    groups: dict[str, tuple[Any, list[int]]] = {}
    for index, (key, _) in enumerate(calls):
        node = client.nodes_manager.get_node_from_slot(client.keyslot(key))
        groups.setdefault(node.name, (node, []))[1].append(index)

    async def on_node(node: Any, indices: list[int]) -> list[Any]:
        conn = node.acquire_connection()
        try:
            return await _run_packed(conn, pack_commands([commands[i] for i in indices], fixed))
        finally:
            node.release(conn)

    results: list[Any] = [None] * len(commands)
    replies = await asyncio.gather(*(on_node(node, idx) for node, idx in groups.values()))
    for (_, indices), node_replies in zip(groups.values(), replies, strict=True):
        for index, reply in zip(indices, node_replies, strict=True):
            results[index] = reply
    for index, reply in enumerate(results):
        if isinstance(reply, MovedError | AskError | TryAgainError):
            try:
                results[index] = await client.execute_command(*commands[index])
            except Exception as exc:  # the per-command contract: errors as values
                results[index] = exc
    return results


# ------------------------------------------------------------------ publish lanes

# The most bytes a lane lets wait for their replies (written, not yet answered) before it takes
# no more: the caller then goes the awaited way (back-pressure: a stalled Redis holds at most
# this much per node).
LANE_BYTES = 8 << 20
# Channels whose node a cluster's lanes remember before they forget those no lane waits for.
LAST_CHANNELS = 4096
# Seconds between two attempts to open a node's lane after one failed.
LANE_RETRY = 1.0
# Bytes read from a lane's stream at a time.
_LANE_READ = 1 << 16


class LaneClosed(ConnectionError):
    """The lanes were closed (the instance stops) before Redis answered: what was written may
    have been published."""


class LaneTimeout(RedisTimeoutError):
    """No reply within the client's ``socket_timeout`` (a stalled Redis): what was written may
    still be published (a frozen Redis runs what it had read once it resumes)."""


@dataclass(eq=False)
class _Written:
    """What one :meth:`PublishLanes.publish` wrote on one lane, waiting for its replies."""

    indices: list[int]  # positions in the caller's messages
    size: int  # bytes written
    results: list[int | BaseException]  # the caller's, filled in at those positions
    outer: asyncio.Future[list[int | BaseException]]
    lanes: list[int]  # lanes of the call still unanswered (a one-element counter)


class _Lane:
    """One dedicated connection to one node: commands are written the moment they come, and
    one task reads their replies, in order."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.pending: collections.deque[_Written] = collections.deque()
        self.size = 0
        self.dead = False
        # publish calls written on it, and those answered or failed since (in that order)
        self.written = 0
        self.answered = 0
        self.task: asyncio.Task[None] | None = None
        # the reader's deadline for the next reply (None while nothing waits: the reader then
        # still reads, to see the server close the connection at once)
        self.deadline: asyncio.Timeout | None = None
        self.timeout: float | None = conn.socket_timeout


class PublishLanes:
    """PUBLISH written without an await, in order, on one connection per node.

    The outbox (:mod:`wsctl.gateway.outbox`) hands messages to Redis from inside the caller's
    ``publish``: while an app's code submits thousands of messages in one go, nothing else runs
    on the event loop, so a flush that has to wait its turn would leave them all queued until
    the last one is submitted. A lane writes the PUBLISH commands to its connection's buffer at
    once (the event loop sends them as soon as it gets back) and its task reads the replies in
    the order they were written: commands on one connection are run by Redis in that order, so
    what was written first is published first.

    The fleet core keeps one set (``FleetCore.lanes``) for every PUBLISH it makes: through
    :func:`~wsctl.redis.pubsub.publish_many` its batches' forwards and replies go on the
    lanes when they take them, awaited, without taking a connection from the client's pool or
    building a pipeline (what a steady stream of small batches spent most on).

    On a cluster each message goes to the primary that owns its channel's hash slot, as
    :func:`~wsctl.redis.pubsub.publish_many` does, on that node's lane. A lane is opened on
    first need, in the background (the call that needed it is told to go the awaited way);
    one that failed is tried again after :data:`LANE_RETRY` seconds (:meth:`prepare` asks for
    every lane known to be needed). A lane whose replies do not come within the client's
    ``socket_timeout`` (a stalled Redis: :class:`LaneTimeout`), or whose connection fails or is
    closed by the server (seen at once, idle or not: a read is always pending), fails every
    message waiting on it and is dropped. A channel whose node changed
    while its previous message still waits for its reply is not written to (its order would not
    hold) until those replies came.
    """

    def __init__(self, client: AsyncClient) -> None:
        self._cluster = client if isinstance(client, RedisCluster) else None
        self._single = client if isinstance(client, Redis) else None
        self._lanes: dict[str, _Lane] = {}  # node name ("" on a single node) -> open lane
        self._opening: dict[str, asyncio.Task[None]] = {}
        self._failed_at: dict[str, float] = {}
        # on a cluster, channel -> the node its last message went to, that node's lane and
        # the number of that write on it (forgotten once answered: see _forget)
        self._last: dict[str, tuple[str, _Lane, int]] = {}
        self._last_bound = LAST_CHANNELS
        self.closed = False

    @property
    def cluster(self) -> bool:
        """Is it a cluster's (a PUBLISH nobody heard on its home node may have been heard
        elsewhere, see :class:`~wsctl.redis.pubsub.Audience`)?"""
        return self._cluster is not None

    def prepare(self) -> None:
        """Start opening the lanes known to be needed: the server's, or every primary's."""
        if self._cluster is None:
            self._ready("")
            return
        for node in self._cluster.get_primaries():
            self._ready(str(node.name))

    # ------------------------------------------------------------------ writing
    def publish(
        self, messages: list[tuple[str, str]]
    ) -> asyncio.Future[list[int | BaseException]] | None:
        """Write every PUBLISH of ``messages`` now, each on its channel's lane, and return the
        future of their results (receiver counts, or the error of each one that failed, in
        order); None when any lane is not open yet, full (:data:`LANE_BYTES`), or its channel
        just moved to another node: then nothing was written and the caller publishes the
        awaited way. Raises :class:`~wsctl.protocol.envelopes.EnvelopeTooLarge`, writing none
        of them, when any message is over the bound (as
        :func:`~wsctl.redis.pubsub.publish_many` does)."""
        for _, message in messages:
            problem = oversize(message)
            if problem is not None:
                raise EnvelopeTooLarge(problem)
        if self.closed or not messages:
            return None
        if self._cluster is not None:
            self._forget()
        groups: dict[str, list[int]] = {}
        for index, (channel, _) in enumerate(messages):
            name = self._node_of(channel)
            if name is None or not self._may_write(channel, name):
                return None
            groups.setdefault(name, []).append(index)
        lanes: list[tuple[_Lane, list[int]]] = []
        for name, indices in groups.items():
            lane = self._ready(name)
            if lane is None:
                return None
            lanes.append((lane, indices))
        loop = asyncio.get_running_loop()
        outer: asyncio.Future[list[int | BaseException]] = loop.create_future()
        results: list[int | BaseException] = [0] * len(messages)
        counter = [len(lanes)]
        packed_all: list[tuple[_Lane, list[int], list[bytes], int]] = []
        for lane, indices in lanes:
            packed = pack_commands((("PUBLISH", *messages[i]) for i in indices), 1)
            size = sum(map(len, packed))
            if lane.pending and lane.size + size > LANE_BYTES:
                return None
            packed_all.append((lane, indices, packed, size))
        for lane, indices, packed, size in packed_all:
            lane.written += 1
            lane.conn._writer.writelines(packed)
            if not lane.pending and lane.deadline is not None and lane.timeout:
                # the reader waits for data without a deadline while nothing is pending
                lane.deadline.reschedule(loop.time() + lane.timeout)
            lane.pending.append(_Written(indices, size, results, outer, counter))
            lane.size += size
        if self._cluster is not None:
            last = self._last
            for (lane, _), (name, indices) in zip(lanes, groups.items(), strict=True):
                for i in indices:
                    last[messages[i][0]] = (name, lane, lane.written)
        return outer

    def _forget(self) -> None:
        """Past :data:`LAST_CHANNELS` channels noted (every requester's reply channel passes
        here), forget those whose last write was answered (they may go anywhere), at most once
        per doubling of what is kept: linear in all."""
        if len(self._last) > self._last_bound:
            self._last = {
                channel: entry
                for channel, entry in self._last.items()
                if entry[1].answered < entry[2]
            }
            self._last_bound = max(LAST_CHANNELS, 2 * len(self._last))

    def _node_of(self, channel: str) -> str | None:
        """The name of the node ``channel``'s messages go to ("" on a single node), or None
        when the slot map has none for it now (a failover: the awaited way finds out)."""
        if self._cluster is None:
            return ""
        try:
            node = self._cluster.get_node_from_key(channel)
        except (RedisError, RedisClusterException):  # SlotNotCoveredError: no primary known
            return None
        return None if node is None else str(node.name)

    def _may_write(self, channel: str, name: str) -> bool:
        """False when ``channel``'s previous message went to a node other than ``name`` (the
        one it goes to now) and is not answered yet (writing now could overtake it)."""
        last = self._last.get(channel)
        if last is None or last[0] == name:
            return True
        lane, number = last[1], last[2]
        return lane.answered >= number

    def _ready(self, name: str) -> _Lane | None:
        """The open lane to node ``name``, or None (then it is being opened, unless it failed
        less than :data:`LANE_RETRY` seconds ago)."""
        lane = self._lanes.get(name)
        if lane is not None and not lane.dead:
            if not lane.conn._writer.transport.is_closing() and not lane.conn._reader.at_eof():
                return lane
            self._fail(name, lane, ConnectionError("connection closed by the server"))
        if name not in self._opening:
            now = time.monotonic()
            if now - self._failed_at.get(name, -LANE_RETRY) >= LANE_RETRY:
                self._failed_at[name] = now
                # a context of its own: the call that needed the lane may be an app's request
                task = asyncio.create_task(
                    self._open(name),
                    name=f"publish lane {name or 'redis'}",
                    context=contextvars.Context(),
                )
                self._opening[name] = task
        return None

    @property
    def busy(self) -> bool:
        """Does any lane still wait for replies?"""
        return any(lane.pending for lane in self._lanes.values())

    # ------------------------------------------------------------------ opening, reading
    async def _open(self, name: str) -> None:
        try:
            conn = self._new_connection(name)
            if conn is None:
                return
            await conn.connect()
            if _why_not_fast(conn) is not None or self.closed:
                await conn.disconnect()
                return
            lane = _Lane(conn)
            lane.task = asyncio.create_task(self._read(name, lane), name="publish lane reader")
            self._lanes[name] = lane
            self._failed_at.pop(name, None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # retried on a later need, LANE_RETRY apart
            log.debug("publish lane to %s not opened: %r", name or "redis", exc)
        finally:
            self._opening.pop(name, None)

    def _new_connection(self, name: str) -> Any:
        """A connection of its own, made like the client's (credentials, TLS, timeouts)."""
        if self._single is not None:
            pool = self._single.connection_pool
            return pool.connection_class(**pool.connection_kwargs)
        if self._cluster is None or not name:
            return None
        node = self._cluster.get_node(node_name=name)
        if node is None:
            return None
        return node.connection_class(**node.connection_kwargs)

    async def _read(self, name: str, lane: _Lane) -> None:
        conn = lane.conn
        stream: asyncio.StreamReader = conn._reader
        timeout = lane.timeout
        reader = _reply_reader(conn)
        gets = reader.gets
        loop = asyncio.get_running_loop()
        got: list[Any] = []
        try:
            async with asyncio.timeout(None) as deadline:
                lane.deadline = deadline
                while True:
                    reply = gets()
                    if reply is False:
                        # always a read pending, so a server that closes an idle lane (its
                        # client timeout, a restart) is seen at once, not by the next write;
                        # bounded by socket_timeout while replies are awaited
                        due = loop.time() + timeout if lane.pending and timeout else None
                        deadline.reschedule(due)
                        data = await stream.read(_LANE_READ)
                        if not data:
                            raise ConnectionError("connection closed by the server")
                        reader.feed(data)
                        continue
                    if not lane.pending:
                        raise ConnectionError("a reply nobody waited for")
                    got.append(reply)
                    head = lane.pending[0]
                    if len(got) == len(head.indices):
                        lane.pending.popleft()
                        lane.answered += 1
                        lane.size -= head.size
                        for index, value in zip(head.indices, got, strict=True):
                            head.results[index] = (
                                value if isinstance(value, BaseException) else int(value)
                            )
                        got = []
                        _answered(head)
        except asyncio.CancelledError:
            self._fail(name, lane, LaneClosed("the publish lanes were closed"))
            raise
        except TimeoutError:  # the builtin, from asyncio.timeout: no reply in time
            self._fail(name, lane, LaneTimeout(f"Timeout reading from {_address(conn)}"))
        except Exception as exc:  # the connection failed: every waiting message fails
            self._fail(name, lane, exc)
        finally:
            with contextlib.suppress(Exception):  # aborted already: only redis-py's state left
                await conn.disconnect(nowait=True)

    def _fail(self, name: str, lane: _Lane, exc: BaseException) -> None:
        """Drop ``lane``: every message waiting on it fails with ``exc``."""
        lane.dead = True
        if self._lanes.get(name) is lane:
            del self._lanes[name]
            self._failed_at[name] = time.monotonic()
        while lane.pending:
            written = lane.pending.popleft()
            lane.answered += 1
            for index in written.indices:
                written.results[index] = exc
            _answered(written)
        lane.size = 0
        if lane.task is not None and lane.task is not asyncio.current_task():
            lane.task.cancel()
        with contextlib.suppress(Exception):  # the transport goes; nothing left to read
            lane.conn._writer.transport.abort()

    async def aclose(self) -> None:
        """Close every lane: messages still waiting fail with :class:`LaneClosed`."""
        self.closed = True
        for task in list(self._opening.values()):
            task.cancel()
        for name, lane in list(self._lanes.items()):
            self._fail(name, lane, LaneClosed("the publish lanes were closed"))
            with contextlib.suppress(Exception):  # aborted already: only redis-py's state left
                await lane.conn.disconnect()
        tasks = [*self._opening.values()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _answered(written: _Written) -> None:
    """One lane's part of a publish came back: the call's future ends with its last part."""
    written.lanes[0] -= 1
    if written.lanes[0] <= 0 and not written.outer.done():
        written.outer.set_result(written.results)
