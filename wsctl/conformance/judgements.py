"""The judgements of what a gateway left in Redis or sent back, as docs/protocol.md spells
it: a robot's entry (§3), its timestamps, a liveness record (§6), a reply (§9), an event-log
entry (§17). Pure functions, unit-tested without Redis; the probes gather the facts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any

from wsctl.eventlog.model import EventName
from wsctl.protocol.envelopes import Envelope, Reply
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
    "ENTRY_FIELDS",
    "EVENT_FIELDS",
    "RECORD_FIELDS",
    "entry_problems",
    "event_problems",
    "record_problems",
    "reply_problems",
    "stated_interval",
    "timestamp_problems",
]


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


def stated_interval(record: Mapping[str, str]) -> float | None:
    """The heartbeat interval a liveness record states (§6 ``heartbeat_interval``), None
    when it states none (or nothing usable)."""
    try:
        value = float(record.get("heartbeat_interval") or "nan")
    except ValueError:
        return None
    return value if 0 < value < 86_400 else None


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
