"""The fleet event log: what an event is, how it is stored in a stream entry, how entries read
back (tolerantly: stream contents are untrusted input). Pure: no I/O.

Every event is one stream entry with the fields ``at`` (aware UTC ISO 8601), ``event``,
``robot_id``, ``instance_id``, ``conn_id`` and ``detail`` (a JSON object, as text). It is
written twice in one pipeline: to its writer's capped stream (one per gateway instance, one for
the CLI: ``wsctl events`` merges these) and to the robot's own small capped stream (``wsctl
history ROBOT`` is one XRANGE of one key). Both XADDs touch one key each, so every write stays
on one cluster node; both streams are capped with ``MAXLEN ~`` and expire when idle.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from wsctl.errors import UsageError
from wsctl.registry.keys import Keyspace

__all__ = [
    "DEFAULT_INSTANCE_MAXLEN",
    "DEFAULT_RETENTION_S",
    "DEFAULT_ROBOT_EVENTS",
    "DEFAULT_ROBOT_MAXLEN",
    "Event",
    "EventLimits",
    "EventName",
    "RobotEventCap",
    "StoredEvent",
    "detail_text",
    "event_commands",
    "index_entry_stale",
    "parse_entry",
    "parse_robot_events",
    "stream_id_ms",
]

# Per writer stream (~ 100k events of one instance) and per robot stream (its last 200).
DEFAULT_INSTANCE_MAXLEN = 100_000
DEFAULT_ROBOT_MAXLEN = 200
# Streams not written for this long expire (a robot or instance that is gone for good).
DEFAULT_RETENTION_S = 7 * 86400
MAX_DETAIL_TEXT = 500  # characters of one free-text detail value kept


class EventName(StrEnum):
    """Every event name; gateways write the first group (through the fleet core), the CLI the
    second."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    SUPERSEDED = "superseded"
    KICKED = "kicked"
    REREGISTERED = "reregistered"
    FORWARD_FAILED = "forward_failed"
    DRAINED = "drained"  # a robot's socket closed with 1012 by a drain
    DRAINING = "draining"  # the instance entered the draining state (robot_id empty)
    UNDRAINED = "undrained"  # the instance accepts robots again (robot_id empty)
    # CLI
    REAPED = "reaped"
    REMOVED = "removed"
    SET = "set"
    IMPORTED = "imported"


@dataclass(frozen=True)
class EventLimits:
    """Caps of the streams (``MAXLEN ~``: Redis trims whole nodes, so a stream holds at least
    this many and a little more) and the idle expiry."""

    instance_maxlen: int = DEFAULT_INSTANCE_MAXLEN
    robot_maxlen: int = DEFAULT_ROBOT_MAXLEN
    retention_s: float = DEFAULT_RETENTION_S


@dataclass(frozen=True, slots=True)
class Event:
    """One event as written."""

    event: str
    robot_id: str = ""
    instance_id: str = ""
    conn_id: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_fields(self) -> dict[str, str]:
        """The event as a field -> value mapping (:meth:`words` paired up)."""
        words = self.words()
        return dict(zip(words[::2], words[1::2], strict=True))

    def words(self) -> list[str]:
        """The stream entry's field/value words, in order (what XADD takes after ``*``)."""
        return [
            "at",
            self.at.astimezone(UTC).isoformat(),
            "event",
            str(self.event),
            "robot_id",
            self.robot_id,
            "instance_id",
            self.instance_id,
            "conn_id",
            self.conn_id,
            "detail",
            _DETAIL.encode(self.detail) if self.detail else "{}",
        ]


_DETAIL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


# Robots of one bulk CLI run (a reap pass, an import, a restore) that get their own event by default;
# the rest are counted in the run's summary event. Each per-robot event costs about 15 us of
# wsctl CPU and 10 us of Redis CPU (two XADDs, an EXPIRE, a new key): for every robot of a big
# reap that is more than the reap itself (bench/registry_bench.py, docs/operate/events.md).
DEFAULT_ROBOT_EVENTS = 1_000

_T = TypeVar("_T")


def parse_robot_events(text: str) -> int | None:
    """``--robot-events``: a count N (the first N robots of a run get their own event), ``all``
    (None: every robot) or ``none`` (0: the summary event only). A UsageError otherwise."""
    word = text.strip().lower()
    if word == "all":
        return None
    if word == "none":
        return 0
    if word.isascii() and word.isdigit() and len(word) <= 12:
        return int(word)
    raise UsageError(f"--robot-events takes a count, 'all' or 'none', not {text!r}")


@dataclass
class RobotEventCap:
    """Which robots of one bulk run get their own event: the first ``limit`` (None: every one,
    0: none); the run's summary event says how many robots there were and how many got one."""

    limit: int | None = DEFAULT_ROBOT_EVENTS
    robots: int = 0  # robots the run touched, so far
    given: int = 0  # of them, robots whose event was queued

    def take(self, items: Sequence[_T]) -> Sequence[_T]:
        """The part of one batch of robots that gets per-robot events (counts the batch)."""
        self.robots += len(items)
        room = len(items) if self.limit is None else max(0, self.limit - self.given)
        part = items[:room]
        self.given += len(part)
        return part

    @property
    def left_out(self) -> int:
        """Robots the cap left without their own event."""
        return self.robots - self.given

    def note(self) -> str | None:
        """One line for stderr when a count cut the run short (None otherwise: ``all``,
        ``none``, or a run within the count)."""
        if not self.limit or not self.left_out:
            return None
        return (
            f"per-robot events recorded for the first {self.given:,} of {self.robots:,} "
            "robots; --robot-events all records every one"
        )


Command = tuple[str, list[str]]  # (key, command words): one single-key command


def event_commands(
    keys: Keyspace, writer: str, events: list[Event], limits: EventLimits
) -> tuple[list[Command], list[int]]:
    """The commands that write ``events``: per event an XADD to the writer's stream and, when
    it names a robot, one to the robot's stream, each capped with MAXLEN ~; then one EXPIRE
    (the idle expiry) per stream written. Every command touches one key. Also returns, per
    event, the index of its first XADD (to tell which events Redis refused)."""
    key = keys.events_key(writer)
    writer_cap, robot_cap = str(limits.instance_maxlen), str(limits.robot_maxlen)
    ttl = str(max(1, int(limits.retention_s)))
    calls: list[Command] = []
    starts: list[int] = []
    robots: dict[str, None] = {}
    for event in events:
        flat = event.words()
        starts.append(len(calls))
        calls.append((key, ["XADD", key, "MAXLEN", "~", writer_cap, "*", *flat]))
        if event.robot_id:
            robot_key = keys.robot_events_key(event.robot_id)
            calls.append((robot_key, ["XADD", robot_key, "MAXLEN", "~", robot_cap, "*", *flat]))
            robots[robot_key] = None
    for stream in (key, *robots):
        calls.append((stream, ["EXPIRE", stream, ttl]))
    return calls, starts


def index_entry_stale(
    newest_id: str | None, ttl_ms: int | None, now: float, retention_s: float
) -> bool:
    """Whether a writer stream's name should leave the index (``ws_events_streams``).

    ``newest_id`` is the id of the stream's newest entry (None: the key is gone, empty, or not
    a stream), ``ttl_ms`` its PTTL (None or negative: no expiry). A stream that is gone is
    stale. One that still expires by itself stays listed (writers set the idle expiry on every
    write, so its name goes at the first prune after it expired). One that will never expire
    (its TTL was removed by hand) is stale once its newest event is older than the retention,
    so no name stays listed for ever."""
    if newest_id is None:
        return True
    if ttl_ms is not None and ttl_ms >= 0:
        return False
    return stream_id_ms(newest_id) / 1000.0 < now - retention_s


def stream_id_ms(stream_id: str) -> int:
    """The millisecond part of a stream entry id (``1700000000000-3`` -> 1700000000000)."""
    head = stream_id.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One stream entry as read back. ``problem`` says what was wrong with a malformed entry
    (it is still listed, never dropped silently)."""

    stream: str  # the writer (instance id or @cli), or the robot stream's robot id
    id: str
    at: str
    ts: float  # epoch seconds of ``at`` (of the entry id when ``at`` is unusable): sort key
    event: str
    robot_id: str
    instance_id: str
    conn_id: str
    detail: dict[str, Any]
    problem: str | None = None

    def as_row(self) -> dict[str, Any]:
        """The event as a listing row (stable snake_case keys, ``-o json``/``jsonl``/``csv``)."""
        return {
            "at": self.at,
            "event": self.event,
            "robot_id": self.robot_id,
            "instance_id": self.instance_id,
            "conn_id": self.conn_id,
            "detail": self.detail,
            "stream": self.stream,
            "id": self.id,
            "problem": self.problem,
        }

    @property
    def key(self) -> tuple[float, str, str]:
        """Merge order: time, then writer, then entry id (stable across runs)."""
        return (self.ts, self.stream, self.id)


def _text(fields: dict[str, Any], name: str, problems: list[str]) -> str:
    value = fields.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.append(f"{name} is not text")
        return str(value)
    return value


def _parse_at(raw: str) -> float | None:
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    ts = moment.timestamp()
    return ts if math.isfinite(ts) else None


def parse_entry(stream: str, stream_id: str, fields: Any) -> StoredEvent:
    """A stream entry as a :class:`StoredEvent`; anything unexpected becomes ``problem``."""
    problems: list[str] = []
    if not isinstance(fields, dict):
        problems.append("entry has no fields")
        fields = {}
    at = _text(fields, "at", problems)
    event = _text(fields, "event", problems)
    if not event:
        problems.append("no event name")
    ts = _parse_at(at) if at else None
    if ts is None:
        problems.append("at is missing or not an aware ISO time" if at else "no at")
        ts = stream_id_ms(stream_id) / 1000.0
    raw_detail = _text(fields, "detail", problems)
    detail: dict[str, Any] = {}
    if raw_detail:
        try:
            parsed = json.loads(raw_detail)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            detail = parsed
        else:
            detail = {"text": raw_detail[:MAX_DETAIL_TEXT]}
            problems.append("detail is not a JSON object")
    return StoredEvent(
        stream=stream,
        id=stream_id,
        at=at,
        ts=ts,
        event=event,
        robot_id=_text(fields, "robot_id", problems),
        instance_id=_text(fields, "instance_id", problems),
        conn_id=_text(fields, "conn_id", problems),
        detail=detail,
        problem="; ".join(problems) or None,
    )


def detail_text(detail: dict[str, Any]) -> str:
    """``key=value`` pairs of a detail object, for one table cell."""
    parts = []
    for key, value in detail.items():
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        parts.append(f"{key}={shown}")
    return " ".join(parts)
