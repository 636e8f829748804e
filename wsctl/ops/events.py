"""Reading the fleet event log (``wsctl events``, ``wsctl history``, the tail of ``show`` and
``doctor``) and the CLI's own events (``reaped``, ``removed``, ``set``, ``imported``).

Writers' streams are found in the index set (no SCAN). Reads are XREVRANGE/XRANGE pages with
COUNT, pipelined over streams (a cluster pipeline sends each to its node), each bounded by the
client's socket timeout. Entries are parsed tolerantly (:func:`wsctl.eventlog.model.parse_entry`):
a malformed one is listed with ``problem`` set, never a crash. Results merge by event time.
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from wsctl.durations import AGE_MAX_S, check_seconds
from wsctl.errors import UsageError
from wsctl.eventlog.index import prune_index
from wsctl.eventlog.model import (
    Event,
    EventLimits,
    EventName,
    StoredEvent,
    event_commands,
    parse_entry,
)
from wsctl.redis.internals import bulk_execute
from wsctl.redis.target import AsyncClient
from wsctl.registry.keys import CLI_WRITER, Keyspace
from wsctl.tasks import wait_within

__all__ = [
    "EventFilter",
    "EventRecorder",
    "IndexPrune",
    "RecordOutcome",
    "follow_events",
    "import_summary_events",
    "imported_events",
    "parse_since",
    "prune_writer_index",
    "read_events",
    "reap_summary_events",
    "reaped_events",
    "record_events",
    "removed_events",
    "robot_history",
    "set_event",
]

PAGE = 2000  # entries per XREVRANGE/XRANGE call
MAX_PAGES_PER_STREAM = 200  # 400k entries: a bound on any one read of one stream
FOLLOW_POLL = 0.5  # seconds between polls of --follow
FOLLOW_REDISCOVER = 1.0  # seconds between re-reads of the writer index (new instances)
_GLOB_CHARS = frozenset("*?[")
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``2h``, ``7d`` -> seconds. UsageError otherwise."""
    match = _SINCE.match(text)
    if not match:
        raise UsageError(f"--since {text!r}: use a number with s, m, h or d (for example 10m)")
    try:  # an age, like every age flag: from 1 ms up to ten years
        return check_seconds(float(match.group(1)) * _UNIT[match.group(2)], maximum=AGE_MAX_S)
    except ValueError as exc:
        raise UsageError(f"--since {text!r}: {exc}") from None


@dataclass(frozen=True)
class EventFilter:
    """Which events a listing keeps: robot id glob, instance, event names (empty: all),
    and how many seconds back."""

    robot_glob: str | None = None
    instance: str | None = None
    events: frozenset[str] = frozenset()
    since_s: float | None = None  # only events of the last N seconds

    @property
    def exact_robot(self) -> str | None:
        """The robot id when the glob names exactly one robot (its own stream is read)."""
        glob = self.robot_glob
        if glob is None or any(ch in _GLOB_CHARS for ch in glob):
            return None
        return glob

    def keep(self, event: StoredEvent) -> bool:
        """Whether ``event`` passes the robot, instance and event-name filters (the time
        window is applied when the streams are read)."""
        if self.robot_glob is not None and not fnmatch.fnmatchcase(event.robot_id, self.robot_glob):
            return False
        if self.instance is not None and event.instance_id != self.instance:
            return False
        return not self.events or event.event in self.events

    def min_id(self, now: float) -> str:
        """The stream id bound of ``since_s`` (``-`` without it)."""
        if self.since_s is None:
            return "-"
        return f"{max(0, int((now - self.since_s) * 1000))}-0"


async def writer_streams(client: AsyncClient, keys: Keyspace) -> list[str]:
    """Every writer's stream key (from the index set), sorted."""
    members: Any = await client.smembers(keys.events_index)
    return sorted(str(m) for m in members if str(m).startswith(keys.events_prefix))


def _streams_for(flt: EventFilter, keys: Keyspace, all_writers: list[str]) -> list[str]:
    if flt.instance is not None:
        # the instance's own stream, plus the CLI's (its events name the entry's instance)
        return [keys.events_key(flt.instance), keys.events_key(CLI_WRITER)]
    return all_writers


async def _newest(
    client: AsyncClient,
    streams: list[tuple[str, str]],  # (label, key)
    flt: EventFilter,
    limit: int | None,
    now: float,
) -> tuple[list[StoredEvent], int]:
    """Up to ``limit`` newest kept events per stream (None: all, bounded by the page cap),
    reading pages backwards from the newest, all streams' pages in one pipeline per round."""
    low = flt.min_id(now)
    kept: dict[str, list[StoredEvent]] = {label: [] for label, _ in streams}
    cursor = {label: "+" for label, _ in streams}
    active = list(streams)
    scanned = 0
    for _ in range(MAX_PAGES_PER_STREAM):
        if not active:
            break
        pipe = client.pipeline(transaction=False)
        for label, key in active:
            pipe.xrevrange(key, cursor[label], low, count=PAGE)
        pages = await pipe.execute(raise_on_error=False)
        still = []
        for (label, key), page in zip(active, pages, strict=True):
            if isinstance(page, Exception) or not page:
                continue  # a key of another type, or an empty/exhausted stream
            scanned += len(page)
            for stream_id, fields in page:
                event = parse_entry(label, str(stream_id), fields)
                if flt.keep(event):
                    kept[label].append(event)
            cursor[label] = f"({page[-1][0]}"
            full = limit is not None and len(kept[label]) >= limit
            if len(page) == PAGE and not full:
                still.append((label, key))
        active = still
    merged = [e for events in kept.values() for e in events]
    return merged, scanned


async def read_events(
    client: AsyncClient, keys: Keyspace, flt: EventFilter, limit: int | None = 1000
) -> list[StoredEvent]:
    """The newest ``limit`` events matching ``flt`` across every stream, oldest first."""
    now = time.time()
    robot = flt.exact_robot
    if robot is not None:
        streams = [(robot, keys.robot_events_key(robot))]
    else:
        found = _streams_for(flt, keys, await writer_streams(client, keys))
        streams = [(keys.writer_of(k), k) for k in found]
    events, _ = await _newest(client, streams, flt, limit, now)
    events.sort(key=lambda e: e.key)
    return events[-limit:] if limit else events


async def robot_history(
    client: AsyncClient, keys: Keyspace, robot_id: str, limit: int | None = None
) -> list[StoredEvent]:
    """One robot's events, oldest first: one read of its own stream (capped by MAXLEN ~)."""
    flt = EventFilter(robot_glob=None)
    events, _ = await _newest(client, [(robot_id, keys.robot_events_key(robot_id))], flt, limit, 0)
    # a robot stream's entries all name the robot; anything else there is reported as such
    events = [
        e if e.robot_id == robot_id or e.problem else _with_problem(e, "entry names another robot")
        for e in events
    ]
    events.sort(key=lambda e: e.key)
    return events[-limit:] if limit else events


def _with_problem(event: StoredEvent, problem: str) -> StoredEvent:
    return replace(event, problem=problem)


async def follow_events(
    client: AsyncClient,
    keys: Keyspace,
    flt: EventFilter,
    *,
    after: Iterable[StoredEvent] = (),
    poll: float = FOLLOW_POLL,
    duration: float | None = None,
    start: float | None = None,
) -> AsyncIterator[list[StoredEvent]]:
    """New events as they arrive, one merged batch per poll. Starts after the newest of
    ``after`` per stream (else at ``start``, epoch seconds, default now: pass the time taken
    before the listing that ``after`` came from, so nothing falls between the two). Ends after
    ``duration`` seconds (None: until the caller
    stops iterating, e.g. on Ctrl-C); each poll is one pipelined read, bounded by the socket
    timeout, so the loop never hangs on a stalled Redis for longer than that."""
    started = time.time()
    start_id = f"{int((start if start is not None else started) * 1000)}-0"
    last: dict[str, str] = {}
    for event in after:
        if event.stream not in last or _id_key(event.id) > _id_key(last[event.stream]):
            last[event.stream] = event.id
    robot = flt.exact_robot
    streams: list[tuple[str, str]] = []
    next_discovery = 0.0
    while duration is None or time.time() - started < duration:
        if robot is not None:
            streams = [(robot, keys.robot_events_key(robot))]
        elif time.monotonic() >= next_discovery:
            found = _streams_for(flt, keys, await writer_streams(client, keys))
            streams = [(keys.writer_of(k), k) for k in found]
            next_discovery = time.monotonic() + FOLLOW_REDISCOVER
        batch: list[StoredEvent] = []
        if streams:
            pipe = client.pipeline(transaction=False)
            for label, key in streams:
                low = last.get(label)
                pipe.xrange(key, f"({low}" if low else start_id, "+", count=PAGE)
            pages = await pipe.execute(raise_on_error=False)
            for (label, _), page in zip(streams, pages, strict=True):
                if isinstance(page, Exception) or not page:
                    continue
                for stream_id, fields in page:
                    event = parse_entry(label, str(stream_id), fields)
                    if flt.keep(event):
                        batch.append(event)
                last[label] = str(page[-1][0])
        batch.sort(key=lambda e: e.key)
        yield batch
        await asyncio.sleep(poll)


def _id_key(stream_id: str) -> tuple[int, int]:
    head, _, tail = stream_id.partition("-")
    try:
        return int(head), int(tail or 0)
    except ValueError:
        return 0, 0


@dataclass
class RecordOutcome:
    """How many events :func:`record_events` (or an :class:`EventRecorder`) wrote, how many
    it could not, and why."""

    written: int = 0
    lost: int = 0  # not recorded: refused by Redis, or not sent after a failure
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class EventRecorder:
    """The CLI's events, streamed: :meth:`add` buffers them and every ``chunk`` events one
    pipelined write goes out in the background (at most one in flight), so a bulk command
    records an event for every robot it touched, in memory bounded by two chunks, while it goes
    on with its own work. Each write is bounded by ``timeout``. After the first failure nothing
    more is sent (on a stalled Redis every attempt would wait for the timeout): the rest is
    counted as lost. Never raises for a Redis failure: the registry changes it records already
    happened, so the caller reports lost events as a warning."""

    def __init__(
        self,
        client: AsyncClient,
        keys: Keyspace,
        limits: EventLimits | None = None,
        *,
        chunk: int = 2000,
        timeout: float = 10.0,
    ) -> None:
        self.client = client
        self.keys = keys
        self.limits = limits or EventLimits()
        self.chunk = max(1, chunk)
        self.timeout = timeout
        self.outcome = RecordOutcome()
        self._buffer: list[Event] = []
        self._inflight: asyncio.Task[None] | None = None

    async def add(self, events: Iterable[Event]) -> None:
        """Queue ``events``; a full chunk is sent (after the previous one has been answered)."""
        for event in events:
            self._buffer.append(event)
            if len(self._buffer) >= self.chunk:
                await self._send()

    async def _send(self) -> None:
        part, self._buffer = self._buffer, []
        if self._inflight is not None:
            await self._inflight
            self._inflight = None
        if self.outcome.error is not None:
            self.outcome.lost += len(part)
            return
        self._inflight = asyncio.create_task(self._write(part))

    async def _write(self, part: list[Event]) -> None:
        try:
            calls, starts = event_commands(self.keys, CLI_WRITER, part, self.limits)
            results = await wait_within(bulk_execute(self.client, calls), self.timeout)
        except asyncio.CancelledError:
            self.outcome.lost += len(part)
            raise
        except Exception as exc:  # recording is best effort: the command it records stands
            self.outcome.lost += len(part)
            self.outcome.error = f"{type(exc).__name__}: {exc}"[:200]
            return
        refused = [results[i] for i in starts if isinstance(results[i], Exception)]
        self.outcome.written += len(part) - len(refused)
        self.outcome.lost += len(refused)
        if refused:
            self.outcome.error = f"Redis refused {len(refused)}: {refused[0]}"[:200]

    async def close(self) -> RecordOutcome:
        """Send what is buffered, wait for it, list the CLI's stream in the writer index (after
        its XADDs: see :mod:`wsctl.eventlog.index`); returns the outcome."""
        if self._buffer:
            await self._send()
        if self._inflight is not None:
            await self._inflight
            self._inflight = None
        if self.outcome.written:
            try:
                await wait_within(
                    self.client.sadd(self.keys.events_index, self.keys.events_key(CLI_WRITER)),
                    self.timeout,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the events are written; the next write lists them
                self.outcome.error = self.outcome.error or f"{type(exc).__name__}: {exc}"[:200]
        return self.outcome

    def abort(self) -> None:
        """Drop what is buffered and cancel the write in flight (counted as lost)."""
        self.outcome.lost += len(self._buffer)
        self._buffer = []
        if self._inflight is not None:
            self._inflight.cancel()
            self._inflight = None


async def record_events(
    client: AsyncClient,
    keys: Keyspace,
    events: Iterable[Event],
    limits: EventLimits | None = None,
    *,
    timeout: float = 10.0,
    chunk: int = 2000,
) -> RecordOutcome:
    """Append the CLI's events to its own stream (and each robot's), pipelined in chunks
    (an :class:`EventRecorder` fed at once). Never raises for a Redis failure."""
    recorder = EventRecorder(client, keys, limits, chunk=chunk, timeout=timeout)
    try:
        await recorder.add(events)
        return await recorder.close()
    except asyncio.CancelledError:
        recorder.abort()
        raise


# ---------------------------------------------------------------------------- the CLI's events
def reaped_events(reaped: Iterable[tuple[Any, str, str]], backup: str | None) -> list[Event]:
    """``reaped`` per robot a reap pass removed: ``(entry, reason, detail)`` as one batch of
    :func:`wsctl.ops.reap.reap` hands them over, with the backup file they are in."""
    return [
        Event(
            EventName.REAPED,
            robot_id=str(entry.robot_id or ""),
            instance_id=str(entry.instance_id or ""),
            detail={"reason": reason, "detail": detail, "backup": backup},
        )
        for entry, reason, detail in reaped
    ]


def reap_summary_events(report: Any, robot_events: int) -> list[Event]:
    """The one summary event (no robot) of a reap pass that removed something (a
    :class:`wsctl.ops.reap.ReapReport`): the counts, the backup path, and how many of the
    robots got their own ``reaped`` event (``robot_events``)."""
    if not report.reaped:
        return []
    return [
        Event(
            EventName.REAPED,
            detail={
                "reaped": report.reaped,
                "by_reason": dict(report.by_reason),
                "backup": report.backup,
                "robot_events": robot_events,
            },
        )
    ]


def removed_events(rows: list[dict[str, Any]], owners: dict[str, str], backup: Any) -> list[Event]:
    """``removed`` per robot ``registry rm`` deleted."""
    return [
        Event(
            EventName.REMOVED,
            robot_id=str(row["robot_id"]),
            instance_id=owners.get(str(row["robot_id"]), ""),
            detail={"backup": str(backup) if backup else None},
        )
        for row in rows
        if row.get("result") == "removed"
    ]


def set_event(robot_id: str, instance_id: str, fields: dict[str, str], created: bool) -> Event:
    """``set``: ``registry set`` wrote these fields (values as given)."""
    return Event(
        EventName.SET,
        robot_id=robot_id,
        instance_id=instance_id,
        detail={"fields": fields, "created": created},
    )


def imported_events(
    robot_ids: Iterable[str], source: str, *, overwrite: bool, restore: bool
) -> list[Event]:
    """``imported`` per robot written by ``registry import``/``restore`` (one batch of them)."""
    detail = {"file": source, "overwrite": overwrite, "restore": restore}
    return [Event(EventName.IMPORTED, robot_id=r, detail=detail) for r in robot_ids]


def import_summary_events(
    written: int, source: str, *, overwrite: bool, restore: bool, robot_events: int
) -> list[Event]:
    """The one summary event (no robot) of an import that wrote something: how many robots,
    and how many of them got their own ``imported`` event (``robot_events``)."""
    if not written:
        return []
    detail = {
        "file": source,
        "overwrite": overwrite,
        "restore": restore,
        "written": written,
        "robot_events": robot_events,
    }
    return [Event(EventName.IMPORTED, detail=detail)]


@dataclass(frozen=True)
class IndexPrune:
    """What a prune of the writer index did: how many gone writers' names it removed, or
    (``error``, the exception's type) why it could not."""

    pruned: int = 0
    error: str | None = None


async def prune_writer_index(client: AsyncClient, keys: Keyspace) -> IndexPrune:
    """Remove gone writers' stream names from the event log's index (after a reap pass).
    Never raises for a failure, which the outcome names: the reap it follows still stands, and
    the next pass prunes the index."""
    try:
        outcome = await prune_index(client, keys)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the index is housekeeping: the next pass prunes it
        return IndexPrune(error=type(exc).__name__)
    return IndexPrune(outcome.pruned)
