"""The conformance kit's checks, their results and the report. Pure: no I/O, no clock.

Every check tests one rule of docs/protocol.md at one level of participation (§1): 0 the
registry, 1 fencing and heartbeats, 2 the control channel. A check ends ``pass``, ``fail``
(with what was expected and what was seen) or ``n/a``: not applicable (the gateway does not
offer an optional part, or the kit may not do what the check needs, such as freezing Redis),
or not run because a check it needs failed first (``blocked_by`` names it). A gateway
**reaches** a level when every check of that level and below passed or does not apply; a
check that was not run counts against its level, since nothing was verified.

The judgements of what the gateway left in Redis or sent back (an entry's fields, a liveness
record, a reply, an event) are pure functions here, unit-tested without Redis; the probes in
:mod:`wsctl.conformance.probes` gather the facts and hand them over.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from enum import IntEnum, StrEnum
from typing import Any
from urllib.parse import quote, urlsplit

from wsctl.errors import UsageError
from wsctl.eventlog.model import EventName
from wsctl.protocol.envelopes import MAX_MESSAGE_BYTES, Envelope, Reply
from wsctl.registry.model import (
    DEFAULT_MAX_SKEW,
    F_CONNECTED_AT,
    F_INSTANCE_ID,
    F_LAST_HEARTBEAT,
    F_ROBOT_ID,
    F_STATUS,
    F_WS_STATE,
    parse_timestamp,
)

__all__ = [
    "CHECKS",
    "LEVELS",
    "PROTOCOL_DOC",
    "CheckResult",
    "CheckSpec",
    "ConformanceOptions",
    "ConformanceReport",
    "Phase",
    "Verdict",
    "beat_within",
    "blocked",
    "check_ids",
    "entry_problems",
    "event_problems",
    "gateway_url",
    "level_reached",
    "record_problems",
    "reply_problems",
    "robot_url",
    "spec",
    "stated_interval",
    "timestamp_problems",
]

PROTOCOL_DOC = "docs/protocol.md"
LEVELS = (0, 1, 2)
ROBOT_PLACEHOLDER = "{robot_id}"


class Verdict(StrEnum):
    """How one check ended."""

    PASS = "pass"
    FAIL = "fail"
    NA = "n/a"


class Phase(IntEnum):
    """When a check runs. Checks of one phase run after every check of the phases before;
    ``PARALLEL`` checks run at the same time (each with robots of its own), the others one
    at a time, because they act on the whole instance (re-register every session, drain it,
    freeze its Redis) or read what the others left (the event log)."""

    GATE = 0  # what every other check needs: a robot's entry, the control channel
    PARALLEL = 1
    EXCLUSIVE = 2
    LAST = 3


@dataclass(frozen=True)
class CheckSpec:
    """One check: its id (``area.name``), level, the protocol section it tests (``§4``) and
    that section's anchor in docs/protocol.md, what it verifies, the checks whose failure
    leaves nothing for it to verify, and its phase."""

    id: str
    level: int
    section: str
    anchor: str
    title: str
    requires: tuple[str, ...] = ()
    phase: Phase = Phase.PARALLEL

    @property
    def doc(self) -> str:
        """Where the rule is written: ``docs/protocol.md#anchor``."""
        return f"{PROTOCOL_DOC}#{self.anchor}"


_ENTRY = ("registry.entry",)
_LISTEN = ("control.listening",)
_REPLIES = ("control.replies",)

_S3 = ("§3", "3-keys-and-fields")
_S4 = ("§4", "4-sessions-and-the-conn_id-fencing-rule")
_S4_REG = ("§4", "register")
_S4_DISC = ("§4", "disconnect")
_S5 = ("§5", "5-heartbeats")
_S6 = ("§6", "6-the-liveness-record")
_S7 = ("§7", "7-the-control-channel")
_S2 = ("§2", "2-redis")
_S8 = ("§8", "8-envelopes")
_S10_PING = ("§10", "ping")
_S10_INV = ("§10", "inventory")
_S10_RESYNC = ("§10", "resync")
_S10_KICK = ("§10", "kick")
_S10_DRAIN = ("§10", "drain")
_S10_UNDRAIN = ("§10", "undrain")
_S11 = ("§11", "11-routing-a-send-hop-limit-and-ordering")
_S12 = ("§12", "12-the-robot-side")
_S16 = ("§16", "16-batched-sends-version-2")
_S16_HINTS = ("§16", "owner-hints")
_S17 = ("§17", "17-the-event-log-optional")


def _c(
    ident: str,
    level: int,
    where: tuple[str, str],
    title: str,
    requires: tuple[str, ...] = _ENTRY,
    phase: Phase = Phase.PARALLEL,
) -> CheckSpec:
    return CheckSpec(ident, level, where[0], where[1], title, requires, phase)


# Every check, in the order the report lists them (by level, then as the protocol reads).
CHECKS: tuple[CheckSpec, ...] = (
    # level 0: the registry
    _c(
        "registry.entry",
        0,
        _S3,
        "a robot's connect creates its entry ws_conn:{robot_id}, naming the instance",
        (),
        Phase.GATE,
    ),
    _c(
        "registry.fields",
        0,
        _S3,
        "the entry holds robot_id, status connected and websocket_state active",
        phase=Phase.GATE,
    ),
    _c(
        "registry.timestamps",
        0,
        _S3,
        "connected_at and last_heartbeat parse, not in the future",
        phase=Phase.GATE,
    ),
    _c(
        "registry.instance_id",
        0,
        _S6,
        "the instance id is the same for every session",
        phase=Phase.GATE,
    ),
    _c(
        "registry.disconnect",
        0,
        _S4_DISC,
        "the robot's disconnect removes its entry",
        phase=Phase.GATE,
    ),
    # level 1: fencing and heartbeats
    _c("fencing.conn_id", 1, _S4, "every session writes a fresh conn_id into its entry"),
    _c(
        "fencing.late_disconnect",
        1,
        _S4,
        "a late disconnect never erases the entry of the robot's newer session elsewhere",
    ),
    _c(
        "fencing.supersede_local",
        1,
        _S4_REG,
        "a second socket of a robot closes the first with 4001; the entry stays the newer one's",
    ),
    _c(
        "heartbeat.refresh",
        1,
        _S5,
        "last_heartbeat is refreshed every interval while the robot sends nothing",
    ),
    _c(
        "heartbeat.reregister",
        1,
        _S5,
        "an entry that vanished (Redis flushed) is written again by the next heartbeat",
    ),
    _c(
        "heartbeat.superseded",
        1,
        _S5,
        "a session whose entry names another session is closed with 4001, the entry untouched",
    ),
    _c(
        "heartbeat.no_resurrect",
        1,
        _S5,
        "the entry of a closed session is never written again",
    ),
    _c(
        "faults.bad_bytes",
        1,
        _S12,
        "a robot sending bad bytes ends at most its own session, and cleanly",
    ),
    _c(
        "faults.redis_frozen",
        1,
        _S2,
        "Redis frozen for a while: sockets kept, a robot accepted meanwhile registered after",
        phase=Phase.EXCLUSIVE,
    ),
    # level 2: the liveness record and the control channel
    _c("liveness.record", 2, _S6, "a liveness record with every field, a TTL, refreshed"),
    _c(
        "control.listening",
        2,
        _S7,
        "the instance listens on ws_ctl:{instance_id}",
        phase=Phase.GATE,
    ),
    _c(
        "control.replies",
        2,
        _S7,
        "every request gets exactly one reply, carrying its id, the instance and the route",
        _LISTEN,
        Phase.GATE,
    ),
    _c(
        "control.ping",
        2,
        _S10_PING,
        "ping answers pong with connections and version; a robot ping pong or not_connected",
        _REPLIES,
    ),
    _c(
        "control.inventory",
        2,
        _S10_INV,
        "inventory lists the sessions held with their conn_id",
        _REPLIES,
    ),
    _c(
        "control.resync",
        2,
        _S10_RESYNC,
        "resync writes the missing entries of held sessions again at once",
        _REPLIES,
        Phase.EXCLUSIVE,
    ),
    _c(
        "control.malformed",
        2,
        _S8,
        "malformed envelopes are dropped without a reply or harm; unknown fields are ignored",
        _REPLIES,
    ),
    _c(
        "send.delivered",
        2,
        _S11,
        "send to a robot held: the text frame as sent, reply delivered",
        _REPLIES,
    ),
    _c("send.not_connected", 2, _S11, "send to a robot without entry: not_connected", _REPLIES),
    _c(
        "send.ghost",
        2,
        _S11,
        "send to a robot whose entry names this instance without a socket: not_connected, "
        "entry removed",
        _REPLIES,
    ),
    _c(
        "send.forward",
        2,
        _S11,
        "send to another instance's robot: forwarded with hops + 1 and the route, same id",
        _REPLIES,
    ),
    _c(
        "send.hop_limit",
        2,
        _S11,
        "a send that has travelled 2 hops is rejected, never forwarded again",
        _REPLIES,
    ),
    _c(
        "send.unreachable",
        2,
        _S11,
        "send to the robot of an instance nobody listens for: instance_unreachable",
        _REPLIES,
    ),
    _c(
        "send.ordering",
        2,
        _S11,
        "sends to one robot from one requester arrive in the order sent",
        _REPLIES,
    ),
    _c(
        "send.rejected",
        2,
        _S11,
        "a message over the size limit or not UTF-8 is rejected; the socket is kept",
        _REPLIES,
    ),
    _c(
        "kick.operator",
        2,
        _S10_KICK,
        "an operator's kick closes with 4002 and its reason, removes the entry; another "
        "conn_id kicks nothing",
        _REPLIES,
    ),
    _c(
        "kick.superseded",
        2,
        _S10_KICK,
        "a kick without message or reply_to closes the session with 4001",
        _LISTEN,
    ),
    _c(
        "register.kick_previous",
        2,
        _S4_REG,
        "a robot registering here that another instance held: a kick to that instance",
        _LISTEN,
    ),
    _c(
        "batch.send",
        2,
        _S16,
        "a batch (protocol 2): delivered, answered, forwarded per owner, one reply",
        _REPLIES,
    ),
    _c(
        "batch.owner_hints",
        2,
        _S16_HINTS,
        "a forward for a robot not held here: an owner hint to the previous hop",
        _REPLIES,
    ),
    _c(
        "faults.reply_unread",
        2,
        _S7,
        "a reply channel nobody reads does not stall the instance",
        _REPLIES,
    ),
    _c(
        "drain.reply",
        2,
        _S10_DRAIN,
        "drain answers draining with the sessions, the record says draining at once",
        _REPLIES,
        Phase.EXCLUSIVE,
    ),
    _c(
        "drain.refuse_new",
        2,
        _S10_DRAIN,
        "while draining, a robot's handshake is refused with 503 and Retry-After",
        _REPLIES,
        Phase.EXCLUSIVE,
    ),
    _c(
        "drain.close",
        2,
        _S10_DRAIN,
        "draining closes the sessions with 1012 and removes their entries",
        _REPLIES,
        Phase.EXCLUSIVE,
    ),
    _c(
        "drain.undrain",
        2,
        _S10_UNDRAIN,
        "undrain answers undrained, the record says draining 0, robots are accepted again",
        _REPLIES,
        Phase.EXCLUSIVE,
    ),
    _c(
        "faults.redis_frozen_control",
        2,
        _S7,
        "after Redis was frozen the control channel answers again",
        ("faults.redis_frozen", "control.replies"),
        Phase.EXCLUSIVE,
    ),
    _c(
        "events.log",
        2,
        _S17,
        "event-log entries (if the gateway writes them) have every field of §17",
        phase=Phase.LAST,
    ),
)

_BY_ID = {c.id: c for c in CHECKS}


def spec(check_id: str) -> CheckSpec:
    """The check called ``check_id`` (KeyError for an unknown one)."""
    return _BY_ID[check_id]


def check_ids(level: int | None = None) -> list[str]:
    """Every check id (of levels up to ``level`` when given), in report order."""
    return [c.id for c in CHECKS if level is None or c.level <= level]


@dataclass(frozen=True)
class ConformanceOptions:
    """What a run is told: the gateway's robot URL template (see :func:`gateway_url`), the
    level to reach, the instance id when known, the per-step timeout, the gateway's heartbeat
    interval when given (else the one its liveness record states, else
    ``default_interval``), the fleet's timeout (the liveness TTL), its message size limit,
    the Redis processes the kit may freeze (none: it never does) and for how long, and the
    robots' auth secret."""

    gateway: str
    level: int = 2
    instance_id: str | None = None
    timeout: float = 5.0
    heartbeat_interval: float | None = None
    default_interval: float = 30.0
    fleet_timeout: float = 90.0
    max_message_bytes: int = MAX_MESSAGE_BYTES
    freeze_pids: tuple[int, ...] = ()
    freeze_seconds: float = 6.0
    auth_secret: str | None = None
    naive_tz: tzinfo | None = None

    @property
    def quiet(self) -> float:
        """Seconds the kit watches for what must not happen (a second reply, a forward)."""
        return min(0.5, self.timeout / 2)

    def budget(self, check: CheckSpec, interval: float) -> float:
        """The longest one probe may take before it fails as hung, for a gateway beating
        every ``interval`` seconds: its steps' timeouts and heartbeat waits, and the freeze
        for the one that freezes Redis."""
        beat = beat_within(interval)
        base = self.timeout * 4 + beat * 3 + 5.0
        if check.id.startswith("faults.redis_frozen"):
            base += self.freeze_seconds + self.timeout + beat
        return base


def beat_within(interval: float) -> float:
    """Seconds within which the effect of a heartbeat every ``interval`` seconds must show:
    one and a half intervals and a second of slack."""
    return interval * 1.5 + 1.0


def stated_interval(record: Mapping[str, str]) -> float | None:
    """The heartbeat interval a liveness record states (§6 ``heartbeat_interval``), None
    when it states none (or nothing usable)."""
    try:
        value = float(record.get("heartbeat_interval") or "nan")
    except ValueError:
        return None
    return value if 0 < value < 86_400 else None


@dataclass
class CheckResult:
    """How one check ended: the verdict, a one-line detail, and for a failure what was
    expected and what was seen; ``blocked_by`` names the check whose failure kept this one
    from running (then the verdict is ``n/a``)."""

    id: str
    verdict: Verdict
    detail: str = ""
    expected: str | None = None
    seen: str | None = None
    seconds: float = 0.0
    blocked_by: str | None = None

    @property
    def spec(self) -> CheckSpec:
        """The check's definition."""
        return spec(self.id)

    @property
    def verified(self) -> bool:
        """True when the check counts towards its level: passed, or genuinely not
        applicable (not a check that was never run)."""
        return self.verdict is Verdict.PASS or (
            self.verdict is Verdict.NA and self.blocked_by is None
        )

    def as_dict(self) -> dict[str, Any]:
        """The result as ``-o json`` prints it."""
        s = self.spec
        return {
            "id": self.id,
            "level": s.level,
            "section": s.section,
            "doc": s.doc,
            "title": s.title,
            "result": self.verdict.value,
            "detail": self.detail,
            "expected": self.expected,
            "seen": self.seen,
            "blocked_by": self.blocked_by,
            "seconds": round(self.seconds, 3),
        }


def blocked(
    check_id: str, results: Mapping[str, CheckResult], inside: Iterable[str] = ()
) -> str | None:
    """The first check ``check_id`` requires that did not pass (None: it may run); the
    requirements in ``inside`` (checks of the same probe, which sees to them) are skipped. A
    check whose requirement was itself not run is blocked by it too."""
    skip = set(inside)
    for need in spec(check_id).requires:
        if need in skip:
            continue
        got = results.get(need)
        if got is None or got.verdict is not Verdict.PASS:
            return need
    return None


def level_reached(results: Iterable[CheckResult], asked: int) -> int:
    """The highest level up to ``asked`` whose checks (and every lower level's) were all
    verified; -1 when level 0 was not."""
    by_level: dict[int, list[CheckResult]] = {}
    for result in results:
        by_level.setdefault(result.spec.level, []).append(result)
    reached = -1
    for level in range(asked + 1):
        if all(r.verified for r in by_level.get(level, [])):
            reached = level
        else:
            break
    return reached


@dataclass
class ConformanceReport:
    """One run: the gateway, the instance, the level asked for and reached, every result,
    and what the kit cleaned up."""

    gateway: str
    asked_level: int
    run_id: str
    instance_id: str | None = None
    results: list[CheckResult] = field(default_factory=list)
    heartbeat_interval: float | None = None  # what the heartbeat checks waited for
    seconds: float = 0.0
    robots: int = 0  # robot ids the kit used
    keys_removed: int = 0  # keys the kit made (or made the gateway write) and removed
    left_behind: list[str] = field(default_factory=list)  # keys it could not remove

    @property
    def level(self) -> int:
        """The level reached (-1: not even level 0)."""
        return level_reached(self.results, self.asked_level)

    @property
    def ok(self) -> bool:
        """True when the level asked for was reached."""
        return self.level >= self.asked_level

    def counts(self) -> dict[str, int]:
        """How many checks passed, failed, and were not applicable or not run."""
        out = {v.value: 0 for v in Verdict}
        for result in self.results:
            out[result.verdict.value] += 1
        return out

    def summary(self) -> str:
        """One line: the level reached against the level asked, and the counts."""
        counts = self.counts()
        reached = f"level {self.level}" if self.level >= 0 else "no level"
        return (
            f"{reached} reached (asked: {self.asked_level}): {counts['pass']} passed, "
            f"{counts['fail']} failed, {counts['n/a']} n/a"
        )

    def as_dict(self) -> dict[str, Any]:
        """The report as ``-o json`` prints it."""
        return {
            "gateway": self.gateway,
            "instance_id": self.instance_id,
            "run_id": self.run_id,
            "asked_level": self.asked_level,
            "level": self.level,
            "ok": self.ok,
            "counts": self.counts(),
            "heartbeat_interval_s": self.heartbeat_interval,
            "seconds": round(self.seconds, 3),
            "robots": self.robots,
            "keys_removed": self.keys_removed,
            "left_behind": self.left_behind,
            "checks": [r.as_dict() for r in self.results],
        }


# ---------------------------------------------------------------------- gateway URLs


def gateway_url(text: str) -> str:
    """The robot URL template of ``--gateway``: ``ws[s]://host:port/path/{robot_id}``; a
    bare ``ws://host:port`` means ``ws://host:port/ws/{robot_id}`` (the protocol's path,
    §12). Raises UsageError for anything else."""
    parts = urlsplit(text)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise UsageError(f"--gateway {text!r} must be a ws:// or wss:// URL with a host")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise UsageError(f"--gateway {text!r}: {exc}") from None
    if ROBOT_PLACEHOLDER in text:
        if text.count(ROBOT_PLACEHOLDER) != 1 or parts.query or parts.fragment:
            raise UsageError(
                f"--gateway {text!r}: {ROBOT_PLACEHOLDER} once, in the path, and no query"
            )
        return text
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageError(
            f"--gateway {text!r}: say where the robot id goes, e.g. "
            f"ws://HOST:PORT/ws/{ROBOT_PLACEHOLDER}"
        )
    return text.rstrip("/") + "/ws/" + ROBOT_PLACEHOLDER


def robot_url(template: str, robot_id: str, token: str | None = None) -> str:
    """The URL a robot connects to: the id percent-encoded into the template, and its
    ``token`` (when the gateway has an auth secret) as the query parameter."""
    url = template.replace(ROBOT_PLACEHOLDER, quote(robot_id, safe=""))
    return f"{url}?token={token}" if token else url


# ---------------------------------------------------------------------- judgements

ENTRY_FIELDS = (F_INSTANCE_ID, F_ROBOT_ID, F_CONNECTED_AT, F_LAST_HEARTBEAT, F_STATUS, F_WS_STATE)
RECORD_FIELDS = (
    "instance_id",
    "host",
    "port",
    "pid",
    "ws_url",
    "started_at",
    "last_seen",
    "version",
    "connections",
)
EVENT_FIELDS = ("at", "event", "robot_id", "instance_id", "conn_id", "detail")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def entry_problems(fields: Mapping[str, str], robot_id: str) -> list[str]:
    """What is wrong with a robot's entry as §3 spells it (its six fields and their values;
    ``conn_id`` is level 1's business). Empty when nothing is."""
    problems = [f"no {name}" for name in ENTRY_FIELDS if not fields.get(name)]
    if fields.get(F_ROBOT_ID) and fields[F_ROBOT_ID] != robot_id:
        problems.append(f"robot_id is {_short(fields[F_ROBOT_ID])}, not the robot's id")
    if fields.get(F_STATUS) and fields[F_STATUS] != "connected":
        problems.append(f"status is {_short(fields[F_STATUS])}, not 'connected'")
    if fields.get(F_WS_STATE) and fields[F_WS_STATE] != "active":
        problems.append(f"websocket_state is {_short(fields[F_WS_STATE])}, not 'active'")
    return problems


def timestamp_problems(
    fields: Mapping[str, str], now: datetime, naive_tz: tzinfo | None = None
) -> tuple[list[str], list[str]]:
    """``(problems, notes)`` of an entry's two timestamps: each must parse (ISO 8601 or epoch
    seconds; naive ISO in ``naive_tz``) and not lie more than 5 s in the future; a value
    without an explicit offset is a note (a new implementation SHOULD write one, §3)."""
    problems: list[str] = []
    notes: list[str] = []
    for name in (F_CONNECTED_AT, F_LAST_HEARTBEAT):
        raw = fields.get(name)
        if not raw:
            problems.append(f"no {name}")
            continue
        try:
            moment = parse_timestamp(raw, naive_tz)
        except ValueError as exc:
            problems.append(f"{name} {_short(raw)} does not parse: {exc}")
            continue
        ahead = (moment - now).total_seconds()
        if ahead > DEFAULT_MAX_SKEW:
            problems.append(f"{name} {_short(raw)} is {ahead:.1f}s in the future")
        if "T" in raw and not _has_offset(raw):
            notes.append(f"{name} {_short(raw)} has no UTC offset (§3: write one)")
    return problems, notes


def _has_offset(raw: str) -> bool:
    try:
        return datetime.fromisoformat(raw.strip()).tzinfo is not None
    except ValueError:
        return False


def record_problems(
    mapping: Mapping[str, str],
    instance_id: str,
    now: datetime,
    fleet_timeout: float,
    heartbeat_interval: float,
    pttl_ms: int,
) -> list[str]:
    """What is wrong with a liveness record (§6) read at ``now`` with its PTTL: every field,
    integers where integers belong, a fresh ``last_seen``, a TTL no longer than the fleet's
    timeout."""
    problems = [f"no {name}" for name in RECORD_FIELDS if not mapping.get(name)]
    if mapping.get("instance_id") and mapping["instance_id"] != instance_id:
        problems.append(f"instance_id is {_short(mapping['instance_id'])}")
    for name in ("port", "pid", "connections"):
        value = mapping.get(name)
        if value and not value.isdigit():
            problems.append(f"{name} {_short(value)} is not a decimal integer")
    url = mapping.get("ws_url")
    if url and not url.startswith(("ws://", "wss://")):
        problems.append(f"ws_url {_short(url)} is not a ws:// or wss:// URL")
    protocol = mapping.get("protocol")
    if protocol is not None and protocol not in ("1", "2"):
        problems.append(f"protocol {_short(protocol)} is neither 1 nor 2")
    stated = mapping.get("heartbeat_interval")
    if stated is not None and stated_interval(mapping) is None:
        problems.append(f"heartbeat_interval {_short(stated)} is not a number of seconds")
    draining = mapping.get("draining")
    if draining is not None and draining not in ("0", "1"):
        problems.append(f"draining {_short(draining)} is neither 0 nor 1")
    for name in ("started_at", "last_seen"):
        raw = mapping.get(name)
        if raw:
            try:
                moment = parse_timestamp(raw)
            except ValueError as exc:
                problems.append(f"{name} {_short(raw)} does not parse: {exc}")
                continue
            if name == "last_seen":
                age = (now - moment).total_seconds()
                if age > heartbeat_interval + DEFAULT_MAX_SKEW:
                    problems.append(
                        f"last_seen is {age:.1f}s old (written every {heartbeat_interval:g}s)"
                    )
                elif age < -DEFAULT_MAX_SKEW:
                    problems.append(f"last_seen is {-age:.1f}s in the future")
    if pttl_ms < 0:
        problems.append("no TTL (PEXPIRE it to the fleet's timeout)")
    elif pttl_ms > fleet_timeout * 1000 + 1000:
        problems.append(
            f"TTL {pttl_ms / 1000:.1f}s is longer than the fleet's timeout {fleet_timeout:g}s"
        )
    return problems


def reply_problems(reply: Reply, request: Envelope, instance_id: str) -> list[str]:
    """What is wrong with a v1 reply to ``request`` (§9): the answering instance, its route
    ending at that instance, the request's ``sent_at`` and ``robot_id`` carried back."""
    problems: list[str] = []
    if reply.instance != instance_id:
        problems.append(f"instance is {_short(reply.instance)}, not {instance_id!r}")
    if not reply.route or reply.route[-1].instance != instance_id:
        last = reply.route[-1].instance if reply.route else None
        problems.append(f"route does not end at {instance_id!r} (last hop {_short(last)})")
    if abs(reply.sent_at - request.sent_at) > 0.001:
        problems.append(f"sent_at {reply.sent_at!r} is not the request's {request.sent_at!r}")
    if reply.robot_id != request.robot_id:
        problems.append(f"robot_id {_short(reply.robot_id)} is not the request's")
    return problems


_EVENT_NAMES = frozenset(e.value for e in EventName)


def event_problems(fields: Mapping[str, str]) -> list[str]:
    """What is wrong with one event-log entry (§17): every field, ``at`` an aware
    timestamp, a known event name, ``detail`` a JSON object."""
    problems = [f"no {name}" for name in EVENT_FIELDS if name not in fields]
    if not problems and not fields["event"]:
        problems.append("event is empty")
    event = fields.get("event")
    if event and event not in _EVENT_NAMES:
        problems.append(f"unknown event {_short(event)}")
    at = fields.get("at")
    if at is not None and not _has_offset(at):
        problems.append(f"at {_short(at)} is not ISO 8601 with an offset")
    detail = fields.get("detail")
    if detail is not None:
        try:
            parsed = json.loads(detail)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            problems.append(f"detail {_short(detail)} is not a JSON object")
    return problems
