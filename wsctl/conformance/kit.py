"""What every conformance probe works with: the :class:`Kit` (the run's options, the fleet
side, the gateway's instance id, the robots it connected), the :class:`Recorder` a probe
records its checks' results in, and the :class:`Probe` itself.

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
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from wsctl.conformance.checks import Verdict
from wsctl.conformance.fleet import FleetSide, Pending
from wsctl.conformance.judgements import (
    stated_interval,
)
from wsctl.conformance.options import ConformanceOptions, beat_within, robot_url
from wsctl.conformance.results import CheckResult
from wsctl.conformance.robots import Handshake, Robot, handshake
from wsctl.gateway.identity import robot_token
from wsctl.protocol.batch import Batch
from wsctl.protocol.envelopes import (
    Envelope,
    Op,
    Reply,
    Status,
)
from wsctl.protocol.rpc import Unreachable
from wsctl.tasks import wait_within

__all__ = [
    "ORIGIN",
    "Blocked",
    "Failed",
    "Kit",
    "NotApplicable",
    "Probe",
    "ProbeFn",
    "Recorder",
    "close_of",
    "gateway_answers",
    "no_reply",
    "single",
]

ORIGIN = "wsctl-conformance"


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

    async def send_many(self, requests: list[Envelope | Batch]) -> list[Pending]:
        """Send ``requests`` back to back (one pipeline) without waiting (close each
        Pending when done)."""
        try:
            return await self.fleet.send_requests(self.gw, list(requests), self.timeout)
        except Unreachable:
            raise Failed(
                f"a subscriber on {self.fleet.keys.control_channel(self.gw)}", "nobody listens"
            ) from None

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


def close_of(robot: Robot) -> int | None:
    """The close code the gateway closed ``robot``'s socket with (None: it did not)."""
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


async def gateway_answers(kit: Kit) -> bool:
    """Does the gateway still answer a robot's handshake (accepted or refused with a status)
    within a few seconds? A gateway that hangs or died does not."""
    got = await kit.try_connect(kit.rid(f"alive-{uuid.uuid4().hex[:6]}"), min(kit.timeout, 3.0))
    if got.robot is not None:
        with contextlib.suppress(TimeoutError):
            await wait_within(got.robot.close(), 3.0)
        return True
    return got.status is not None
