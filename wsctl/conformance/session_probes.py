"""The probes of levels 0 and 1 (§3 to §5): a robot's entry in the registry, the conn_id
fencing of its sessions, the heartbeat, and the faults a gateway must survive (bad bytes,
a frozen Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

from wsctl.conformance.judgements import (
    entry_problems,
    timestamp_problems,
)
from wsctl.conformance.kit import (
    Blocked,
    Failed,
    Kit,
    Recorder,
    close_of,
)
from wsctl.conformance.robots import Handshake, send_garbage
from wsctl.protocol.envelopes import (
    CloseCode,
    Op,
    Status,
)
from wsctl.registry.model import F_CONN_ID, F_INSTANCE_ID, F_LAST_HEARTBEAT, utcnow

__all__ = [
    "bad_bytes_check",
    "conn_id_check",
    "frozen_probe",
    "late_disconnect_check",
    "no_resurrect_check",
    "refresh_check",
    "registry_probe",
    "reregister_check",
    "supersede_local_check",
    "superseded_check",
]


# ---------------------------------------------------------------------- level 0


async def registry_probe(kit: Kit, rec: Recorder) -> None:
    """registry.*: connect a robot, read its entry, connect another, disconnect."""
    fleet = kit.fleet
    robot_id = kit.rid("registry")
    rest = ("registry.fields", "registry.timestamps", "registry.instance_id", "registry.disconnect")
    try:
        robot = await kit.connect(robot_id)
        fields = await kit.entry(robot_id)
    except Failed as exc:
        rec.failed("registry.entry", exc.expected, exc.seen)
        for check_id in rest:
            rec.blocked(check_id, "registry.entry")
        return
    owner = fields.get(F_INSTANCE_ID)
    if not owner:
        rec.failed("registry.entry", "an instance_id field naming the instance", f"{fields}")
    else:
        rec.passed("registry.entry", f"{fleet.keys.conn_key(robot_id)} names {owner!r}")
        if kit.instance_id is None:
            kit.instance_id = owner
    problems = entry_problems(fields, robot_id)
    if problems:
        rec.failed("registry.fields", "every field of §3 with its value", "; ".join(problems))
    else:
        rec.passed("registry.fields")
    problems, notes = timestamp_problems(fields, utcnow(), kit.options.naive_tz)
    if problems:
        rec.failed(
            "registry.timestamps",
            "ISO 8601 times (with a UTC offset), not in the future",
            "; ".join(problems),
        )
    else:
        rec.passed("registry.timestamps", "; ".join(notes))
    await rec.run("registry.instance_id", _same_instance(kit, owner))
    await robot.close()
    if await kit.gone(robot_id):
        rec.passed("registry.disconnect")
    else:
        rec.failed(
            "registry.disconnect",
            f"no entry within {kit.timeout:g}s of the robot's disconnect",
            f"the entry is still there: {await fleet.fields(robot_id)}",
        )


async def _same_instance(kit: Kit, owner: str | None) -> str:
    asked = kit.options.instance_id
    if asked and owner != asked:
        raise Failed(f"entries naming --instance-id {asked!r}", f"the entry names {owner!r}")
    _, other, fields = await kit.connected("registry-2")
    await other.close()
    if fields.get(F_INSTANCE_ID) != owner:
        raise Failed(
            f"every session's entry naming {owner!r}",
            f"another session's entry names {fields.get(F_INSTANCE_ID)!r}",
        )
    return f"{owner!r}"


# ---------------------------------------------------------------------- level 1


async def conn_id_check(kit: Kit) -> str:
    """fencing.conn_id: each session writes a conn_id, a new one per session."""
    robot_id, robot, fields = await kit.connected("conn-id")
    first = fields.get(F_CONN_ID)
    if not first:
        raise Failed(
            "a conn_id field (the session's fencing token, §4)", f"fields {sorted(fields)}"
        )
    await robot.close()
    await kit.gone(robot_id)
    await kit.connect(robot_id)
    ok, again = await kit.fleet.wait_fields(
        robot_id, lambda f: bool(f.get(F_CONN_ID)) and f.get(F_CONN_ID) != first, kit.timeout
    )
    if not ok:
        raise Failed(
            "a new conn_id for the robot's next session",
            f"conn_id {again.get(F_CONN_ID)!r} (the first session's was {first!r})",
        )
    return ""


async def late_disconnect_check(kit: Kit) -> str:
    """fencing.late_disconnect: the robot registers elsewhere; its old socket here closes
    late (cleanly, then abruptly, then cleanly); the newer entry must stay."""
    fleet = kit.fleet
    for round_ in range(3):
        robot_id, robot, _ = await kit.connected(f"late-disconnect-{round_}")
        conn_id = kit.new_conn_id()
        await fleet.register_elsewhere(robot_id, fleet.peer, conn_id)
        if round_ == 1:
            robot.abort()
        else:
            await robot.close()
        await asyncio.sleep(kit.options.quiet)
        fields = await fleet.fields(robot_id)
        if fields.get(F_INSTANCE_ID) != fleet.peer or fields.get(F_CONN_ID) != conn_id:
            how = "closed cleanly" if round_ != 1 else "dropped"
            raise Failed(
                f"the newer session's entry (instance {fleet.peer!r}, conn_id {conn_id}) "
                f"kept when the old socket {how} after it",
                f"entry {fields}"
                if fields
                else "no entry: the old session's disconnect deleted it",
            )
    return "3 late disconnects, each fenced"


async def supersede_local_check(kit: Kit) -> str:
    """fencing.supersede_local: a second socket of the robot closes the first with 4001."""
    fleet = kit.fleet
    robot_id, first, fields = await kit.connected("supersede-local")
    first_conn = fields.get(F_CONN_ID)
    second = await kit.connect(robot_id)
    if not await first.wait_ended(kit.timeout) or close_of(first) != CloseCode.SUPERSEDED:
        raise Failed("the first socket closed with 4001 when the second connected", first.ending())
    ok, newer = await fleet.wait_fields(
        robot_id, lambda f: bool(f) and f.get(F_CONN_ID) != first_conn, kit.timeout
    )
    if not ok:
        raise Failed("the entry naming the newer session", f"entry {newer}" if newer else "none")
    await asyncio.sleep(kit.options.quiet)
    after = await fleet.fields(robot_id)
    if after.get(F_CONN_ID) != newer.get(F_CONN_ID):
        raise Failed(
            "the newer session's entry kept after the older socket closed",
            f"entry {after}" if after else "no entry",
        )
    if not second.open:
        raise Failed("the newer socket kept open", second.ending())
    return ""


async def refresh_check(kit: Kit) -> str:
    """heartbeat.refresh: last_heartbeat moves while the robot sends nothing."""
    robot_id, robot, fields = await kit.connected("hb-refresh")
    before = fields.get(F_LAST_HEARTBEAT)
    wait = kit.beat
    started = time.monotonic()
    ok, after = await kit.fleet.wait_fields(
        robot_id, lambda f: f.get(F_LAST_HEARTBEAT) not in (None, before), wait
    )
    if not ok:
        raise Failed(
            f"last_heartbeat refreshed within {wait:g}s (heartbeat interval "
            f"{kit.interval:g}s; the robot sends nothing)",
            f"still {before!r}" if after else "the entry is gone",
        )
    if not robot.open:
        raise Failed("the robot's socket kept open", robot.ending())
    return f"refreshed after {time.monotonic() - started:.2f}s (interval {kit.interval:g}s)"


async def reregister_check(kit: Kit) -> str:
    """heartbeat.reregister: an entry deleted behind the gateway's back comes back."""
    robot_id, _, fields = await kit.connected("hb-reregister")
    await kit.fleet.delete_entry(robot_id)
    wait = kit.beat
    ok, again = await kit.fleet.wait_fields(robot_id, bool, wait)
    if not ok:
        raise Failed(
            f"the entry written again within {wait:g}s by the heartbeat (TOUCH returns 2)",
            "no entry",
        )
    if fields.get(F_CONN_ID) and again.get(F_CONN_ID) != fields.get(F_CONN_ID):
        raise Failed(f"the session's own entry (conn_id {fields.get(F_CONN_ID)})", f"entry {again}")
    problems = entry_problems(again, robot_id)
    if problems:
        raise Failed("every field of §3 in the entry written again", "; ".join(problems))
    return ""


async def superseded_check(kit: Kit) -> str:
    """heartbeat.superseded: the entry names another session; the next heartbeat closes the
    socket with 4001 and leaves the entry alone."""
    fleet = kit.fleet
    robot_id, robot, _ = await kit.connected("hb-superseded")
    conn_id = kit.new_conn_id()
    await fleet.register_elsewhere(robot_id, fleet.peer, conn_id)
    wait = kit.beat
    if not await robot.wait_ended(wait) or close_of(robot) != CloseCode.SUPERSEDED:
        raise Failed(
            f"the socket closed with 4001 within {wait:g}s (the heartbeat's TOUCH returns 0)",
            robot.ending(),
        )
    await asyncio.sleep(kit.options.quiet)
    after = await fleet.fields(robot_id)
    if after.get(F_INSTANCE_ID) != fleet.peer or after.get(F_CONN_ID) != conn_id:
        raise Failed(
            f"the other session's entry untouched (instance {fleet.peer!r}, conn_id {conn_id})",
            f"entry {after}" if after else "no entry",
        )
    return ""


async def no_resurrect_check(kit: Kit) -> str:
    """heartbeat.no_resurrect: a closed session's entry never comes back."""
    robot_id, robot, _ = await kit.connected("hb-no-resurrect")
    await robot.close()
    if not await kit.gone(robot_id):
        raise Blocked("registry.disconnect", "the entry was not removed at the disconnect")
    removed = time.monotonic()
    watch = kit.interval * 2 + 1.0
    ok, back = await kit.fleet.wait_fields(robot_id, bool, watch)
    if ok:
        raise Failed(
            f"no entry for the closed session for {watch:g}s",
            f"the entry came back {time.monotonic() - removed:.2f}s after it was removed: {back}",
        )
    return f"watched {watch:g}s"


async def bad_bytes_check(kit: Kit) -> str:
    """faults.bad_bytes: garbage instead of a handshake, then a robot sending a binary frame
    and a text frame that is not UTF-8."""
    _, bystander, _ = await kit.connected("bad-bytes-bystander")
    bad_id, bad, _ = await kit.connected("bad-bytes")
    raw = await send_garbage(
        kit.options.gateway, b"\x16\x03\x01\x00\xffGET \xff\xfe\x00 garbage\r\n\r\n", kit.timeout
    )
    with contextlib.suppress(Exception):  # a gateway may close at the first bad frame
        await bad.send_binary(b"\xff\xfe\x00\x01 binary")
    with contextlib.suppress(Exception):  # ...before this one is sent
        await bad.send_invalid_text(b"\xff\xfe not UTF-8")
    await bad.wait_ended(kit.options.quiet)  # closed at once, or kept
    if not bystander.open:
        raise Failed("another robot's socket left alone", bystander.ending())
    if not bad.open and not await kit.gone(bad_id):
        raise Failed(
            "the bad robot's entry removed when its socket ended",
            f"{bad.ending()}; the entry is still there: {await kit.fleet.fields(bad_id)}",
        )
    if bad.open and not await kit.fleet.fields(bad_id):
        raise Failed("the open socket's entry kept", "the entry is gone, the socket open")
    await kit.connected("bad-bytes-after")
    kept = "kept" if bad.open else bad.ending()
    return f"raw garbage: {raw}; the bad robot's socket: {kept}"


async def frozen_probe(kit: Kit, rec: Recorder) -> None:
    """faults.redis_frozen(+_control): SIGSTOP the Redis processes the kit was given for a
    while; a robot connects meanwhile; after SIGCONT the sockets are still open, the new
    robot gets registered, the heartbeat goes on and the control channel answers."""
    pids = kit.options.freeze_pids
    if not pids:
        reason = "not asked: pass --freeze-redis-pid PID (the kit freezes only a Redis it is given)"
        rec.na("faults.redis_frozen", reason)
        rec.na("faults.redis_frozen_control", reason)
        return
    fleet = kit.fleet
    before_id, before, fields = await kit.connected("frozen-before")
    beat = fields.get(F_LAST_HEARTBEAT)
    during_id = kit.rid("frozen-during")
    seconds = kit.options.freeze_seconds
    started = time.monotonic()
    frozen: list[int] = []
    during = Handshake(error="not tried")
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            frozen.append(pid)
        during = await kit.try_connect(during_id, timeout=min(kit.timeout, seconds))
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - started)))
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    recover = kit.timeout + kit.beat
    try:
        if not before.open:
            raise Failed(f"sockets kept open through {seconds:g}s of frozen Redis", before.ending())
        ok, after = await fleet.wait_fields(
            before_id, lambda f: f.get(F_LAST_HEARTBEAT) not in (None, beat), recover
        )
        if not ok:
            raise Failed(
                f"last_heartbeat refreshed within {recover:g}s after Redis came back",
                f"still {beat!r}" if after else "the entry is gone",
            )
        note = ""
        if during.robot is not None:
            if not await kit.entry(during_id, recover):
                raise Failed("the robot accepted during the freeze registered", "no entry")
            note = "a robot accepted during the freeze was registered after it"
        else:
            note = f"a handshake during the freeze was refused ({during.error or during.status})"
        if not before.open:
            raise Failed("sockets kept open after the freeze", before.ending())
        rec.passed("faults.redis_frozen", note)
    except Failed as exc:
        rec.failed("faults.redis_frozen", exc.expected, exc.seen)
    if "faults.redis_frozen_control" not in rec.ids:
        return

    async def control() -> str:
        deadline = time.monotonic() + recover
        while True:
            try:  # nobody listening yet, or no reply: it may still be subscribing again
                kit.answer(await kit.ask(kit.envelope(Op.PING)), Status.PONG, "a ping")
                return ""
            except Failed as exc:
                if time.monotonic() > deadline:
                    raise Failed(
                        f"a pong within {recover:g}s after Redis came back", exc.seen
                    ) from None
            await asyncio.sleep(0.1)

    await rec.run("faults.redis_frozen_control", control())
