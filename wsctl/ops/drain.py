"""``wsctl drain INSTANCE`` / ``wsctl undrain INSTANCE``: evacuate an instance for a deploy.

The instance does the closing (the ``drain`` op, paced in batches, close code 1012; see
:mod:`wsctl.gateway.drain`), so a drain finishes even if this process goes away. This side
checks the instance exists and listens, asks it to drain, and follows the registry until each
robot it held is registered on another instance, or the timeout passes: the report lists
moved robots (with where they went) and those not back, by id.

While it follows, it also watches the instance (pure decisions: :func:`place_of`,
:class:`InstanceWatch`): a drain cancelled by ``wsctl undrain`` (the liveness record stops
saying ``draining`` while robots are still in the sessions the drain found) is reported as
cancelled, with the robots moved, closed and never closed; an instance that stops listening on
its control channel for :data:`GONE_AFTER` seconds in a row, or is replaced by a new process
under the same id, went away during the drain. A dead instance's record (left behind by a
kill or a crash) is then removed, compare-and-delete on the record as last read, so ``wsctl
list instances`` stops showing it alive and draining until the record would have expired.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from wsctl.errors import EXIT_NOT_REGISTERED, EXIT_TIMEOUT, EXIT_UNREACHABLE, WsctlError
from wsctl.ops.deployment import Deployment
from wsctl.protocol.envelopes import Envelope, Op, Status
from wsctl.protocol.rpc import Unreachable
from wsctl.registry.instances import InstanceRecord
from wsctl.shell import command, quoted

__all__ = [
    "GONE_AFTER",
    "DrainReport",
    "Gone",
    "InstanceWatch",
    "Place",
    "check_instance",
    "drain_instance",
    "place_of",
    "start_drain",
    "start_sessions",
    "undrain_instance",
]

REQUEST_TIMEOUT = 10.0  # seconds for the instance to answer drain/undrain
FOLLOW_POLL = 0.25  # seconds between reads of the drained robots' entries
READ_CHUNK = 1000
# seconds the drained instance may not listen on its control channel before it is taken for
# gone: a gateway that lost its subscription (a Redis blip) subscribes again well within this
GONE_AFTER = 3.0


class Place(StrEnum):
    """Where one robot of the drain is, from its registry entry."""

    MOVED = "moved"  # registered on another instance
    HELD = "held"  # still the session the drain found, on the drained instance
    BACK = "back"  # a new session on the drained instance (it was undrained)
    ABSENT = "absent"  # no entry: closed, not registered anywhere (yet)


def place_of(instance: str, drained_conn: str, owner: Any, conn_id: Any) -> Place:
    """Where a robot is, given the drained ``instance``, the ``conn_id`` of the session the
    drain found (empty when unknown) and the robot's entry now (``owner``/``conn_id``: str, or
    None without an entry)."""
    if not isinstance(owner, str) or not owner:
        return Place.ABSENT
    if owner != instance:
        return Place.MOVED
    if not drained_conn or conn_id == drained_conn:
        return Place.HELD
    return Place.BACK


class Gone(StrEnum):
    """How the drained instance went away while the drain was followed."""

    DIED = "died"  # stopped listening, its liveness record left behind (killed, crashed)
    STOPPED = "stopped"  # stopped listening and removed its record (a clean shutdown)
    RESTARTED = "restarted"  # another process under the same id (pid or start time changed)


@dataclass
class InstanceWatch:
    """What the drain's follower concludes about the drained instance from its polls of the
    control channel (anyone listening?) and the liveness record; pure, given ``now``
    (monotonic seconds)."""

    gone_after: float = GONE_AFTER
    first: InstanceRecord | None = None  # the record at the start: which process drains
    last: InstanceRecord | None = None
    silent_since: float | None = None
    seen_draining: bool = False
    undrained: bool = False  # the record stopped saying ``draining`` after it said so
    gone: Gone | None = None

    def observe(self, now: float, listening: bool, record: InstanceRecord | None) -> None:
        """Take one poll's answers into account."""
        if self.gone is not None:
            return
        self.last = record
        if record is not None:
            if self.first is None:
                self.first = record
            elif (record.pid, record.started_at) != (self.first.pid, self.first.started_at):
                self.gone = Gone.RESTARTED
                return
        if listening:
            self.silent_since = None
        else:
            if self.silent_since is None:
                self.silent_since = now
            if now - self.silent_since >= self.gone_after:
                self.gone = Gone.STOPPED if record is None else Gone.DIED
                return
        if record is not None and record.draining:
            self.seen_draining = True
        self.undrained = (
            listening and self.seen_draining and record is not None and not record.draining
        )

    @property
    def silent(self) -> bool:
        """Not listening at the last poll (gone, or maybe going)."""
        return self.silent_since is not None


@dataclass
class DrainReport:
    """The result of :func:`drain_instance`: the instance, the pace, the robots it held,
    where each moved to, those closed but not registered elsewhere (``not_back``), those the
    drain never closed (still in the session it found: a cancelled drain, a dead instance),
    and whether the drain was cancelled or the instance went away meanwhile."""

    instance: str
    batch: int
    interval: float
    timeout: float
    dry_run: bool = False
    robots: list[str] = field(default_factory=list)
    moved: dict[str, str] = field(default_factory=dict)  # robot -> instance it is on now
    not_back: list[str] = field(default_factory=list)
    never_closed: list[str] = field(default_factory=list)
    cancelled: bool = False  # undrained before every robot was closed
    gone: Gone | None = None  # the instance went away during the drain
    record_removed: bool = False  # a dead instance's liveness record was removed
    seconds: float = 0.0

    @property
    def batches(self) -> int:
        """How many batches the instance closes its robots in."""
        return math.ceil(len(self.robots) / self.batch) if self.robots else 0

    @property
    def exit_code(self) -> int:
        """0 when every robot moved to another instance and the drain ran to its end; 1 when
        some robot did not (not back, never closed), the drain was cancelled, or the instance
        went away."""
        failed = self.not_back or self.never_closed or self.cancelled or self.gone
        return 1 if failed else 0

    def as_dict(self) -> dict[str, Any]:
        """The report as the stable JSON object of ``wsctl drain -o json``."""
        return {
            "instance": self.instance,
            "dry_run": self.dry_run,
            "batch": self.batch,
            "interval": self.interval,
            "timeout": self.timeout,
            "robots": len(self.robots),
            "batches": self.batches,
            "moved": len(self.moved),
            "not_back": len(self.not_back),
            "never_closed": len(self.never_closed),
            "cancelled": self.cancelled,
            "instance_gone": self.gone.value if self.gone else None,
            "record_removed": self.record_removed,
            "seconds": round(self.seconds, 3),
            "moved_to": [{"robot_id": r, "instance_id": i} for r, i in sorted(self.moved.items())],
            "not_back_ids": list(self.not_back),
            "never_closed_ids": list(self.never_closed),
        }


async def check_instance(store: Deployment, instance: str, op: Op = Op.DRAIN) -> None:
    """Raise unless ``instance`` listens on its control channel: exit 4 when nothing is known
    of it (no liveness record), exit 5 when it has a record but does not listen; the message
    says what that means for ``op`` (``drain`` or ``undrain``)."""
    if await store.is_listening(instance):
        return
    record = await store.instance_record(instance)
    if record is None:
        raise WsctlError(
            f"unknown instance {quoted(instance)}: no liveness record and nobody listens on its "
            "control channel (see `wsctl list instances`)",
            exit_code=EXIT_NOT_REGISTERED,
        )
    consequence = (
        "it cannot be undrained (an instance that restarts accepts robots again by itself)"
        if op is Op.UNDRAIN
        else "nothing to drain through it"
    )
    raise WsctlError(
        f"instance {quoted(instance)} is not listening on its control channel (down, or a gateway "
        f"that does not speak the wsctl protocol); {consequence}",
        exit_code=EXIT_UNREACHABLE,
    )


async def _ask(store: Deployment, instance: str, envelope: Envelope) -> dict[str, Any]:
    try:
        reply = await store.request(instance, envelope, REQUEST_TIMEOUT)
    except Unreachable:
        raise WsctlError(
            f"instance {quoted(instance)} stopped listening on its control channel",
            exit_code=EXIT_UNREACHABLE,
        ) from None
    if reply is None:
        # the request waits in the instance's subscription: a frozen or overloaded instance
        # acts on it once it runs again
        op = envelope.op.value
        shows = "drains" if envelope.op is Op.DRAIN else "accepts robots again"
        raise WsctlError(
            f"instance {quoted(instance)} did not answer {op} within {REQUEST_TIMEOUT:g}s "
            "(frozen, overloaded, or an older gateway that does not know the op); it may "
            f"still {op} once the request reaches it: `wsctl list instances` shows whether it "
            f"{shows}"
            + (
                f", `{command('wsctl', 'undrain', instance)}` reopens it"
                if envelope.op is Op.DRAIN
                else ""
            ),
            exit_code=EXIT_TIMEOUT,
        )
    wanted = Status.DRAINING if envelope.op is Op.DRAIN else Status.UNDRAINED
    if reply.status is not wanted:
        raise WsctlError(
            f"instance {quoted(instance)} answered {reply.status.value}: {reply.reason or '-'}"
        )
    return reply.data


def _sessions(data: dict[str, Any]) -> dict[str, str]:
    """Robot id -> conn_id from a ``draining``/``inventory`` reply's ``connections``
    (untrusted: items without a robot id are skipped, a missing conn_id is empty)."""
    out: dict[str, str] = {}
    raw = data.get("connections")
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict) and isinstance(item.get("robot_id"), str) and item["robot_id"]:
            conn = item.get("conn_id")
            out[item["robot_id"]] = conn if isinstance(conn, str) else ""
    return dict(sorted(out.items()))


async def drain_instance(
    store: Deployment,
    instance: str,
    *,
    batch: int,
    interval: float,
    timeout: float,
    dry_run: bool = False,
    on_started: Callable[[], None] | None = None,
) -> DrainReport:
    """Drain ``instance`` and follow its robots until each is registered elsewhere (or
    ``timeout`` seconds after the last batch is due), the drain is cancelled, or the instance
    goes away. ``on_started`` is called once the instance has accepted the drain: from then
    on it drains by itself, whether or not this follows it to the end."""
    started = time.monotonic()
    report = DrainReport(instance, batch, interval, timeout, dry_run=dry_run)
    await check_instance(store, instance)
    if dry_run:
        data = await _ask_inventory(store, instance)
        report.robots = list(_sessions(data))
        return report
    sessions = await start_sessions(store, instance, batch, interval)
    if on_started is not None:
        on_started()
    report.robots = list(sessions)
    deadline = started + max(0, report.batches - 1) * interval + timeout
    watch = InstanceWatch()
    places: dict[str, Place] = {}
    while True:
        places = await _places(store, instance, sessions, report.moved)
        listening = await store.is_listening(instance)
        watch.observe(time.monotonic(), listening, await store.instance_record(instance))
        held = any(p is Place.HELD for p in places.values())
        if watch.undrained and held:
            report.cancelled = True
        if watch.gone is not None:
            break
        if watch.undrained:
            # robots held or back on the instance stay there: follow those still between
            # sockets until each is registered again
            waiting = any(p is Place.ABSENT for p in places.values())
        else:
            waiting = bool(places)
        now = time.monotonic()
        if watch.silent:  # not listening: gone, or subscribed again within GONE_AFTER
            waiting, deadline = True, max(deadline, now + FOLLOW_POLL)
        if not waiting or now >= deadline:
            break
        await asyncio.sleep(min(FOLLOW_POLL, max(0.0, deadline - time.monotonic())))
    report.gone = watch.gone
    if watch.gone is Gone.DIED and watch.last is not None:
        report.record_removed = await store.delete_instance_record_if(watch.last)
    report.never_closed = sorted(r for r, p in places.items() if p is Place.HELD)
    report.not_back = sorted(r for r, p in places.items() if p is not Place.HELD)
    report.seconds = time.monotonic() - started
    return report


async def _places(
    store: Deployment,
    instance: str,
    sessions: Mapping[str, str],
    moved: dict[str, str],
) -> dict[str, Place]:
    """Read where each robot not yet moved is; robots registered on another instance go to
    ``moved`` (robot -> instance); returns the place of each of the others."""
    robots = [r for r in sessions if r not in moved]
    places: dict[str, Place] = {}
    for start in range(0, len(robots), READ_CHUNK):
        chunk = robots[start : start + READ_CHUNK]
        for robot, (owner, conn_id) in zip(chunk, await store.sessions(chunk), strict=True):
            place = place_of(instance, sessions[robot], owner, conn_id)
            if place is Place.MOVED:
                moved[robot] = owner
            else:
                places[robot] = place
    return places


async def start_sessions(
    store: Deployment,
    instance: str,
    batch: int,
    interval: float,
    origin: str = "cli",
) -> dict[str, str]:
    """Ask ``instance`` to drain (it must listen); returns the sessions it will close,
    robot id -> conn_id."""
    envelope = Envelope(
        op=Op.DRAIN,
        message=json.dumps({"batch": batch, "interval": interval}),
        origin=origin,
    )
    return _sessions(await _ask(store, instance, envelope))


async def start_drain(
    store: Deployment,
    instance: str,
    batch: int,
    interval: float,
    origin: str = "cli",
) -> list[str]:
    """Ask ``instance`` to drain (it must listen); returns the robots it will close."""
    return list(await start_sessions(store, instance, batch, interval, origin))


async def _ask_inventory(store: Deployment, instance: str) -> dict[str, Any]:
    reply = await store.request(instance, Envelope(op=Op.INVENTORY), REQUEST_TIMEOUT)
    if reply is None or reply.status is not Status.INVENTORY:
        raise WsctlError(
            f"instance {quoted(instance)} did not answer inventory within {REQUEST_TIMEOUT:g}s",
            exit_code=EXIT_TIMEOUT,
        )
    return reply.data


async def undrain_instance(store: Deployment, instance: str) -> int:
    """Let ``instance`` accept robots again; returns how many sessions it holds."""
    await check_instance(store, instance, Op.UNDRAIN)
    data = await _ask(store, instance, Envelope(op=Op.UNDRAIN, origin="cli"))
    count = data.get("connections")
    return count if isinstance(count, int) and not isinstance(count, bool) else 0
