"""Reading the fleet event log (``wsctl events``, ``wsctl history``, the tail of ``show`` and
``doctor``) and the CLI's own events (``reaped``, ``removed``, ``set``, ``imported``).

Writers' streams are found in the index set (no SCAN). Reads are XREVRANGE/XRANGE pages with
COUNT, pipelined over streams (a cluster pipeline sends each to its node), each bounded by the
client's socket timeout. Entries are parsed tolerantly (:func:`wsctl.events.parse_entry`):
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

from wsctl.errors import UsageError
from wsctl.events import (
    Event,
    EventLimits,
    EventName,
    StoredEvent,
    event_commands,
    parse_entry,
)
from wsctl.redis_internals import bulk_execute
from wsctl.redis_target import AsyncClient
from wsctl.registry.keys import CLI_WRITER, Keyspace

__all__ = [
    "EventFilter",
    "follow_events",
    "imported_events",
    "parse_since",
    "read_events",
    "reap_events",
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
    return float(match.group(1)) * _UNIT[match.group(2)]


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
    """How many events :func:`record_events` wrote, and why it stopped when it did not
    write them all."""

    written: int = 0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


async def record_events(
    client: AsyncClient,
    keys: Keyspace,
    events: list[Event],
    limits: EventLimits | None = None,
    *,
    timeout: float = 10.0,
    chunk: int = 2000,
) -> RecordOutcome:
    """Append the CLI's events to its own stream (and each robot's), pipelined in chunks.
    Never raises for a Redis failure: the registry change already happened, so the caller
    reports the lost events as a warning."""
    limits = limits or EventLimits()
    outcome = RecordOutcome()
    try:
        for start in range(0, len(events), chunk):
            part = events[start : start + chunk]
            calls, starts = event_commands(keys, CLI_WRITER, part, limits)
            results = await asyncio.wait_for(bulk_execute(client, calls), timeout)
            refused = [results[i] for i in starts if isinstance(results[i], Exception)]
            outcome.written += len(part) - len(refused)
            if refused:
                outcome.error = f"Redis refused {len(refused)}: {refused[0]}"[:200]
        await asyncio.wait_for(client.sadd(keys.events_index, keys.events_key(CLI_WRITER)), timeout)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # recording is best effort: the command it records still stands
        outcome.error = f"{type(exc).__name__}: {exc}"[:200]
    return outcome


# ---------------------------------------------------------------------------- the CLI's events
MAX_ROBOT_EVENTS_PER_COMMAND = 10_000  # beyond this a bulk command writes its summary event only


def reap_events(report: Any) -> list[Event]:
    """``reaped`` per robot removed by a reap pass (a :class:`wsctl.ops.reap.ReapReport`), plus
    one summary event (no robot) with the counts and the backup path."""
    events = [
        Event(
            EventName.REAPED,
            robot_id=str(item.get("robot_id") or ""),
            instance_id=str(item.get("instance_id") or ""),
            detail={
                "reason": item.get("reason"),
                "detail": item.get("detail"),
                "backup": report.backup,
            },
        )
        for item in report.items[:MAX_ROBOT_EVENTS_PER_COMMAND]
        if item.get("result") == "reaped"
    ]
    if report.reaped:
        events.append(
            Event(
                EventName.REAPED,
                detail={
                    "reaped": report.reaped,
                    "by_reason": dict(report.by_reason),
                    "backup": report.backup,
                },
            )
        )
    return events


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
    robot_ids: list[str], source: str, *, overwrite: bool, restore: bool
) -> list[Event]:
    """``imported`` per robot written by ``registry import``/``restore`` (the first
    :data:`MAX_ROBOT_EVENTS_PER_COMMAND`), plus one summary event with the file."""
    detail = {"file": source, "overwrite": overwrite, "restore": restore}
    events = [
        Event(EventName.IMPORTED, robot_id=r, detail=detail)
        for r in robot_ids[:MAX_ROBOT_EVENTS_PER_COMMAND]
    ]
    if robot_ids:
        events.append(Event(EventName.IMPORTED, detail={**detail, "written": len(robot_ids)}))
    return events
