"""Everything in wsctl that goes below redis-py's public API, in one module (house rule 5).

- :func:`bulk_execute`: the bulk fast path. Single-key commands are packed by wsctl
  (:func:`pack_commands`), written as one raw pipeline per node on a pooled connection, and their
  replies parsed straight from the connection's stream with a hiredis reader, skipping
  redis-py's per-command pipeline machinery (a third of bulk-read time).
- :func:`start_on_a_live_node`: lets a cluster client start when the first primary of its slot
  map is down.

Internals used: ``Connection._reader`` / ``.encoder`` / ``send_packed_command`` /
``read_response``, ``ConnectionPool.get_connection``, ``ClusterNode.acquire_connection`` /
``release``, ``RedisCluster.commands_parser`` / ``nodes_manager``, and
``redis._parsers.base.BaseParser.parse_error``. Tested against the lowest and the newest
supported redis-py.
"""

from __future__ import annotations

import asyncio
import logging
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
    ResponseError,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from wsctl.redis.target import AsyncClient

__all__ = [
    "BulkPathCounts",
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


async def _read_replies(conn: Any, count: int) -> list[Any]:
    """Read ``count`` replies straight from the connection's stream with a hiredis reader
    (one parse call per reply, no per-reply coroutine). Each wait for data is bounded by the
    connection's ``socket_timeout``, as redis-py bounds its own reads."""
    stream: asyncio.StreamReader = conn._reader
    encoder = conn.encoder
    timeout: float | None = conn.socket_timeout
    reader = hiredis.Reader(
        replyError=_reply_error, encoding=encoder.encoding, errors=encoder.encoding_errors
    )
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
