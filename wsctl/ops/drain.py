"""``wsctl drain INSTANCE`` / ``wsctl undrain INSTANCE``: evacuate an instance for a deploy.

The instance does the closing (the ``drain`` op, paced in batches, close code 1012; see
:mod:`wsctl.gateway.drain`), so a drain finishes even if this process goes away. This side
checks the instance exists and listens, asks it to drain, and follows the registry until each
robot it held is registered on another instance, or the timeout passes: the report lists
moved robots (with where they went) and those not back, by id.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from wsctl.control_rpc import Unreachable
from wsctl.errors import EXIT_NOT_REGISTERED, EXIT_TIMEOUT, EXIT_UNREACHABLE, WsctlError
from wsctl.protocol import Envelope, Op, Status
from wsctl.registry.store import RegistryStore

__all__ = [
    "DrainReport",
    "check_instance",
    "drain_instance",
    "start_drain",
    "undrain_instance",
]

REQUEST_TIMEOUT = 10.0  # seconds for the instance to answer drain/undrain
FOLLOW_POLL = 0.25  # seconds between reads of the drained robots' entries
READ_CHUNK = 1000


@dataclass
class DrainReport:
    """The result of :func:`drain_instance`: the instance, the pace, the robots it held,
    where each moved to, and those not registered elsewhere before the timeout."""

    instance: str
    batch: int
    interval: float
    timeout: float
    dry_run: bool = False
    robots: list[str] = field(default_factory=list)
    moved: dict[str, str] = field(default_factory=dict)  # robot -> instance it is on now
    not_back: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def batches(self) -> int:
        """How many batches the instance closes its robots in."""
        return math.ceil(len(self.robots) / self.batch) if self.robots else 0

    @property
    def exit_code(self) -> int:
        """1 when some robot is not back on another instance, else 0."""
        return 1 if self.not_back else 0

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
            "seconds": round(self.seconds, 3),
            "moved_to": [{"robot_id": r, "instance_id": i} for r, i in sorted(self.moved.items())],
            "not_back_ids": list(self.not_back),
        }


async def check_instance(store: RegistryStore, instance: str) -> None:
    """Raise unless ``instance`` listens on its control channel: exit 4 when nothing is known
    of it (no liveness record), exit 5 when it has a record but does not listen."""
    if await store.is_listening(instance):
        return
    record = await store.instance_record(instance)
    if record is None:
        raise WsctlError(
            f"unknown instance {instance!r}: no liveness record and nobody listens on its "
            "control channel (see `wsctl list instances`)",
            exit_code=EXIT_NOT_REGISTERED,
        )
    raise WsctlError(
        f"instance {instance!r} is not listening on its control channel (down, or a gateway "
        "that does not speak the wsctl protocol); nothing to drain through it",
        exit_code=EXIT_UNREACHABLE,
    )


async def _ask(store: RegistryStore, instance: str, envelope: Envelope) -> dict[str, Any]:
    try:
        reply = await store.request(instance, envelope, REQUEST_TIMEOUT)
    except Unreachable:
        raise WsctlError(
            f"instance {instance!r} stopped listening on its control channel",
            exit_code=EXIT_UNREACHABLE,
        ) from None
    if reply is None:
        raise WsctlError(
            f"instance {instance!r} did not answer {envelope.op.value} within "
            f"{REQUEST_TIMEOUT:g}s (an older gateway that does not know the op?)",
            exit_code=EXIT_TIMEOUT,
        )
    wanted = Status.DRAINING if envelope.op is Op.DRAIN else Status.UNDRAINED
    if reply.status is not wanted:
        raise WsctlError(
            f"instance {instance!r} answered {reply.status.value}: {reply.reason or '-'}"
        )
    return reply.data


def _robot_ids(data: dict[str, Any]) -> list[str]:
    """Robot ids from a ``draining``/``inventory`` reply's ``connections`` (untrusted)."""
    out = []
    raw = data.get("connections")
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict) and isinstance(item.get("robot_id"), str) and item["robot_id"]:
            out.append(item["robot_id"])
    return sorted(set(out))


async def drain_instance(
    store: RegistryStore,
    instance: str,
    *,
    batch: int,
    interval: float,
    timeout: float,
    dry_run: bool = False,
) -> DrainReport:
    """Drain ``instance`` and follow its robots until each is registered elsewhere (or
    ``timeout`` seconds after the last batch is due)."""
    started = time.monotonic()
    report = DrainReport(instance, batch, interval, timeout, dry_run=dry_run)
    await check_instance(store, instance)
    if dry_run:
        data = await _ask_inventory(store, instance)
        report.robots = _robot_ids(data)
        return report
    report.robots = await start_drain(store, instance, batch, interval)
    deadline = started + max(0, report.batches - 1) * interval + timeout
    pending = set(report.robots)
    while pending:
        await _note_moved(store, instance, pending, report.moved)
        if not pending or time.monotonic() >= deadline:
            break
        await asyncio.sleep(min(FOLLOW_POLL, max(0.0, deadline - time.monotonic())))
    report.not_back = sorted(pending)
    report.seconds = time.monotonic() - started
    return report


async def start_drain(
    store: RegistryStore,
    instance: str,
    batch: int,
    interval: float,
    origin: str = "cli",
) -> list[str]:
    """Ask ``instance`` to drain (it must listen); returns the robots it will close."""
    envelope = Envelope(
        op=Op.DRAIN,
        message=json.dumps({"batch": batch, "interval": interval}),
        origin=origin,
    )
    return _robot_ids(await _ask(store, instance, envelope))


async def _ask_inventory(store: RegistryStore, instance: str) -> dict[str, Any]:
    reply = await store.request(instance, Envelope(op=Op.INVENTORY), REQUEST_TIMEOUT)
    if reply is None or reply.status is not Status.INVENTORY:
        raise WsctlError(
            f"instance {instance!r} did not answer inventory within {REQUEST_TIMEOUT:g}s",
            exit_code=EXIT_TIMEOUT,
        )
    return reply.data


async def _note_moved(
    store: RegistryStore,
    instance: str,
    pending: set[str],
    moved: dict[str, str],
) -> None:
    """Move robots whose entry names another instance from ``pending`` to ``moved``."""
    robots = sorted(pending)
    owners = await store.owners(robots, READ_CHUNK)
    for robot, owner in zip(robots, owners, strict=True):
        if isinstance(owner, str) and owner and owner != instance:
            moved[robot] = owner
            pending.discard(robot)


async def undrain_instance(store: RegistryStore, instance: str) -> int:
    """Let ``instance`` accept robots again; returns how many sessions it holds."""
    await check_instance(store, instance)
    data = await _ask(store, instance, Envelope(op=Op.UNDRAIN, origin="cli"))
    count = data.get("connections")
    return count if isinstance(count, int) and not isinstance(count, bool) else 0
