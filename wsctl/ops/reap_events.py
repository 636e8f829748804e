"""Reap passes with their event log: a ``reaped`` event for each robot a pass removes, up to
the pass's ``--robot-events`` count, streamed batch by batch while it runs (bounded memory),
then the pass's summary event, the counts in its report, and a prune of the writer index.

:func:`reap_recorded` runs one pass (``wsctl reap``), :func:`reap_forever` a pass every so
often until stopped (``wsctl reap --every``), handing each pass to a callback that renders it.
Recording never fails a pass: what could not be recorded is in :class:`PassEvents` for the
caller to warn about.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsctl.eventlog.model import DEFAULT_ROBOT_EVENTS, RobotEventCap
from wsctl.ops.events import (
    EventRecorder,
    IndexPrune,
    RecordOutcome,
    prune_writer_index,
    reap_summary_events,
    reaped_events,
)
from wsctl.ops.reap import Reaped, ReapLoop, ReapOptions, ReapReport, reap
from wsctl.redis.target import AsyncClient
from wsctl.registry.keys import Keyspace
from wsctl.registry.store import RegistryStore

__all__ = ["PassEvents", "ReapEvents", "reap_forever", "reap_recorded"]


@dataclass(frozen=True)
class PassEvents:
    """How a pass's events went: what was written or lost (``recorded``), the one line to say
    when the ``--robot-events`` count left robots out (``cap_note``), the writer index's prune."""

    recorded: RecordOutcome
    cap_note: str | None
    index: IndexPrune


class ReapEvents:
    """The event log side of reap passes, written with ``client`` under ``keys``:
    ``robot_event_limit`` is how many robots of a pass get an event of their own (None: all)."""

    def __init__(self, client: AsyncClient, keys: Keyspace, robot_event_limit: int | None) -> None:
        self.client = client
        self.keys = keys
        self.limit = robot_event_limit
        self.recorder = EventRecorder(client, keys)
        self.cap = RobotEventCap(robot_event_limit)

    def reaped_hook(self, dry_run: bool, backup_of: Callable[[], Path | None]) -> Reaped | None:
        """What :func:`wsctl.ops.reap.reap` calls with each batch's deleted entries: their
        ``reaped`` events, naming the backup file ``backup_of`` gives (the pass's)."""
        if dry_run:
            return None

        async def reaped(items: list[Any]) -> None:
            part = self.cap.take(items)
            if part:
                backup = backup_of()
                await self.recorder.add(reaped_events(part, str(backup) if backup else None))

        return reaped

    def abort(self) -> None:
        """The pass failed: drop what is not written yet."""
        self.recorder.abort()

    async def finish(self, report: ReapReport) -> PassEvents | None:
        """Write the pass's summary and what is queued, note the counts in ``report``, prune
        the writer index; then start afresh for the next pass. None for a dry run (it records
        nothing)."""
        if report.dry_run:
            return None
        await self.recorder.add(reap_summary_events(report, self.cap.given))
        recorded = await self.recorder.close()
        cap_note = self.cap.note()
        report.events_recorded = recorded.written
        report.events_capped = self.cap.left_out
        report.events_not_recorded = recorded.lost + self.cap.left_out
        index = await prune_writer_index(self.client, self.keys)
        report.events_index_pruned = index.pruned
        self.recorder = EventRecorder(self.client, self.keys)
        self.cap = RobotEventCap(self.limit)
        return PassEvents(recorded, cap_note, index)


async def reap_recorded(
    store: RegistryStore,
    events_client: AsyncClient,
    options: ReapOptions,
    robot_event_limit: int | None = DEFAULT_ROBOT_EVENTS,
    progress: Callable[[int], None] | None = None,
) -> tuple[ReapReport, PassEvents | None]:
    """One reap pass (``progress`` as for :func:`wsctl.ops.reap.reap`) with its events,
    written with ``events_client`` (the CLI's: the store's own client)."""
    events = ReapEvents(events_client, store.keys, robot_event_limit)
    hook = events.reaped_hook(options.dry_run, lambda: options.backup)
    try:
        report = await reap(store, options, progress, hook)
    except BaseException:
        events.abort()
        raise
    return report, await events.finish(report)


async def reap_forever(
    store: RegistryStore,
    events_client: AsyncClient,
    loop: ReapLoop,
    stop: asyncio.Event,
    on_pass: Callable[[str, ReapReport, PassEvents | None], None],
    robot_event_limit: int | None = DEFAULT_ROBOT_EVENTS,
) -> None:
    """Reap passes (:meth:`ReapLoop.passes`) until ``stop`` is set, each with its events;
    ``on_pass`` gets when each ended (UTC ISO), its report and how its events went (written
    with ``events_client``)."""
    events = ReapEvents(events_client, store.keys, robot_event_limit)
    hook = events.reaped_hook(loop.options.dry_run, lambda: loop.backup)
    try:
        async for at, report in loop.passes(store, stop, hook):
            on_pass(at, report, await events.finish(report))
    except BaseException:
        events.abort()
        raise
