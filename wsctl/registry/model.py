"""Registry entries: hash <-> record, tolerant parsing, and staleness. Pure: no I/O.

The seed writes ``datetime.now().isoformat()`` (naive local time) and no ``conn_id``; wsctl reads
that, aware ISO and epoch seconds, and itself writes aware UTC ISO. Anything it cannot make sense
of becomes a *malformed* entry with a reason: never a crash, never silently dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum

from wsctl.durations import human_duration

__all__ = [
    "DEFAULT_MAX_SKEW",
    "F_CONNECTED_AT",
    "F_CONN_ID",
    "F_INSTANCE_ID",
    "F_LAST_HEARTBEAT",
    "F_ROBOT_ID",
    "F_STATUS",
    "F_WS_STATE",
    "Assessment",
    "Entry",
    "Registration",
    "State",
    "assess",
    "entry_from_hash",
    "format_ts",
    "parse_timestamp",
    "problems_at",
    "utcnow",
    "wrong_type_entry",
]

# Field names: the seed's six, plus wsctl's fencing token. The only place they are spelled.
F_INSTANCE_ID = "instance_id"
F_ROBOT_ID = "robot_id"
F_CONNECTED_AT = "connected_at"
F_LAST_HEARTBEAT = "last_heartbeat"
F_STATUS = "status"
F_WS_STATE = "websocket_state"
F_CONN_ID = "conn_id"

# A heartbeat further than this in the future is reported as clock skew.
DEFAULT_MAX_SKEW = 5.0


class State(StrEnum):
    """What an entry means at a given time: online, stale or malformed."""

    ONLINE = "online"
    STALE = "stale"
    MALFORMED = "malformed"


# Bulk reads parse one or two timestamps per entry, so parsing is the hot path of every
# listing and reap. Two small caches keep it cheap: the local zone's UTC offset per hour of
# naive time (keyed by the text up to the hour, "2026-11-27T05"), and parsed values per zone
# (a gateway writes one stamp per heartbeat batch, so the same strings recur). Both are
# bounded: cleared when full.
_CACHE_LIMIT = 8192
_local_offsets: dict[str, timedelta] = {}
_parsed: dict[tzinfo | None, dict[str, datetime]] = {}


def _learn_local_offset(naive: datetime, hour_key: str) -> timedelta:
    """The local zone's UTC offset at that naive local time's hour (what the seed meant),
    remembered under ``hour_key``."""
    top = naive.replace(minute=0, second=0, microsecond=0, fold=0)
    offset = top.astimezone().utcoffset() or timedelta(0)
    if len(_local_offsets) >= _CACHE_LIMIT:
        _local_offsets.clear()
    _local_offsets[hour_key] = offset
    return offset


def parse_timestamp(raw: str, naive_tz: tzinfo | None = None) -> datetime:
    """Parse an ISO timestamp (naive or aware) or epoch seconds into an aware UTC datetime.

    Naive values are interpreted in ``naive_tz`` (None: local time, what the seed writes).
    Raises ValueError with a short reason. Valid results are cached per zone.
    """
    cache = _parsed.get(naive_tz)
    if cache is None:
        cache = _parsed[naive_tz] = {}
    value = cache.get(raw)
    if value is None:
        value = _parse_timestamp(raw, naive_tz)
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[raw] = value
    return value


def _parse_timestamp(raw: str, naive_tz: tzinfo | None) -> datetime:
    # Any text is survivable: values outside what datetime holds (epoch 1e20, year 1 moved
    # across a UTC offset, year 9999 in a zone east of UTC) raise OverflowError or OSError
    # deep in the conversions; those are unparsable values like any other.
    try:
        return _parse_timestamp_unchecked(raw, naive_tz)
    except (OverflowError, OSError):
        raise ValueError(f"{_short(raw)} is out of the representable time range") from None


def _short(raw: str, limit: int = 40) -> str:
    """A value quoted for a reason, cut so a huge field cannot make a huge message."""
    return repr(raw if len(raw) <= limit else raw[:limit] + "...")


def _parse_timestamp_unchecked(raw: str, naive_tz: tzinfo | None) -> datetime:
    text = raw.strip()
    if not text:
        raise ValueError("empty")
    if text[4:5] == "-" and text[:4].isdigit():  # "2026-...": an ISO date, the commonest form
        pass
    elif text[0].isdigit() and ("-" not in text[1:] or "e-" in text.lower()):
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is not None:
            if not math.isfinite(number):
                raise ValueError(f"{_short(raw)} is not a time")
            if number > 1e11:  # milliseconds since the epoch
                number /= 1000.0
            try:
                return datetime.fromtimestamp(number, UTC)
            except ValueError:  # "year 300000 is out of range"
                raise OverflowError from None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        if text.lower() in ("nan", "inf", "-inf", "infinity"):
            raise ValueError(f"{_short(raw)} is not a time") from None
        raise ValueError(f"{_short(raw)} is not an ISO time or epoch seconds") from None
    if parsed.tzinfo is None:
        if not 1 < parsed.year < 9999:
            # a naive time this close to datetime's limits cannot be moved to UTC reliably
            raise OverflowError
        if naive_tz is None:
            # every accepted ISO form spells date and hour within its first 13 characters
            hour_key = text[:13]
            offset = _local_offsets.get(hour_key)
            if offset is None:
                offset = _learn_local_offset(parsed, hour_key)
            utc = parsed - offset
            return datetime.combine(utc, utc.time(), UTC)  # 5x cheaper than .replace(tzinfo=)
        parsed = parsed.replace(tzinfo=naive_tz)
    return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)


def format_ts(moment: datetime) -> str:
    """How wsctl writes times: aware UTC ISO 8601."""
    return (moment if moment.tzinfo is UTC else moment.astimezone(UTC)).isoformat()


def utcnow() -> datetime:
    """The current time, aware UTC (every pure judgement takes it as ``now``)."""
    return datetime.now(UTC)


@dataclass(slots=True)  # not frozen: frozen __init__ costs twice as much on bulk reads
class Entry:
    """One registry key as read: its raw fields plus what could be parsed from them."""

    robot_id: str
    fields: Mapping[str, str]
    key_type: str = "hash"
    connected_at: datetime | None = None
    last_heartbeat: datetime | None = None
    problems: tuple[str, ...] = ()
    # a key that is not a hash: its DUMP payload (bytes as surrogateescape text), read before
    # a delete so the backup can restore it and the delete can be fenced on it
    dump: str | None = None

    @property
    def instance_id(self) -> str | None:
        """The instance that holds the robot's socket, per the entry."""
        return self.fields.get(F_INSTANCE_ID) or None

    @property
    def conn_id(self) -> str | None:
        """The session id wsctl gateways write (None for the original design's entries)."""
        return self.fields.get(F_CONN_ID) or None

    @property
    def status(self) -> str | None:
        """The ``status`` field as written."""
        return self.fields.get(F_STATUS)

    @property
    def websocket_state(self) -> str | None:
        """The ``websocket_state`` field as written."""
        return self.fields.get(F_WS_STATE)


def entry_from_hash(
    robot_id: str, mapping: Mapping[str, str], naive_tz: tzinfo | None = None
) -> Entry:
    """Build an :class:`Entry` from a hash's fields, noting every problem instead of failing."""
    # Straight-line on purpose: this runs once per entry of every bulk read.
    problems: list[str] = []
    get = mapping.get
    if not get(F_INSTANCE_ID):
        problems.append(f"missing {F_INSTANCE_ID}")
    heartbeat = connected = None
    raw_heartbeat = get(F_LAST_HEARTBEAT)
    if not raw_heartbeat:
        problems.append(f"missing {F_LAST_HEARTBEAT}")
    else:
        try:
            heartbeat = parse_timestamp(raw_heartbeat, naive_tz)
        except ValueError as exc:
            problems.append(f"bad {F_LAST_HEARTBEAT}: {exc}")
    raw = get(F_CONNECTED_AT)
    if raw and raw == raw_heartbeat and heartbeat is not None:  # not beaten since it came
        connected = heartbeat
    elif raw:
        try:
            connected = parse_timestamp(raw, naive_tz)
        except ValueError as exc:
            problems.append(f"bad {F_CONNECTED_AT}: {exc}")
    stored_id = get(F_ROBOT_ID)
    if stored_id and stored_id != robot_id:
        problems.append(f"robot_id field {_short(stored_id)} does not match key")
    fields = mapping if isinstance(mapping, dict) else dict(mapping)
    return Entry(robot_id, fields, "hash", connected, heartbeat, tuple(problems))


def wrong_type_entry(robot_id: str, key_type: str) -> Entry:
    """A key under the prefix that is not a hash."""
    return Entry(
        robot_id=robot_id,
        fields={},
        key_type=key_type,
        problems=(f"not a hash (type {key_type})",),
    )


def problems_at(
    robot_id: str,
    fields: Mapping[str, str],
    now: datetime,
    naive_tz: tzinfo | None = None,
    max_skew: float = DEFAULT_MAX_SKEW,
) -> list[str]:
    """Why a hash with ``fields`` at ``robot_id`` would be a malformed entry at ``now`` (empty:
    it would not). The one validation of what ``registry set`` and ``import`` write."""
    entry = entry_from_hash(robot_id, fields, naive_tz)
    verdict = assess(entry, now, math.inf, max_skew)
    if verdict.state is State.MALFORMED:
        return list(entry.problems) or [verdict.reason]
    return []


@dataclass(slots=True)
class Assessment:
    """What an entry means at a given ``now``: its state, heartbeat age and why."""

    state: State
    heartbeat_age: float | None
    connected_for: float | None
    reason: str = ""
    # malformed because the heartbeat is in the future: the writer's clock (or --naive-tz) is off
    clock_skew: bool = False


def assess(
    entry: Entry, now: datetime, timeout: float, max_skew: float = DEFAULT_MAX_SKEW
) -> Assessment:
    """Classify ``entry`` at ``now``: stale when ``now - last_heartbeat > timeout``."""
    age = (now - entry.last_heartbeat).total_seconds() if entry.last_heartbeat else None
    connected_for = (now - entry.connected_at).total_seconds() if entry.connected_at else None
    if entry.problems:
        return Assessment(State.MALFORMED, age, connected_for, "; ".join(entry.problems))
    if age is None:  # pragma: no cover - a hash without heartbeat already has a problem
        return Assessment(State.MALFORMED, None, connected_for, "missing last_heartbeat")
    if -age > max_skew:
        return Assessment(
            State.MALFORMED,
            age,
            connected_for,
            f"last_heartbeat is {human_duration(-age)} in the future "
            "(clock skew or wrong naive_tz?)",
            clock_skew=True,
        )
    if age > timeout:
        return Assessment(
            State.STALE, age, connected_for, f"no heartbeat for {human_duration(age)}"
        )
    return Assessment(State.ONLINE, age, connected_for)


@dataclass(frozen=True, slots=True)
class Registration:
    """A fresh registry record for one WebSocket session, written by gateways and ``set``."""

    robot_id: str
    instance_id: str
    conn_id: str
    now: datetime
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_hash(self) -> dict[str, str]:
        """The registry hash of this session: the seed's six fields plus ``conn_id``."""
        stamp = format_ts(self.now)
        return {
            F_INSTANCE_ID: self.instance_id,
            F_ROBOT_ID: self.robot_id,
            F_CONNECTED_AT: stamp,
            F_LAST_HEARTBEAT: stamp,
            F_STATUS: "connected",
            F_WS_STATE: "active",
            F_CONN_ID: self.conn_id,
            **self.extra,
        }
