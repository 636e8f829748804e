"""The reads behind ``wsctl top``: one refresh costs O(instances + new events), never
O(robots).

A refresh asks every node once which control channels have a listener (``PUBSUB CHANNELS``:
the live instances, found and judged in one call per node), reads Redis' clock (``TIME``),
the liveness records of the instances known (one pipelined ``HGETALL`` each) and the events
written since the last refresh (:func:`wsctl.ops.events.follow_events`, one pipelined
``XRANGE`` per writer stream). The registry summary comes from :class:`RegistryScanner`,
stepped separately at a bounded pace. A refresh that fails (Redis frozen, down) keeps the last
data and says how old it is; the next one tries again.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, tzinfo
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError, RedisClusterException, RedisError, TimeoutError

from wsctl.eventlog.model import StoredEvent
from wsctl.ops.deployment import Deployment
from wsctl.ops.events import EventFilter, follow_events, read_events
from wsctl.ops.top import (
    RateTracker,
    RedisState,
    Snapshot,
    alerts,
    instance_rows,
    record_skew,
    registry_summary,
)
from wsctl.ops.top_scan import RegistryScanner
from wsctl.redis.errors import describe_error
from wsctl.redis.target import Target
from wsctl.registry.instances import InstanceRecord
from wsctl.registry.keys import Keyspace, escape_glob
from wsctl.registry.model import utcnow

__all__ = ["REDIS_ERRORS", "Collector", "redis_problem"]

# What a refresh survives (and shows as an alert): Redis failing, not wsctl.
REDIS_ERRORS = (RedisError, RedisClusterException, OSError)


def redis_problem(target: Target, exc: BaseException, request_timeout: float) -> str:
    """One line for the screen: a timeout says Redis is not answering within the request
    timeout; anything else as every command says it (password scrubbed, no probes)."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return (
            f"Redis at {target.describe()} is not answering (no reply within the request "
            f"timeout, {request_timeout:g}s)"
        )
    return describe_error(target, exc, probe=False).message


class Collector:
    """The state ``top`` keeps between refreshes (records, rates, events, the last error)
    and the reads of one refresh, on ``client`` (its :attr:`store` is made on it, for the
    registry reads and the operations ``top`` offers). ``describe`` turns a Redis error into
    one line."""

    def __init__(
        self,
        client: Any,
        keys: Keyspace,
        *,
        timeout: float,
        describe: Callable[[BaseException], str],
        naive_tz: tzinfo | None = None,
        events: int = 200,
        scan_count: int = 1000,
    ) -> None:
        self.client = client
        self.keys = keys
        self.store = Deployment(client, keys, naive_tz=naive_tz, scan_count=scan_count)
        self.timeout = timeout
        self.describe = describe
        self.scanner = RegistryScanner(self.store, client, timeout, scan_count)
        self.tracker = RateTracker()
        self.records: dict[str, InstanceRecord] = {}
        self.listening: set[str] = set()
        self.listening_complete = False
        self.skews: dict[str, float] = {}
        self.events: deque[StoredEvent] = deque(maxlen=max(1, events))
        self.error: str | None = None
        self.data_at: datetime | None = None
        self.clock_offset: float | None = None
        self.unreachable: set[str] = set()
        self._redis_then: datetime | None = None
        self._follow: AsyncIterator[list[StoredEvent]] | None = None
        self._events_read = False
        self._events_from = time.time()

    # ------------------------------------------------------------------ one refresh
    async def refresh(self) -> Snapshot:
        """Read what changed and return the snapshot to show; a Redis failure is kept as
        :attr:`error` (the snapshot's alert), the last data stays."""
        try:
            await self._read()
        except asyncio.CancelledError:
            raise
        except REDIS_ERRORS as exc:
            self.error = self.describe(exc)
        else:
            self.error = None
            self.data_at = utcnow()
        return self.snapshot(utcnow())

    async def _read(self) -> None:
        await self._read_listeners()
        seconds, micros = await self.client.time()
        redis_now = datetime.fromtimestamp(int(seconds) + int(micros) / 1e6, UTC)
        self.clock_offset = (utcnow() - redis_now).total_seconds()
        await self._read_records(redis_now)
        self._redis_then = redis_now
        await self._read_events()

    async def _read_listeners(self) -> None:
        """Which instances listen on their control channel: ``PUBSUB CHANNELS prefix*`` on
        every node (a cluster node lists only its own subscribers)."""
        prefix = self.keys.control_prefix
        pattern = escape_glob(prefix) + "*"
        client = self.client
        found: set[str] = set()
        complete = True
        self.unreachable = set(self.scanner.unreachable)
        if isinstance(client, RedisCluster):
            nodes = list(client.get_nodes())
            replies = await asyncio.gather(
                *(
                    client.execute_command("PUBSUB CHANNELS", pattern, target_nodes=node)
                    for node in nodes
                ),
                return_exceptions=True,
            )
            for node, reply in zip(nodes, replies, strict=True):
                if isinstance(reply, ConnectionError | TimeoutError | OSError):
                    complete = False  # a listener there is not seen: not "not listening"
                    if node.server_type == "primary":
                        self.unreachable.add(node.name)
                    continue
                if isinstance(reply, BaseException):
                    raise reply
                found.update(_names(reply, prefix))
        else:
            found.update(_names(await client.execute_command("PUBSUB CHANNELS", pattern), prefix))
        self.listening, self.listening_complete = found, complete

    def _known(self) -> set[str]:
        """Instances to read the record of: listening, with a record last time, or seen by
        the registry scan (in entries or as a record)."""
        names = set(self.listening) | set(self.records)
        scanner = self.scanner
        for one in (scanner.done, scanner.current):
            if one is not None:
                names.update(one.records)
        if scanner.done is not None:
            names.update(n for n in scanner.done.tallies if n)
        return names

    async def _read_records(self, redis_now: datetime) -> None:
        names = sorted(self._known())
        records: dict[str, InstanceRecord] = {}
        if names:
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(self.keys.instance_key(name))
            replies = await pipe.execute(raise_on_error=False)
            for name, reply in zip(names, replies, strict=True):
                if isinstance(reply, BaseException):  # a node that failed: keep what we had
                    if name in self.records:
                        records[name] = self.records[name]
                    continue
                if isinstance(reply, dict) and reply:
                    records[name] = InstanceRecord.from_hash(name, reply)
        for name, record in records.items():
            before = self.records.get(name)
            skew = record_skew(before, record, self._redis_then, redis_now)
            if skew is not None:
                self.skews[name] = skew
            elif before is None or before.last_seen != record.last_seen:
                self.skews.pop(name, None)  # a new write within the window: in step now
            self.tracker.observe(record)
        self.records = records
        shown = set(records) | set(self.listening)
        if self.scanner.done is not None:
            shown.update(self.scanner.done.tallies)
        self.tracker.forget(shown)
        for name in [n for n in self.skews if n not in records]:
            del self.skews[name]

    async def _read_events(self) -> None:
        """The newest events at first, then what was written since the last refresh."""
        if not self._events_read:
            started = time.time()
            newest = await read_events(self.client, self.keys, EventFilter(), self.events.maxlen)
            self.events.extend(newest)
            self._events_read, self._events_from = True, started
        if self._follow is None:
            self._follow = follow_events(
                self.client,
                self.keys,
                EventFilter(),
                after=list(self.events),
                poll=0.0,
                start=self._events_from,
            )
        started = time.time()
        follow, batch = self._follow, None
        try:
            batch = await anext(follow)
        finally:
            if batch is None:  # a failed read ends the generator: start again next time
                self._follow = None
                await follow.aclose()  # type: ignore[attr-defined]
        self._events_from = started
        self.events.extend(batch)

    # ------------------------------------------------------------------ the picture
    def snapshot(self, now: datetime) -> Snapshot:
        """What to show at ``now`` from the data held (pure past the reads)."""
        scanner = self.scanner
        done = scanner.done
        tallies = done.tallies if done is not None else {}
        conn_ids = done.with_conn_id if done is not None else {}
        listening = self.listening if self.listening_complete else None
        if listening is None:
            # partial: those seen listening do; the others are not known
            rows = instance_rows(
                self.records, None, self.tracker, tallies, conn_ids, self.skews, now, self.timeout
            )
            for row in rows:
                if row.instance_id in self.listening:
                    row.listening = True
        else:
            rows = instance_rows(
                self.records,
                listening,
                self.tracker,
                tallies,
                conn_ids,
                self.skews,
                now,
                self.timeout,
            )
        registry = registry_summary(
            done, scanner.current, self.records, listening, now, self.timeout
        )
        redis = RedisState(
            ok=self.error is None,
            error=self.error,
            data_at=self.data_at,
            clock_offset_s=self.clock_offset,
            unreachable_nodes=tuple(sorted(self.unreachable)),
        )
        return Snapshot(
            at=now,
            redis=redis,
            instances=rows,
            registry=registry,
            events=[e.as_row() for e in self.events],
            alerts=alerts(redis, rows, registry, scanner.stale_trend, now),
        )

    async def close(self) -> None:
        """Stop following the event log."""
        if self._follow is not None:
            follow, self._follow = self._follow, None
            await follow.aclose()  # type: ignore[attr-defined]


def _names(reply: Any, prefix: str) -> set[str]:
    """Instance ids of the channel names a ``PUBSUB CHANNELS`` reply lists."""
    out = set()
    for raw in reply or ():
        name = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else str(raw)
        if name.startswith(prefix):
            out.add(name[len(prefix) :])
    return out
