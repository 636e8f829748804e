"""What ``wsctl top`` shows, decided from what was read: pure, every judgement takes ``now``.

* **Rates** are deltas between two liveness records of one process (the gateway writes its
  counters there on every heartbeat, so they come from Redis alone): :func:`rates_between`,
  and :class:`RateTracker`, which keeps the last two records per instance.
* **Instances**: one :class:`InstanceRow` per instance seen in a liveness record, on its control
  channel or in registry entries, with its protocol level (docs/protocol.md §1).
* **Registry**: :class:`RegistryPass` tallies one pass of the background scan (per instance
  with :class:`wsctl.ops.summary.InstanceTally`, heartbeat ages in a
  :class:`wsctl.ops.histogram.Histogram`); :func:`registry_summary` judges it against the
  instances' liveness now (entries on dead instances: :func:`wsctl.ops.reap.owner_known_dead`).
* **Alerts** in words: :func:`alerts`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from itertools import pairwise
from typing import Any

from wsctl.durations import counted, human_duration
from wsctl.ops.histogram import Histogram
from wsctl.ops.reap import owner_known_dead
from wsctl.ops.summary import InstanceTally
from wsctl.registry.instances import COUNTER_FIELDS, InstanceRecord, Liveness, liveness
from wsctl.registry.model import DEFAULT_MAX_SKEW, Entry, assess, format_ts, parse_timestamp
from wsctl.shell import clip, command, word

__all__ = [
    "RATE_NAMES",
    "Alert",
    "AlertKind",
    "InstanceRow",
    "RateTracker",
    "Rates",
    "RedisState",
    "RegistryPass",
    "Severity",
    "Snapshot",
    "age_bands",
    "alerts",
    "instance_rows",
    "level_of",
    "rates_between",
    "record_skew",
    "registry_summary",
]

# The rates shown per instance, each from one counter of the liveness record.
RATE_NAMES = {
    "delivered_per_s": "messages_delivered",
    "forwarded_per_s": "messages_forwarded",
    "failed_per_s": "messages_failed",
    "connects_per_s": "connections_opened",
    "disconnects_per_s": "connections_closed",
    "redis_errors_per_s": "redis_errors",
}
assert set(RATE_NAMES.values()) == set(COUNTER_FIELDS)

# A record not rewritten for this many heartbeat intervals (plus a second) is late: the
# instance cannot write to Redis, or is stuck; its rates are no longer current.
LATE_INTERVALS = 2.0


@dataclass(frozen=True)
class Rates:
    """Per-second rates of one instance over ``window_s`` seconds between two of its records."""

    window_s: float
    values: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        """The rates as JSON-ready data (``*_per_s`` keys, rounded to 3 places)."""
        return {
            "window_s": round(self.window_s, 3),
            **{k: round(v, 3) for k, v in self.values.items()},
        }


def _when(record: InstanceRecord) -> datetime | None:
    try:
        return parse_timestamp(record.last_seen)
    except ValueError:
        return None


def rates_between(earlier: InstanceRecord, later: InstanceRecord) -> Rates | None:
    """Rates from two records of one instance: counter deltas over the time between their
    ``last_seen``. None when either carries no counters, they are of different processes
    (pid or start time changed: the counters started over), no time passed between them, or a
    counter went down."""
    before, after = earlier.counters(), later.counters()
    if before is None or after is None:
        return None
    if (earlier.pid, earlier.started_at) != (later.pid, later.started_at):
        return None
    start, end = _when(earlier), _when(later)
    if start is None or end is None:
        return None
    window = (end - start).total_seconds()
    if not window > 0:
        return None
    values = {}
    for name, counter in RATE_NAMES.items():
        delta = after[counter] - before[counter]
        if delta < 0:
            return None
        values[name] = delta / window
    return Rates(window, values)


def _late_after(record: InstanceRecord) -> float | None:
    if record.heartbeat_interval is None:
        return None
    return LATE_INTERVALS * record.heartbeat_interval + 1.0


@dataclass
class RateTracker:
    """The last two distinct records per instance (a record is rewritten every heartbeat; a
    refresh between two writes reads the same one again) and the rates between them."""

    last: dict[str, InstanceRecord] = field(default_factory=dict)
    rates: dict[str, Rates | None] = field(default_factory=dict)

    def observe(self, record: InstanceRecord) -> None:
        """Take one record read now; rates move on when it is a new write."""
        known = self.last.get(record.instance_id)
        if known is not None and known.last_seen == record.last_seen:
            return
        self.last[record.instance_id] = record
        if known is not None:
            self.rates[record.instance_id] = rates_between(known, record)

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the instances not in ``keep`` (gone from the screen)."""
        wanted = set(keep)
        for name in [n for n in self.last if n not in wanted]:
            del self.last[name]
            self.rates.pop(name, None)

    def current(self, record: InstanceRecord | None, now: datetime) -> tuple[Rates | None, str]:
        """The instance's rates at ``now`` and, when there are none, why (a short note)."""
        if record is None:
            return None, "no liveness record: rates unknown"
        if record.counters() is None:
            return None, "its record has no counters (an older gateway): rates unknown"
        age = record.age(now)
        late = _late_after(record)
        if age is not None and late is not None and age > late:
            return None, f"record {human_duration(age)} old: rates unknown"
        rates = self.rates.get(record.instance_id)
        if rates is None:
            if record.instance_id not in self.rates:
                return None, "waiting for its next record"
            return None, "restarted or counters reset"
        return rates, ""


def level_of(
    record: InstanceRecord | None, listening: bool, entries: int, with_conn_id: int
) -> int | None:
    """The instance's protocol level (docs/protocol.md §1): 2 with a liveness record or a
    control channel, 1 when its entries carry ``conn_id``, 0 when they do not (the original
    design), None when nothing tells."""
    if record is not None or listening:
        return 2
    if with_conn_id:
        return 1
    if entries:
        return 0
    return None


def record_skew(
    before: InstanceRecord | None,
    after: InstanceRecord,
    since: datetime | None,
    now: datetime,
) -> float | None:
    """How far an instance's clock is off (seconds, + ahead), judged from a record written
    between two reads made at ``since`` and ``now`` by one reference clock (Redis' TIME):
    ``last_seen`` after ``now`` is ahead; before ``since`` by more than one heartbeat interval
    (a gateway stamps its record at the start of its heartbeat pass) is behind. None when
    nothing can be told: no new write, or a time within the window."""
    if before is not None and before.last_seen == after.last_seen:
        return None
    written = _when(after)
    if written is None:
        return None
    if written > now:
        return (written - now).total_seconds()
    if before is not None and since is not None:
        lag = (since - written).total_seconds() - (after.heartbeat_interval or 0.0)
        if lag > 0:
            return -lag
    return None


@dataclass
class InstanceRow:
    """One instance as ``top`` shows it."""

    instance_id: str
    level: int | None
    liveness: Liveness
    listening: bool | None
    record: InstanceRecord | None
    record_age_s: float | None
    robots: int | None  # from its record, else its registry entries (last pass)
    robots_from: str | None  # "record" or "registry"
    rates: Rates | None
    rates_note: str
    redis_up: bool | None
    entries: InstanceTally | None  # its registry entries in the last pass
    skew_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The row as stable snake_case JSON."""
        rec = self.record
        return {
            "instance_id": self.instance_id,
            "level": self.level,
            "liveness": self.liveness.value,
            "listening": self.listening,
            "record_age_s": None if self.record_age_s is None else round(self.record_age_s, 3),
            "robots": self.robots,
            "robots_from": self.robots_from,
            "draining": rec.draining if rec else None,
            "version": (rec.version or None) if rec else None,
            "protocol": rec.protocol if rec else None,
            "heartbeat_interval_s": rec.heartbeat_interval if rec else None,
            "redis_up": self.redis_up,
            "rates": self.rates.as_dict() if self.rates else None,
            "rates_note": self.rates_note or None,
            "entries": None
            if self.entries is None
            else {
                "total": self.entries.connections,
                "fresh": self.entries.fresh,
                "stale": self.entries.stale,
                "malformed": self.entries.malformed,
            },
            "clock_skew_s": None if self.skew_s is None else round(self.skew_s, 3),
            "ws_url": (rec.ws_url or None) if rec else None,
            "pid": rec.pid if rec else None,
            "started_at": (rec.started_at or None) if rec else None,
        }


def instance_rows(
    records: dict[str, InstanceRecord],
    listening: set[str] | None,
    tracker: RateTracker,
    tallies: dict[str, InstanceTally],
    with_conn_id: dict[str, int],
    skews: dict[str, float],
    now: datetime,
    timeout: float,
) -> list[InstanceRow]:
    """One row per instance with a record, a listener or entries, sorted by id. ``listening``
    None: not known (the read failed)."""
    names = set(records) | set(listening or ()) | {n for n in tallies if n}
    rows = []
    for name in sorted(names):
        record = records.get(name)
        tally = tallies.get(name)
        hears = None if listening is None else name in listening
        rates, note = tracker.current(record, now)
        level = level_of(
            record, bool(hears), tally.connections if tally else 0, with_conn_id.get(name, 0)
        )
        if level is not None and level < 2:
            note = f"level {level} (no liveness record): rates unknown"
        age = record.age(now) if record else None
        redis_up = None
        if record is not None and record.redis_up is not None:
            late = _late_after(record)
            redis_up = record.redis_up and not (late is not None and age is not None and age > late)
        if record is not None:
            robots, source = record.connections, "record"
        elif tally is not None:
            robots, source = tally.connections, "registry"
        else:
            robots, source = None, None
        rows.append(
            InstanceRow(
                instance_id=name,
                level=level,
                liveness=liveness(record, now, timeout),
                listening=hears,
                record=record,
                record_age_s=age,
                robots=robots,
                robots_from=source,
                rates=rates,
                rates_note=note,
                redis_up=redis_up,
                entries=tally,
                skew_s=skews.get(name),
            )
        )
    return rows


# ------------------------------------------------------------------------------ registry
@dataclass
class RegistryPass:
    """One pass of the background registry scan: per-instance tallies (reusing
    :class:`InstanceTally`), entries carrying ``conn_id`` per instance (their level, and
    whether a dead owner's entries count as on a dead instance), heartbeat ages, entries whose
    heartbeat lies in the future, and the liveness records met on the way."""

    started: datetime
    finished: datetime | None = None
    keys_seen: int = 0  # every key SCAN returned (progress against the previous pass)
    tallies: dict[str, InstanceTally] = field(default_factory=dict)
    with_conn_id: dict[str, int] = field(default_factory=dict)
    ages: Histogram = field(default_factory=Histogram)
    skewed: int = 0
    records: set[str] = field(default_factory=set)  # instance ids with a record (seen)

    def add(self, entries: Iterable[Entry], now: datetime, timeout: float) -> None:
        """Count one batch of entries judged at ``now``."""
        for entry in entries:
            name = entry.instance_id or ""
            tally = self.tallies.get(name)
            if tally is None:
                tally = self.tallies[name] = InstanceTally(name)
            tally.add(entry, now, timeout)
            if entry.conn_id:
                self.with_conn_id[name] = self.with_conn_id.get(name, 0) + 1
            verdict = assess(entry, now, timeout)
            if verdict.clock_skew:
                self.skewed += 1
            elif verdict.heartbeat_age is not None:
                self.ages.add(max(0.0, verdict.heartbeat_age))

    def totals(self) -> dict[str, int]:
        """Entries, fresh, stale and malformed over every instance."""
        out = {"entries": 0, "fresh": 0, "stale": 0, "malformed": 0}
        for t in self.tallies.values():
            out["entries"] += t.connections
            out["fresh"] += t.fresh
            out["stale"] += t.stale
            out["malformed"] += t.malformed
        return out


def age_bands(timeout: float) -> list[tuple[float, float | None]]:
    """The heartbeat-age bands of the histogram: sixths of the timeout up to a third, then
    halves, the rest of the timeout, one more timeout, and beyond (stale ones spread there)."""
    t = timeout
    edges = [0.0, t / 6, t / 3, t / 2, 2 * t / 3, t, 2 * t]
    bands: list[tuple[float, float | None]] = list(pairwise(edges))
    bands.append((2 * t, None))
    return bands


def _dead_entries(
    tally: InstanceTally,
    with_conn_id: int,
    listening: bool | None,
    state: Liveness,
) -> int:
    """Entries of one instance that sit on a positively dead owner (reap's rule)."""
    if listening is None:
        return 0
    if owner_known_dead(listening, state, False):
        return tally.connections
    if owner_known_dead(listening, state, True):
        return with_conn_id
    return 0


def registry_summary(
    done: RegistryPass | None,
    current: RegistryPass | None,
    records: dict[str, InstanceRecord],
    listening: set[str] | None,
    now: datetime,
    timeout: float,
) -> dict[str, Any]:
    """The registry panel as JSON-ready data: the last complete pass (else the pass under
    way, ``complete`` false), judged against the instances' liveness at ``now``; the age of
    the data and how far the next pass has got."""
    shown = done or current
    progress = None
    if current is not None and done is not None and done.keys_seen:
        progress = min(0.99, current.keys_seen / done.keys_seen)
    if shown is None:
        return {"complete": False, "age_s": None, "scan_progress": progress}
    totals = shown.totals()
    on_dead = 0
    dead_by_instance: dict[str, int] = {}
    for name, tally in shown.tallies.items():
        if not name:
            continue
        state = liveness(records.get(name), now, timeout)
        hears = None if listening is None else name in listening
        n = _dead_entries(tally, shown.with_conn_id.get(name, 0), hears, state)
        if n:
            dead_by_instance[name] = n
            on_dead += n
    hist = shown.ages
    bands = []
    for low, high in age_bands(timeout):
        below_high = hist.count if high is None else hist.count_below(high)
        bands.append(
            {
                "from_s": round(low, 3),
                "to_s": None if high is None else round(high, 3),
                "count": max(0, below_high - hist.count_below(low)),
            }
        )
    return {
        "complete": done is not None,
        "age_s": round((now - shown.started).total_seconds(), 3),
        "scan_progress": progress,
        **totals,
        "on_dead_instances": on_dead,
        "on_dead_by_instance": dict(sorted(dead_by_instance.items())),
        "clock_skew": shown.skewed,
        "heartbeat_age": {
            "count": hist.count,
            "p50_s": round(hist.percentile(50), 3),
            "p90_s": round(hist.percentile(90), 3),
            "p99_s": round(hist.percentile(99), 3),
            "max_s": round(hist.maximum, 3) if hist.count else 0.0,
            "bands": bands,
        },
    }


# ------------------------------------------------------------------------------ alerts
class AlertKind(StrEnum):
    """What an alert is about."""

    REDIS_UNREACHABLE = "redis_unreachable"
    NOT_LISTENING = "not_listening"
    DEAD_WITH_ENTRIES = "dead_with_entries"
    STALE_GROWING = "stale_growing"
    CLOCK_SKEW = "clock_skew"


class Severity(StrEnum):
    """How urgent an alert is."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Alert:
    """One alert: its kind, severity, the instance it names (if any) and the sentence shown."""

    kind: AlertKind
    severity: Severity
    message: str
    instance_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The alert as stable snake_case JSON."""
        return {
            "kind": self.kind.value,
            "severity": self.severity.value,
            "instance_id": self.instance_id,
            "message": self.message,
        }


@dataclass(frozen=True)
class RedisState:
    """Whether the last refresh got its answers, and how old the data shown is."""

    ok: bool
    error: str | None = None  # one line naming the server (password scrubbed)
    data_at: datetime | None = None  # when the data shown was read (None: never)
    clock_offset_s: float | None = None  # this machine's clock minus Redis' (TIME)
    unreachable_nodes: tuple[str, ...] = ()  # cluster primaries skipped

    def as_dict(self, now: datetime) -> dict[str, Any]:
        """The state as stable snake_case JSON, ``data_age_s`` at ``now``."""
        return {
            "ok": self.ok,
            "error": self.error,
            "data_at": format_ts(self.data_at) if self.data_at else None,
            "data_age_s": None
            if self.data_at is None
            else round((now - self.data_at).total_seconds(), 3),
            "clock_offset_s": None
            if self.clock_offset_s is None
            else round(self.clock_offset_s, 3),
            "unreachable_nodes": list(self.unreachable_nodes),
        }


# An id named in an alert's sentence is cut to this many characters (the alert's
# ``instance_id`` holds it whole): a 10 KB id must not push the sentence off the screen.
ALERT_ID_MAX = 40


def _named(name: str) -> str:
    """An instance id inside an alert's sentence: a shell word (``$'...'`` when it holds
    characters a terminal would act on, like ids in tables), cut past :data:`ALERT_ID_MAX`."""
    return clip(word(name[: ALERT_ID_MAX + 1]), ALERT_ID_MAX, len(name))


def _reap_command(name: str) -> str:
    """The command that reaps a dead instance's entries, its id quoted for the shell; an id
    too long to show is not cut inside a command (pasted, it would name another instance)."""
    if len(name) > ALERT_ID_MAX:
        return "wsctl reap --dead-instances --instance ID (the whole id: wsctl top --once -o json)"
    return command("wsctl", "reap", "--dead-instances", "--instance", name)


# An instance writes its first record just before it subscribes to its control channel: not
# listening within this many seconds of its start is not yet news.
STARTING_S = 3.0


def _starting(row: InstanceRow, now: datetime) -> bool:
    if row.record is None:
        return False
    try:
        started = parse_timestamp(row.record.started_at)
    except ValueError:
        return False
    return (now - started).total_seconds() < STARTING_S


def alerts(
    redis: RedisState,
    rows: Sequence[InstanceRow],
    registry: dict[str, Any],
    stale_trend: tuple[int, int] | None,
    now: datetime,
    max_skew: float = DEFAULT_MAX_SKEW,
) -> list[Alert]:
    """Every alert at ``now``, errors first: Redis not answering, instances alive but not
    listening on their control channel, dead instances with entries left, stale entries
    growing between the last two passes (``stale_trend``: before, after), clocks off."""
    out: list[Alert] = []
    if not redis.ok:
        age = (
            f"showing data from {human_duration((now - redis.data_at).total_seconds())} ago"
            if redis.data_at
            else "no data yet"
        )
        out.append(Alert(AlertKind.REDIS_UNREACHABLE, Severity.ERROR, f"{redis.error}; {age}"))
    for node in redis.unreachable_nodes:
        out.append(
            Alert(
                AlertKind.REDIS_UNREACHABLE,
                Severity.ERROR,
                f"cluster primary {node} is unreachable: its entries are missing",
            )
        )
    dead = registry.get("on_dead_by_instance") or {}
    for row in rows:
        name = row.instance_id
        named = _named(name)
        if row.liveness is Liveness.ALIVE and row.listening is False and not _starting(row, now):
            held = f"; its record says it holds {counted(row.robots or 0, 'robot')}"
            out.append(
                Alert(
                    AlertKind.NOT_LISTENING,
                    Severity.ERROR,
                    f"{named} is not listening on its control channel (killed, stuck or cut "
                    f"off from Redis?): its record is {human_duration(row.record_age_s)} old"
                    + held,
                    name,
                )
            )
        elif name in dead:
            why = "its liveness record expired" if row.record else "it has no liveness record"
            out.append(
                Alert(
                    AlertKind.DEAD_WITH_ENTRIES,
                    Severity.ERROR,
                    f"{named} is dead ({why}, nobody listens) with "
                    f"{counted(dead[name], 'entry', 'entries')} left: {_reap_command(name)}",
                    name,
                )
            )
    if stale_trend is not None and stale_trend[1] > stale_trend[0]:
        before, after = stale_trend
        out.append(
            Alert(
                AlertKind.STALE_GROWING,
                Severity.WARNING,
                f"stale entries growing: {before} -> {after} between the last two registry scans",
            )
        )
    for row in rows:
        if row.skew_s is not None and abs(row.skew_s) > max_skew:
            side = "ahead of" if row.skew_s > 0 else "behind"
            out.append(
                Alert(
                    AlertKind.CLOCK_SKEW,
                    Severity.WARNING,
                    f"{_named(row.instance_id)}'s clock is {human_duration(abs(row.skew_s))} "
                    f"{side} Redis'",
                    row.instance_id,
                )
            )
    skewed = registry.get("clock_skew") or 0
    if skewed:
        out.append(
            Alert(
                AlertKind.CLOCK_SKEW,
                Severity.WARNING,
                f"{counted(skewed, 'entry', 'entries')} with a heartbeat in the future "
                "(a writer's clock ahead, or --naive-tz wrong)",
            )
        )
    offset = redis.clock_offset_s
    if offset is not None and abs(offset) > max_skew and not math.isnan(offset):
        side = "ahead of" if offset > 0 else "behind"
        out.append(
            Alert(
                AlertKind.CLOCK_SKEW,
                Severity.WARNING,
                f"this machine's clock is {human_duration(abs(offset))} {side} Redis': "
                "ages shown are off by as much",
            )
        )
    out.sort(key=lambda a: a.severity is not Severity.ERROR)
    return out


@dataclass
class Snapshot:
    """Everything one refresh shows."""

    at: datetime
    redis: RedisState
    instances: list[InstanceRow]
    registry: dict[str, Any]
    events: list[dict[str, Any]]
    alerts: list[Alert]

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as stable snake_case JSON (``wsctl top --once -o json``)."""
        return {
            "at": format_ts(self.at),
            "redis": self.redis.as_dict(self.at),
            "alerts": [a.as_dict() for a in self.alerts],
            "instances": [r.as_dict() for r in self.instances],
            "registry": self.registry,
            "events": self.events,
        }
