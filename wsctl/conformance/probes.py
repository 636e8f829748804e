"""The checks as probes: what the kit does to the gateway, as robots and as the fleet, and
what it looks at afterwards.

A probe produces the results of one or more checks (those acting on one set-up, such as a
drain, report several). It records each through a :class:`Recorder`: pass with a detail,
fail with what was expected and what was seen, n/a with the reason. A single-check probe
may simply return its detail, or raise :class:`Failed`, :class:`NotApplicable` or
:class:`Blocked`. Every wait is bounded by the run's options (:class:`ConformanceOptions`);
the runner bounds each probe as a whole too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from wsctl.conformance.checks import (
    CheckResult,
    ConformanceOptions,
    Verdict,
    beat_within,
    entry_problems,
    event_problems,
    record_problems,
    reply_problems,
    robot_url,
    stated_interval,
    timestamp_problems,
)
from wsctl.conformance.fleet import FleetSide, Pending, Tap, ascii_json
from wsctl.conformance.robots import Handshake, Robot, handshake, send_garbage
from wsctl.gateway.identity import robot_token
from wsctl.protocol.batch import Batch, BatchReply, Item
from wsctl.protocol.envelopes import (
    ROBOT_PING,
    ROBOT_PING_UNSUPPORTED,
    CloseCode,
    Envelope,
    Hop,
    Op,
    Reply,
    Status,
)
from wsctl.protocol.rpc import Unreachable
from wsctl.registry.model import F_CONN_ID, F_INSTANCE_ID, F_LAST_HEARTBEAT, utcnow
from wsctl.tasks import wait_within

__all__ = [
    "PROBES",
    "Blocked",
    "Failed",
    "Kit",
    "NotApplicable",
    "Probe",
    "Recorder",
    "gateway_answers",
]

ORIGIN = "wsctl-conformance"
MALFORMED = "malformed"


class Failed(Exception):
    """The check failed: what was expected, what was seen."""

    def __init__(self, expected: str, seen: str, detail: str = "") -> None:
        super().__init__(seen)
        self.expected = expected
        self.seen = seen
        self.detail = detail


class NotApplicable(Exception):
    """The check does not apply to this gateway or run (the reason says why)."""


class Blocked(Exception):
    """The check could not be made because what it needs failed (the check named)."""

    def __init__(self, check_id: str, reason: str = "") -> None:
        super().__init__(reason or check_id)
        self.check_id = check_id
        self.reason = reason


class Kit:
    """What every probe works with: the options, the fleet side, the gateway's instance id
    (from ``--instance-id`` or its first entry), its protocol version, and every robot it
    connected (closed by the runner)."""

    def __init__(self, options: ConformanceOptions, fleet: FleetSide) -> None:
        self.options = options
        self.fleet = fleet
        self.instance_id = options.instance_id
        # the gateway's heartbeat interval: as given, else as its liveness record states
        # (read once the instance is known), else the configured default
        self.interval = options.heartbeat_interval or options.default_interval
        self.protocol = 1  # from the liveness record, when it has one
        self.robots: list[Robot] = []
        self.draining = False  # a drain was sent and not yet undone (the clean-up undrains)
        self.stopped = False  # the gateway stopped answering (the clean-up waits for nothing)

    async def close_robots(self) -> None:
        """Close every robot connected so far and wait (a little) until the gateway removed
        their entries."""
        robots, self.robots = self.robots, []
        await asyncio.gather(*(r.close() for r in robots), return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            ids = [r.robot_id for r in robots]
            await self.fleet.wait_released(ids, self.instance_id, min(self.timeout, 2.0))

    # ------------------------------------------------------------------ shorthands
    @property
    def beat(self) -> float:
        """Seconds within which a heartbeat's effect must show."""
        return beat_within(self.interval)

    async def learn_interval(self) -> None:
        """Take the heartbeat interval the gateway's liveness record states, unless one was
        given."""
        if self.options.heartbeat_interval is None and self.instance_id:
            record, _ = await self.fleet.record(self.instance_id)
            self.interval = stated_interval(record) or self.interval

    @property
    def timeout(self) -> float:
        """The per-step timeout (``--timeout``)."""
        return self.options.timeout

    @property
    def gw(self) -> str:
        """The instance id; Blocked when it is unknown (no entry told it)."""
        if not self.instance_id:
            raise Blocked("registry.entry", "the instance id is unknown: pass --instance-id")
        return self.instance_id

    def rid(self, name: str) -> str:
        """A robot id of this run."""
        return self.fleet.robot(name)

    def url(self, robot_id: str) -> str:
        """Where ``robot_id`` connects (with its token when there is an auth secret)."""
        secret = self.options.auth_secret
        token = robot_token(secret, robot_id) if secret else None
        return robot_url(self.options.gateway, robot_id, token)

    async def try_connect(self, robot_id: str, timeout: float | None = None) -> Handshake:
        """A handshake as ``robot_id``; an accepted robot is kept for the clean-up."""
        got = await handshake(robot_id, self.url(robot_id), timeout or self.timeout)
        if got.robot is not None:
            self.robots.append(got.robot)
        return got

    async def connect(self, robot_id: str) -> Robot:
        """Connect ``robot_id``; Failed when the gateway does not accept it."""
        got = await self.try_connect(robot_id)
        if got.robot is None:
            why = got.error or f"HTTP {got.status}"
            raise Failed(f"the gateway accepts robot {robot_id!r}", f"handshake failed: {why}")
        return got.robot

    async def entry(self, robot_id: str, timeout: float | None = None) -> dict[str, str]:
        """Wait for the robot's entry; Failed when none appears."""
        wait = timeout or self.timeout
        ok, fields = await self.fleet.wait_fields(robot_id, bool, wait)
        if not ok:
            raise Failed(
                f"an entry {self.fleet.keys.conn_key(robot_id)} within {wait:g}s",
                "no entry",
            )
        return fields

    async def connected(self, name: str) -> tuple[str, Robot, dict[str, str]]:
        """A new robot connected and registered: its id, the robot, its entry."""
        robot_id = self.rid(name)
        robot = await self.connect(robot_id)
        return robot_id, robot, await self.entry(robot_id)

    async def gone(self, robot_id: str, timeout: float | None = None) -> bool:
        """Wait until the robot's entry is gone; False if it is still there."""
        ok, _ = await self.fleet.wait_fields(robot_id, lambda f: not f, timeout or self.timeout)
        return ok

    async def ask(self, request: Envelope | Batch, *, quiet: float = 0.0) -> Pending:
        """Send ``request`` to the gateway and wait for its reply; Failed when nobody listens."""
        try:
            return await self.fleet.ask(self.gw, request, self.timeout, quiet=quiet)
        except Unreachable:
            raise Failed(
                f"a subscriber on {self.fleet.keys.control_channel(self.gw)}", "nobody listens"
            ) from None

    async def send(self, request: Envelope | Batch) -> Pending:
        """Send ``request`` without waiting (close the Pending when done)."""
        try:
            (pending,) = await self.fleet.send_requests(self.gw, [request], self.timeout)
        except Unreachable:
            raise Failed(
                f"a subscriber on {self.fleet.keys.control_channel(self.gw)}", "nobody listens"
            ) from None
        return pending

    def envelope(self, op: Op, **kw: Any) -> Envelope:
        """A fresh envelope from the kit."""
        return Envelope(op=op, origin=ORIGIN, **kw)

    def answer(self, pending: Pending, status: Status, what: str) -> Reply:
        """The reply of ``pending``, which must have ``status``; Failed otherwise."""
        reply = pending.reply
        if reply is None:
            raise Failed(f"a reply {status.value} to {what}", no_reply(pending, self.timeout))
        if reply.status is not status:
            reason = f" ({reply.reason})" if reply.reason else ""
            raise Failed(f"{status.value} for {what}", f"{reply.status.value}{reason}")
        return reply

    def new_conn_id(self) -> str:
        """A fresh session token for a session the kit registers itself."""
        return uuid.uuid4().hex


def no_reply(pending: Pending, timeout: float) -> str:
    """What came instead of a reply carrying the request's id."""
    seen = f"no reply carrying id {pending.request.id} within {timeout:g}s"
    stray = pending.unclaimed()
    if stray:
        seen += f"; {len(stray)} reply(ies) without it arrived, e.g. {stray[0][:200]}"
    return seen


def _close_of(robot: Robot) -> int | None:
    got = robot.gateway_close
    return got[0] if got else None


@dataclass
class Recorder:
    """Collects the results of one probe."""

    ids: tuple[str, ...]
    results: dict[str, CheckResult]
    report: Callable[[CheckResult], None] | None = None

    def _put(self, result: CheckResult) -> None:
        if result.id in self.ids and result.id not in self.results:
            self.results[result.id] = result
            if self.report is not None:
                self.report(result)

    def passed(self, check_id: str, detail: str = "") -> None:
        """The check passed."""
        self._put(CheckResult(check_id, Verdict.PASS, detail))

    def failed(self, check_id: str, expected: str, seen: str, detail: str = "") -> None:
        """The check failed."""
        self._put(CheckResult(check_id, Verdict.FAIL, detail, expected, seen))

    def na(self, check_id: str, reason: str) -> None:
        """The check does not apply."""
        self._put(CheckResult(check_id, Verdict.NA, reason))

    def blocked(self, check_id: str, by: str, reason: str = "") -> None:
        """The check was not run: ``by`` failed first."""
        detail = f"not run: {reason or by + ' did not pass'}"
        self._put(CheckResult(check_id, Verdict.NA, detail, blocked_by=by))

    def done(self, check_id: str) -> bool:
        """Was a result recorded for the check?"""
        return check_id in self.results

    async def run(self, check_id: str, body: Awaitable[str | None]) -> bool:
        """Run one check's body: its return is the pass detail, its exception the result."""
        try:
            detail = await body
        except Failed as exc:
            self.failed(check_id, exc.expected, exc.seen, exc.detail)
            return False
        except NotApplicable as exc:
            self.na(check_id, str(exc))
            return False
        except Blocked as exc:
            self.blocked(check_id, exc.check_id, exc.reason)
            return False
        self.passed(check_id, detail or "")
        return True


ProbeFn = Callable[[Kit, Recorder], Awaitable[None]]


@dataclass(frozen=True)
class Probe:
    """The checks one probe reports, and the probe."""

    ids: tuple[str, ...]
    fn: ProbeFn


def single(check_id: str, body: Callable[[Kit], Awaitable[str | None]]) -> Probe:
    """A probe of one check whose body returns its pass detail or raises."""

    async def fn(kit: Kit, rec: Recorder) -> None:
        await rec.run(check_id, body(kit))

    return Probe((check_id,), fn)


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
    if not await first.wait_ended(kit.timeout) or _close_of(first) != CloseCode.SUPERSEDED:
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
    if not await robot.wait_ended(wait) or _close_of(robot) != CloseCode.SUPERSEDED:
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


# ---------------------------------------------------------------------- level 2: records


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


# ---------------------------------------------------------------------- level 2: send


SAMPLE = 'conformance ✓ ünïcödé 🤖 "quoted" \\ back\nslash and newline'


async def delivered_check(kit: Kit) -> str:
    """send.delivered: the exact text, reply delivered from this instance."""
    robot_id, robot, _ = await kit.connected("send")
    pending = await kit.ask(kit.envelope(Op.SEND, robot_id=robot_id, message=SAMPLE))
    reply = kit.answer(pending, Status.DELIVERED, "a send to a robot it holds")
    request = pending.request
    assert isinstance(request, Envelope)
    problems = reply_problems(reply, request, kit.gw)
    if problems:
        raise Failed("a reply from the instance with the request's route", "; ".join(problems))
    frame = await robot.next_frame(kit.timeout)
    if frame != SAMPLE:
        raise Failed(f"the text frame {SAMPLE!r}", "nothing" if frame is None else f"{frame!r}")
    return f"{reply.total_ms:.1f} ms"


async def not_connected_check(kit: Kit) -> str:
    """send.not_connected: a robot without an entry."""
    robot_id = kit.rid("send-nobody")
    pending = await kit.ask(kit.envelope(Op.SEND, robot_id=robot_id, message="x"))
    return kit.answer(pending, Status.NOT_CONNECTED, "a robot without entry").reason or ""


async def ghost_check(kit: Kit) -> str:
    """send.ghost: the entry names this instance, which holds no socket: not_connected and
    the ghost entry removed."""
    robot_id = kit.rid("ghost")
    await kit.fleet.register_elsewhere(robot_id, kit.gw, kit.new_conn_id())
    pending = await kit.ask(kit.envelope(Op.SEND, robot_id=robot_id, message="x"))
    kit.answer(pending, Status.NOT_CONNECTED, "a robot whose entry names it without a socket")
    if not await kit.gone(robot_id):
        raise Failed(
            "the ghost entry removed (fenced delete, §11 step 4)",
            f"entry {await kit.fleet.fields(robot_id)}",
        )
    return ""


def _is(request_id: str, op: str = "send", version: int = 1) -> Callable[[dict[str, Any]], bool]:
    return lambda o: o.get("id") == request_id and o.get("op") == op and o.get("v") == version


async def forward_check(kit: Kit) -> str:
    """send.forward: to the owner's channel, hops + 1, the route, nothing else changed."""
    fleet = kit.fleet
    robot_id = kit.rid("forward")
    await fleet.register_elsewhere(robot_id, fleet.peer, kit.new_conn_id())
    envelope = kit.envelope(Op.SEND, robot_id=robot_id, message=SAMPLE)
    pending = await kit.send(envelope)
    try:
        got = await fleet.peer_tap.next_match(_is(envelope.id), pending.since, kit.timeout)
        if got is None:
            reply = pending.reply
            raise Failed(
                f"the envelope forwarded to {fleet.keys.control_channel(fleet.peer)}",
                f"a reply {reply.status.value} ({reply.reason})" if reply else "nothing",
            )
        sent = pending.request
        assert isinstance(sent, Envelope)
        problems = [
            f"{name} {got.get(name)!r}, not {want!r}"
            for name, want in (
                ("hops", sent.hops + 1),
                ("reply_to", sent.reply_to),
                ("robot_id", sent.robot_id),
                ("message", sent.message),
                ("origin", sent.origin),
                ("sent_at", sent.sent_at),
            )
            if got.get(name) != want
        ]
        route = got.get("route")
        if not isinstance(route, list) or not route or route[-1].get("instance") != kit.gw:
            problems.append(f"route {route!r} does not end at {kit.gw!r}")
        if problems:
            raise Failed(
                "the same envelope, hops + 1, the instance on its route", "; ".join(problems)
            )
        await pending.wait(1, kit.options.quiet)
        if pending.replies:
            raise Failed(
                "no reply from a forwarding instance (the owner replies)", f"{pending.replies[0]}"
            )
    finally:
        pending.close()
    return ""


async def hop_limit_check(kit: Kit) -> str:
    """send.hop_limit: a send with hops 2 for another instance's robot is rejected."""
    fleet = kit.fleet
    robot_id = kit.rid("hop-limit")
    await fleet.register_elsewhere(robot_id, fleet.peer, kit.new_conn_id())
    now = time.time()
    route = (Hop(kit.rid("hop-1"), now), Hop(kit.rid("hop-2"), now))
    envelope = kit.envelope(Op.SEND, robot_id=robot_id, message="x", hops=2, route=route)
    pending = await kit.send(envelope)
    try:
        deadline = time.monotonic() + kit.timeout
        forwarded = None
        while not pending.replies and time.monotonic() < deadline:
            forwarded = await fleet.peer_tap.next_match(_is(envelope.id), pending.since, 0.05)
            if forwarded is not None:
                break
        if forwarded is not None:
            raise Failed(
                "rejected: hop limit 2 reached",
                f"forwarded to {fleet.peer!r} with hops {forwarded.get('hops')!r}",
            )
        reply = kit.answer(pending, Status.REJECTED, "a send with hops 2")
    finally:
        pending.close()
    return reply.reason or ""


async def unreachable_check(kit: Kit) -> str:
    """send.unreachable: the owner does not listen."""
    fleet = kit.fleet
    robot_id = kit.rid("unreachable")
    await fleet.register_elsewhere(robot_id, fleet.deaf, kit.new_conn_id())
    pending = await kit.ask(kit.envelope(Op.SEND, robot_id=robot_id, message="x"))
    return kit.answer(pending, Status.INSTANCE_UNREACHABLE, "a robot of a deaf owner").reason or ""


ORDERED = 50


async def ordering_check(kit: Kit) -> str:
    """send.ordering: 50 sends published back to back arrive in order."""
    robot_id, robot, _ = await kit.connected("ordering")
    requests: list[Envelope | Batch] = [
        kit.envelope(Op.SEND, robot_id=robot_id, message=str(i)) for i in range(ORDERED)
    ]
    try:
        pendings = await kit.fleet.send_requests(kit.gw, requests, kit.timeout)
    except Unreachable:
        raise Failed("a subscriber on the control channel", "nobody listens") from None
    try:
        got: list[str | bytes] = []
        deadline = time.monotonic() + kit.timeout
        while len(got) < ORDERED:
            frame = await robot.next_frame(deadline - time.monotonic())
            if frame is None:
                break
            got.append(frame)
        want = [str(i) for i in range(ORDERED)]
        if got != want:
            raise Failed(f"frames 0..{ORDERED - 1} in order", f"{[str(g) for g in got]!r}"[:300])
        for pending in pendings:
            await pending.wait(1, max(0.0, deadline - time.monotonic()))
        statuses = [p.reply.status.value if p.reply else "none" for p in pendings]
        if any(s != Status.DELIVERED.value for s in statuses):
            raise Failed(f"{ORDERED} replies delivered", f"{statuses}"[:300])
    finally:
        for pending in pendings:
            pending.close()
    return ""


async def rejected_check(kit: Kit) -> str:
    """send.rejected: over the size limit, then not UTF-8: rejected, nothing written, the
    socket kept (a send after is delivered)."""
    robot_id, robot, _ = await kit.connected("rejected")
    limit = kit.options.max_message_bytes
    for message, what in (
        ("x" * (limit + 1), f"a message of {limit + 1} bytes"),
        ("\udc80", "a message that is not UTF-8 text"),
    ):
        pending = await kit.ask(kit.envelope(Op.SEND, robot_id=robot_id, message=message))
        kit.answer(pending, Status.REJECTED, what)
    frames = await robot.frames_until_quiet(kit.options.quiet, limit=3)
    if frames:
        raise Failed("nothing written to the robot", f"{len(frames)} frames")
    pending = await kit.ask(kit.envelope(Op.SEND, robot_id=robot_id, message="after"))
    kit.answer(pending, Status.DELIVERED, "a send after the rejected ones (socket kept)")
    return f"limit {limit} bytes"


# ---------------------------------------------------------------------- level 2: kicks


async def kick_operator_check(kit: Kit) -> str:
    """kick.operator: another conn_id kicks nothing; the right one closes with 4002 and the
    reason, answers kicked, removes the entry."""
    robot_id, robot, fields = await kit.connected("kick")
    conn_id = fields.get(F_CONN_ID)
    if conn_id:
        stale = kit.envelope(Op.KICK, robot_id=robot_id, conn_id="0" * 32, message="not you")
        kit.answer(await kit.ask(stale), Status.NOT_CONNECTED, "a kick of another conn_id")
        await asyncio.sleep(kit.options.quiet)
        if not robot.open:
            raise Failed("the socket kept after a kick of another conn_id", robot.ending())
    reason = "conformance kick"
    kick = kit.envelope(Op.KICK, robot_id=robot_id, conn_id=conn_id, message=reason)
    kit.answer(await kit.ask(kick), Status.KICKED, "an operator's kick")
    if not await robot.wait_ended(kit.timeout) or robot.gateway_close != (CloseCode.KICKED, reason):
        raise Failed(f"the socket closed with 4002 ({reason!r})", robot.ending())
    if not await kit.gone(robot_id):
        raise Failed("the entry removed", f"entry {await kit.fleet.fields(robot_id)}")
    return ""


async def kick_superseded_check(kit: Kit) -> str:
    """kick.superseded: a kick as gateways publish it (no message, no reply_to)."""
    robot_id, robot, fields = await kit.connected("kick-superseded")
    kick = kit.envelope(Op.KICK, robot_id=robot_id, conn_id=fields.get(F_CONN_ID))
    await kit.fleet.post(kit.fleet.keys.control_channel(kit.gw), ascii_json(kick))
    if not await robot.wait_ended(kit.timeout) or _close_of(robot) != CloseCode.SUPERSEDED:
        raise Failed("the socket closed with 4001", robot.ending())
    return ""


async def kick_previous_check(kit: Kit) -> str:
    """register.kick_previous: the robot was registered on the peer; connecting here makes
    the gateway kick the peer's session."""
    fleet = kit.fleet
    kit.gw  # noqa: B018 - the instance must be known
    robot_id = kit.rid("kick-previous")
    conn_id = kit.new_conn_id()
    await fleet.register_elsewhere(robot_id, fleet.peer, conn_id)
    since = time.monotonic()
    await kit.connect(robot_id)
    got = await fleet.peer_tap.next_match(
        lambda o: o.get("op") == "kick" and o.get("robot_id") == robot_id, since, kit.timeout
    )
    if got is None:
        raise Failed(
            f"a kick for {robot_id!r} on {fleet.keys.control_channel(fleet.peer)} (§4)", "none"
        )
    problems = [
        f"{name} {got.get(name)!r}, not {want!r}"
        for name, want in (("conn_id", conn_id), ("reply_to", None), ("message", None), ("v", 1))
        if got.get(name) != want
    ]
    if problems:
        raise Failed(
            "a kick of the previous session, without reply_to or message", "; ".join(problems)
        )
    return ""


# ---------------------------------------------------------------------- level 2: batches


def _needs_batches(kit: Kit) -> None:
    if kit.protocol < 2:
        raise NotApplicable(
            f"the liveness record says protocol {kit.protocol}: batches are optional (§16)"
        )


async def batch_check(kit: Kit) -> str:
    """batch.send: held robots delivered (shared and own payloads), a robot without entry
    and an oversized item answered, another owner's robot forwarded in a batch of its own;
    one reply for what this instance resolved."""
    _needs_batches(kit)
    fleet = kit.fleet
    a_id, a, _ = await kit.connected("batch-a")
    b_id, b, _ = await kit.connected("batch-b")
    nobody = kit.rid("batch-nobody")
    elsewhere = kit.rid("batch-forward")
    await fleet.register_elsewhere(elsewhere, fleet.peer, kit.new_conn_id())
    big = "x" * (kit.options.max_message_bytes + 1)
    batch = Batch(
        items=(
            Item("0", a_id),
            Item("1", nobody),
            Item("2", b_id, "own message"),
            Item("3", elsewhere),
            Item("4", a_id, big),
        ),
        message="shared message",
        origin=ORIGIN,
    )
    pending = await kit.send(batch)
    try:
        forwarded = await fleet.peer_tap.next_match(
            _is(batch.id, version=2), pending.since, kit.timeout
        )
        await pending.wait(1, kit.timeout)
        await asyncio.sleep(kit.options.quiet)
        replies = pending.batch_replies
    finally:
        pending.close()
    if len(replies) != 1:
        raise Failed(
            "one batch reply (§16)",
            no_reply(pending, kit.timeout) if not replies else f"{len(replies)} replies",
        )
    reply: BatchReply = replies[0]
    outcomes = {o.id: o.status.value for o in reply.outcomes()}
    want = {"0": "delivered", "1": "not_connected", "2": "delivered", "4": "rejected"}
    if reply.instance != kit.gw or outcomes != want:
        raise Failed(
            f"instance {kit.gw!r} answering {want}", f"{reply.instance!r} answering {outcomes}"
        )
    if forwarded is None:
        raise Failed(f"item 3 forwarded in a batch to {fleet.peer!r}", "nothing forwarded")
    items = forwarded.get("items")
    if (
        forwarded.get("hops") != 1
        or items != [{"id": "3", "robot_id": elsewhere}]
        or forwarded.get("message") != "shared message"
        or forwarded.get("reply_to") != pending.request.reply_to
    ):
        raise Failed(
            "a batch of item 3 only, hops 1, the shared message and the reply channel",
            f"{str(forwarded)[:300]}",
        )
    got_a = await a.frames_until_quiet(kit.options.quiet, limit=5)
    got_b = await b.frames_until_quiet(kit.options.quiet, limit=5)
    if got_a != ["shared message"] or got_b != ["own message"]:
        raise Failed(
            "robot a: the shared message only; robot b: its own message",
            f"a: {[str(f)[:40] for f in got_a]}; b: {[str(f)[:40] for f in got_b]}",
        )
    return ""


async def owner_hints_check(kit: Kit) -> str:
    """batch.owner_hints: the peer forwards a send for a robot the gateway does not hold:
    the reply not_connected, and a hint to the peer that nobody owns the robot."""
    _needs_batches(kit)
    fleet = kit.fleet
    robot_id = kit.rid("hint")
    envelope = kit.envelope(
        Op.SEND, robot_id=robot_id, message="x", hops=1, route=(Hop(fleet.peer, time.time()),)
    )
    pending = await kit.send(envelope)
    try:
        hint = await fleet.peer_tap.next_match(
            lambda o: o.get("op") == "owners" and o.get("v") == 2, pending.since, kit.timeout
        )
        await pending.wait(1, kit.timeout)
    finally:
        pending.close()
    kit.answer(pending, Status.NOT_CONNECTED, "a forwarded send for a robot without entry")
    if hint is None:
        raise Failed(f"an owner hint on {fleet.keys.control_channel(fleet.peer)}", "none")
    owners = hint.get("owners")
    if hint.get("origin") != kit.gw or owners != [{"robot_id": robot_id, "owner": None}]:
        raise Failed(
            f"origin {kit.gw!r}, owners [{{robot_id: {robot_id!r}, owner: null}}]", f"{hint}"[:300]
        )
    return ""


async def reply_unread_check(kit: Kit) -> str:
    """faults.reply_unread: 20 sends whose reply channel nobody reads, then a ping."""
    robot_id, robot, _ = await kit.connected("reply-unread")
    unread = kit.fleet.keys.reply_channel(f"{kit.fleet.prefix}unread")
    channel = kit.fleet.keys.control_channel(kit.gw)
    count = 20
    await kit.fleet.post_many(
        [
            (
                channel,
                ascii_json(
                    kit.envelope(Op.SEND, robot_id=robot_id, message=str(i), reply_to=unread)
                ),
            )
            for i in range(count)
        ]
    )
    got: list[str | bytes] = []
    deadline = time.monotonic() + kit.timeout
    while len(got) < count:
        frame = await robot.next_frame(deadline - time.monotonic())
        if frame is None:
            break
        got.append(frame)
    if len(got) != count:
        raise Failed(f"{count} messages delivered", f"{len(got)}")
    kit.answer(await kit.ask(kit.envelope(Op.PING)), Status.PONG, "a ping after them")
    return ""


# ---------------------------------------------------------------------- level 2: drain

DRAIN_IDS = ("drain.reply", "drain.refuse_new", "drain.close", "drain.undrain")
DRAIN_INTERVAL = 0.2


async def drain_probe(kit: Kit, rec: Recorder) -> None:
    """drain.*: refuse bad parameters, drain (reply, record, refusal, 1012 closes, entries
    removed), undrain (reply, record, robots accepted again). Only against an instance that
    holds no robot but the kit's: a drain closes every session."""
    try:
        await _drain(kit, rec)
    except Failed as exc:
        first = next((i for i in DRAIN_IDS if not rec.done(i)), None)
        if first is not None:
            rec.failed(first, exc.expected, exc.seen)
            for check_id in DRAIN_IDS:
                rec.blocked(check_id, first)
    finally:
        if kit.draining:
            with contextlib.suppress(Failed, Unreachable, TimeoutError):
                await kit.ask(kit.envelope(Op.UNDRAIN))
            kit.draining = False


async def _drain(kit: Kit, rec: Recorder) -> None:
    fleet = kit.fleet
    inventory = kit.answer(await kit.ask(kit.envelope(Op.INVENTORY)), Status.INVENTORY, "inventory")
    sessions = inventory.data.get("connections")
    others = [
        s
        for s in (sessions if isinstance(sessions, list) else [])
        if isinstance(s, dict) and not str(s.get("robot_id", "")).startswith(fleet.prefix)
    ]
    if others:
        for check_id in DRAIN_IDS:
            rec.na(
                check_id,
                f"the instance holds {len(others)} sessions of other robots, which a drain "
                "would close: run the kit against an instance of its own",
            )
        return
    a_id, a, a_fields = await kit.connected("drain-a")
    b_id, b, b_fields = await kit.connected("drain-b")
    bad = kit.envelope(Op.DRAIN, message='{"batch": 0}')
    kit.draining = True
    bad_reply = (await kit.ask(bad)).reply
    message = f'{{"batch": 1, "interval": {DRAIN_INTERVAL}}}'
    reply = kit.answer(
        await kit.ask(kit.envelope(Op.DRAIN, message=message)), Status.DRAINING, "drain"
    )
    # drain.reply
    try:
        if bad_reply is None or bad_reply.status is not Status.REJECTED:
            raise Failed(
                "rejected for a drain with batch 0",
                bad_reply.status.value if bad_reply else "no reply",
            )
        data = reply.data
        listed = {
            s.get("robot_id"): s.get("conn_id")
            for s in data.get("connections", [])
            if isinstance(s, dict)
        }
        problems = []
        if data.get("draining") is not True:
            problems.append(f"data.draining {data.get('draining')!r}")
        if data.get("batch") != 1 or data.get("interval") != DRAIN_INTERVAL:
            problems.append(f"data.batch/interval {data.get('batch')!r}/{data.get('interval')!r}")
        for robot_id, fields in ((a_id, a_fields), (b_id, b_fields)):
            if robot_id not in listed:
                problems.append(f"{robot_id!r} not in data.connections")
            elif fields.get(F_CONN_ID) and listed[robot_id] != fields.get(F_CONN_ID):
                problems.append(f"{robot_id!r} listed with conn_id {listed[robot_id]!r}")
        if problems:
            raise Failed(
                "draining with batch 1, its interval and both sessions", "; ".join(problems)
            )
        if not await _record_draining(kit, "1"):
            raise Failed("the liveness record saying draining 1 within 1 s", "it does not")
        rec.passed("drain.reply")
    except Failed as exc:
        rec.failed("drain.reply", exc.expected, exc.seen)

    async def refuse() -> str:
        got = await kit.try_connect(kit.rid("drain-new"))
        if got.robot is not None:
            raise Failed("HTTP 503 for a new robot while draining", "the handshake was accepted")
        retry = got.header("Retry-After")
        if got.status != 503 or retry is None or not retry.strip().isdigit():
            raise Failed(
                "HTTP 503 with Retry-After (seconds)",
                got.error or f"HTTP {got.status}, Retry-After {retry!r}",
            )
        return f"Retry-After {retry}"

    await rec.run("drain.refuse_new", refuse())

    async def close() -> str:
        wait = kit.timeout + 2 * DRAIN_INTERVAL
        for robot_id, robot in ((a_id, a), (b_id, b)):
            if not await robot.wait_ended(wait) or _close_of(robot) != CloseCode.SERVICE_RESTART:
                raise Failed(f"{robot_id!r} closed with 1012 within {wait:g}s", robot.ending())
            if not await kit.gone(robot_id):
                raise Failed(f"{robot_id!r}'s entry removed", f"{await fleet.fields(robot_id)}")
        return ""

    await rec.run("drain.close", close())

    async def undrain() -> str:
        reply = kit.answer(await kit.ask(kit.envelope(Op.UNDRAIN)), Status.UNDRAINED, "undrain")
        kit.draining = False
        if reply.data.get("draining") is not False:
            raise Failed("data.draining false", f"data {reply.data}")
        if not await _record_draining(kit, "0"):
            raise Failed("the liveness record saying draining 0 within 1 s", "it does not")
        await kit.connected("drain-after")
        return ""

    await rec.run("drain.undrain", undrain())


async def _record_draining(kit: Kit, flag: str) -> bool:
    deadline = time.monotonic() + 1.0
    while True:
        mapping, _ = await kit.fleet.record(kit.gw)
        if mapping.get("draining", "0") == flag:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)


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


# ---------------------------------------------------------------------- the catalogue


PROBES: tuple[Probe, ...] = (
    Probe(
        (
            "registry.entry",
            "registry.fields",
            "registry.timestamps",
            "registry.instance_id",
            "registry.disconnect",
        ),
        registry_probe,
    ),
    single("fencing.conn_id", conn_id_check),
    single("fencing.late_disconnect", late_disconnect_check),
    single("fencing.supersede_local", supersede_local_check),
    single("heartbeat.refresh", refresh_check),
    single("heartbeat.reregister", reregister_check),
    single("heartbeat.superseded", superseded_check),
    single("heartbeat.no_resurrect", no_resurrect_check),
    single("faults.bad_bytes", bad_bytes_check),
    single("liveness.record", liveness_check),
    single("control.listening", listening_check),
    single("control.replies", replies_check),
    single("control.ping", ping_check),
    single("control.inventory", inventory_check),
    single("control.resync", resync_check),
    single("control.malformed", malformed_check),
    single("send.delivered", delivered_check),
    single("send.not_connected", not_connected_check),
    single("send.ghost", ghost_check),
    single("send.forward", forward_check),
    single("send.hop_limit", hop_limit_check),
    single("send.unreachable", unreachable_check),
    single("send.ordering", ordering_check),
    single("send.rejected", rejected_check),
    single("kick.operator", kick_operator_check),
    single("kick.superseded", kick_superseded_check),
    single("register.kick_previous", kick_previous_check),
    single("batch.send", batch_check),
    single("batch.owner_hints", owner_hints_check),
    single("faults.reply_unread", reply_unread_check),
    Probe(DRAIN_IDS, drain_probe),
    Probe(("faults.redis_frozen", "faults.redis_frozen_control"), frozen_probe),
    single("events.log", events_check),
)


async def gateway_answers(kit: Kit) -> bool:
    """Does the gateway still answer a robot's handshake (accepted or refused with a status)
    within a few seconds? A gateway that hangs or died does not."""
    got = await kit.try_connect(kit.rid(f"alive-{uuid.uuid4().hex[:6]}"), min(kit.timeout, 3.0))
    if got.robot is not None:
        with contextlib.suppress(TimeoutError):
            await wait_within(got.robot.close(), 3.0)
        return True
    return got.status is not None
