"""The level-2 probes of what an instance tells about itself: its liveness record (§6),
the control channel's answers (ping, inventory, resync, §7 to §10), the malformed messages it
must drop (§8), and the event log it may write (§17)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from wsctl.conformance.fleet import Pending, Tap, ascii_json
from wsctl.conformance.judgements import (
    event_problems,
    record_problems,
    reply_problems,
)
from wsctl.conformance.kit import (
    Failed,
    Kit,
    NotApplicable,
    no_reply,
)
from wsctl.protocol.envelopes import (
    ROBOT_PING,
    ROBOT_PING_UNSUPPORTED,
    Envelope,
    Op,
    Reply,
    Status,
)
from wsctl.registry.model import F_CONN_ID, utcnow

__all__ = [
    "MALFORMED",
    "events_check",
    "inventory_check",
    "listening_check",
    "liveness_check",
    "malformed_check",
    "ping_check",
    "replies_check",
    "resync_check",
]


# ---------------------------------------------------------------------- level 2: records


MALFORMED = "malformed"


async def liveness_check(kit: Kit) -> str:
    """liveness.record: every field, a TTL, refreshed."""
    gw = kit.gw
    fleet = kit.fleet
    mapping, pttl = await fleet.record(gw)
    key = fleet.keys.instance_key(gw)
    if not mapping:
        raise Failed(f"a liveness record {key} (§6)", "none" if pttl == -2 else "not a hash")
    options = kit.options
    problems = record_problems(mapping, gw, utcnow(), options.fleet_timeout, kit.interval, pttl)
    if problems:
        raise Failed("every field of §6 and a TTL", "; ".join(problems))
    seen = mapping.get("last_seen")
    deadline = time.monotonic() + kit.beat
    while True:
        again, pttl = await fleet.record(gw)
        if again.get("last_seen") not in (None, seen):
            break
        if time.monotonic() > deadline:
            raise Failed(
                f"last_seen rewritten within {kit.beat:g}s",
                f"still {seen!r}" if again else "gone",
            )
        await asyncio.sleep(0.05)
    if pttl < 0:
        raise Failed("a TTL set again with each write", f"PTTL {pttl}")
    return f"protocol {mapping.get('protocol') or 1}, TTL {pttl / 1000:.1f}s"


async def listening_check(kit: Kit) -> str:
    """control.listening: someone is subscribed to the control channel."""
    gw = kit.gw
    mapping, _ = await kit.fleet.record(gw)
    with contextlib.suppress(ValueError):
        kit.protocol = int(mapping.get("protocol") or 1)
    channel = kit.fleet.keys.control_channel(gw)
    if not await kit.fleet.listening(gw):
        raise Failed(f"a subscriber on {channel} (§7)", "nobody is subscribed")
    return channel


async def replies_check(kit: Kit) -> str:
    """control.replies: one ping, exactly one reply carrying its id."""
    pending = await kit.ask(kit.envelope(Op.PING), quiet=kit.options.quiet)
    if not pending.replies:
        raise Failed("one reply carrying the request's id (§9)", no_reply(pending, kit.timeout))
    if len(pending.replies) > 1:
        raise Failed("exactly one reply", f"{len(pending.replies)} replies")
    reply = pending.replies[0]
    if not isinstance(reply, Reply):
        raise Failed("a version-1 reply to a version-1 request", "a batch reply")
    request = pending.request
    assert isinstance(request, Envelope)
    problems = reply_problems(reply, request, kit.gw)
    if reply.status is not Status.PONG:
        problems.insert(0, f"status {reply.status.value}, not pong")
    if problems:
        raise Failed("a pong from the instance, its route and send time (§9)", "; ".join(problems))
    return f"round trip {reply.total_ms:.1f} ms"


async def ping_check(kit: Kit) -> str:
    """control.ping: the instance's pong; a robot ping; a ping of a robot not held."""
    reply = kit.answer(await kit.ask(kit.envelope(Op.PING)), Status.PONG, "ping")
    count, version = reply.data.get("connections"), reply.data.get("version")
    if isinstance(count, bool) or not isinstance(count, int) or not isinstance(version, str):
        raise Failed("data.connections (an integer) and data.version (text)", f"data {reply.data}")
    robot_id, _, fields = await kit.connected("ping")
    reply = kit.answer(
        await kit.ask(kit.envelope(Op.PING, robot_id=robot_id)), Status.PONG, "a robot ping"
    )
    conn_id = reply.data.get("conn_id")
    if fields.get(F_CONN_ID) and conn_id != fields.get(F_CONN_ID):
        raise Failed(f"data.conn_id {fields.get(F_CONN_ID)!r} (the entry's)", f"{conn_id!r}")
    rtt = reply.data.get("robot_rtt_ms")
    unsupported = reply.data.get(ROBOT_PING) == ROBOT_PING_UNSUPPORTED
    if not unsupported and (isinstance(rtt, bool) or not isinstance(rtt, int | float)):
        raise Failed(
            "data.robot_rtt_ms (a number), or data.robot_ping 'unsupported'", f"data {reply.data}"
        )
    kit.answer(
        await kit.ask(kit.envelope(Op.PING, robot_id=kit.rid("ping-nobody"))),
        Status.NOT_CONNECTED,
        "a ping of a robot it does not hold",
    )
    robot = "robot ping unsupported by its transport" if unsupported else f"robot rtt {rtt} ms"
    return f"{count} connections, version {version!r}; {robot}"


async def inventory_check(kit: Kit) -> str:
    """control.inventory: the sessions held, with their conn_id."""
    robot_id, _, fields = await kit.connected("inventory")
    reply = kit.answer(await kit.ask(kit.envelope(Op.INVENTORY)), Status.INVENTORY, "inventory")
    sessions = reply.data.get("connections")
    if not isinstance(sessions, list):
        raise Failed("data.connections: a list of sessions", f"data {str(reply.data)[:200]}")
    mine = [s for s in sessions if isinstance(s, dict) and s.get("robot_id") == robot_id]
    if not mine:
        raise Failed(f"{robot_id!r} among the sessions", f"{len(sessions)} sessions without it")
    session = mine[0]
    conn_id = fields.get(F_CONN_ID)
    if conn_id and session.get("conn_id") != conn_id:
        raise Failed(f"conn_id {conn_id!r} (the entry's)", f"{session.get('conn_id')!r}")
    since = session.get("since")
    now = time.time()
    if isinstance(since, bool) or not isinstance(since, int | float) or not 0 < since <= now + 5:
        raise Failed("since: epoch seconds when the socket was accepted", f"{since!r}")
    return f"{len(sessions)} sessions"


async def resync_check(kit: Kit) -> str:
    """control.resync: a missing entry of a held session is written again at once."""
    robot_id, _, fields = await kit.connected("resync")
    await kit.fleet.delete_entry(robot_id)
    reply = kit.answer(await kit.ask(kit.envelope(Op.RESYNC)), Status.RESYNCED, "resync")
    count = reply.data.get("reregistered")
    if isinstance(count, bool) or not isinstance(count, int):
        raise Failed("data.reregistered: an integer", f"data {reply.data}")
    again = await kit.fleet.fields(robot_id)
    if not again:
        raise Failed("the session's entry written again when resynced replies", "no entry")
    if fields.get(F_CONN_ID) and again.get(F_CONN_ID) != fields.get(F_CONN_ID):
        raise Failed(f"conn_id {fields.get(F_CONN_ID)!r}", f"entry {again}")
    return f"reregistered {count}"


def _malformed(robot_id: str, reply_to: str) -> list[str]:
    """Control-channel messages every gateway must drop without a reply (§8, §13)."""
    ping = {"v": 1, "op": "ping", "reply_to": reply_to}
    send = {"v": 1, "op": "send", "reply_to": reply_to, "robot_id": robot_id}

    def text(obj: dict[str, Any]) -> str:
        return ascii_json_obj(obj)

    return [
        "not json {",
        "[1, 2, 3]",
        '"a string"',
        "\udcff\udcfe",  # bytes that are not UTF-8
        text({**ping, "id": "bad-version", "v": 99}),
        text({**ping, "id": "bad-op", "op": "explode"}),
        text({**ping, "id": ""}),
        text({**ping}),
        text({**ping, "id": "bad-hops", "hops": -1}),
        text({**ping, "id": "bad-route", "route": "nowhere"}),
        text({**ping, "id": "bad-sent-at", "sent_at": "yesterday"}),
        text({**send, "id": "send-no-robot", "robot_id": None, "message": "x"}),
        text({**send, "id": "send-no-message"}),
        text({**send, "id": "send-number", "message": 5}),
        text(
            {"v": 2, "op": "send", "id": "batch-bad-items", "items": "none", "reply_to": reply_to}
        ),
    ]


def ascii_json_obj(obj: dict[str, Any]) -> str:
    """A JSON object as ASCII text (the kit's own hand-made messages)."""
    return json.dumps(obj, separators=(",", ":"))


async def malformed_check(kit: Kit) -> str:
    """control.malformed: bad messages get no reply and do no harm; a ping with fields the
    protocol does not know, or with only the required ones, is answered."""
    tap: Tap = await kit.fleet.tap(MALFORMED, kit.timeout)
    robot_id, robot, _ = await kit.connected("malformed")
    channel = kit.fleet.keys.control_channel(kit.gw)
    bad = _malformed(robot_id, tap.channel)
    since = time.monotonic()
    await kit.fleet.post_many([(channel, text) for text in bad])
    await asyncio.sleep(kit.options.quiet)
    answered = tap.since(since)
    if answered:
        raise Failed(
            f"no reply to {len(bad)} malformed envelopes (dropped, §8)",
            f"{len(answered)} replies, e.g. {answered[0][:200]}",
        )
    frames = await robot.frames_until_quiet(0.05)
    if frames or not robot.open:
        raise Failed(
            "the robot untouched by malformed sends", f"{frames[:3]!r}; socket {robot.ending()}"
        )
    fleet = kit.fleet
    for extra in ({"x_future": {"nested": [1, 2]}, "note": "ignored"}, None):
        envelope = kit.envelope(Op.PING, reply_to=fleet.inbox.channel)
        if extra is None:
            obj: dict[str, Any] = {"v": 1, "op": "ping", "id": envelope.id}
            obj["reply_to"] = fleet.inbox.channel
        else:
            obj = {**json.loads(ascii_json(envelope)), **extra}
        pending = Pending(fleet.inbox, envelope)
        try:
            await fleet.post(channel, ascii_json_obj(obj))
            await pending.wait(1, kit.timeout)
        finally:
            pending.close()
        what = "a ping with only the required fields" if extra is None else "unknown fields"
        kit.answer(pending, Status.PONG, what)
    return f"{len(bad)} malformed envelopes dropped"


# ---------------------------------------------------------------------- level 2: events


async def events_check(kit: Kit) -> str:
    """events.log: the entries the gateway wrote about the kit's robots, if any."""
    fleet = kit.fleet
    gw = kit.gw
    registry = kit.rid("registry")
    events = await fleet.events(registry)
    indexed = await fleet.indexed_writer(gw)
    if not events and not indexed:
        raise NotApplicable("the gateway writes no event log (§17 is optional)")
    deadline = time.monotonic() + kit.timeout
    names = {e.get("event") for e in events}
    while not {"connected", "disconnected"} <= names and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        events = await fleet.events(registry)
        names = {e.get("event") for e in events}
    problems: list[str] = []
    if not {"connected", "disconnected"} <= names:
        problems.append(f"events of the first robot: {sorted(n or '' for n in names)}")
    for event in events:
        for problem in event_problems(event):
            problems.append(f"{event.get('event')}: {problem}")
        if event.get("robot_id") != registry or event.get("instance_id") != gw:
            problems.append(
                f"{event.get('event')} names {event.get('robot_id')!r} on {event.get('instance_id')!r}"
            )
    kicked = await fleet.events(kit.rid("kick"))
    if kicked and not any(e.get("event") == "kicked" for e in kicked):
        problems.append("no kicked event for the kicked robot")
    if not indexed:
        problems.append(f"{fleet.keys.events_key(gw)} not in {fleet.keys.events_index}")
    if events and await fleet.events_ttl(registry) < 0:
        problems.append(f"{fleet.keys.robot_events_key(registry)} has no expiry")
    if problems:
        raise Failed(
            "entries as §17 spells them, the writer's stream in the index", "; ".join(problems[:5])
        )
    return f"{len(events)} events of one robot checked"
