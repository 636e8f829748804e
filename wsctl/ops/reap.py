"""``wsctl reap``: remove stale entries safely.

* The judgement is pure (:func:`judge` takes ``now``).
* An entry is deleted only if it is still exactly what was judged: a per-key Lua
  compare-and-delete on ``instance_id``, ``conn_id`` and ``last_heartbeat`` (on a cluster each
  script touches one key, so no cross-slot scripts). A heartbeat or reconnect that lands
  between the read and the delete keeps the entry.
* Before anything is deleted it is appended to a JSONL backup and fsync'ed, so
  ``wsctl registry import BACKUP`` can restore it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from wsctl.ops.backup import BackupWriter, default_backup_path
from wsctl.registry.instances import Liveness, liveness
from wsctl.registry.model import Entry, State, assess, format_ts, utcnow
from wsctl.registry.store import DeleteOutcome, RegistryStore
from wsctl.tasks import wait_within

__all__ = [
    "MAX_ITEMS_REPORTED",
    "DeadInstances",
    "ReapLoop",
    "ReapOptions",
    "ReapReport",
    "Reaped",
    "Reason",
    "judge",
    "owner_known_dead",
    "reap",
]

MAX_ITEMS_REPORTED = 1000


class Reason(StrEnum):
    """Why an entry is reaped (the ``reason`` of report items and ``by_reason``)."""

    STALE = "stale_heartbeat"
    DEAD_INSTANCE = "dead_instance"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class ReapOptions:
    """What one reap pass considers and how it deletes (the ``wsctl reap`` flags)."""

    timeout: float = 90.0
    dry_run: bool = False
    backup: Path | None = None
    instance: str | None = None
    dead_instances: bool = False
    include_malformed: bool = False
    limit: int | None = None


def owner_known_dead(listening: bool, record: Liveness, entry_has_conn_id: bool) -> bool:
    """Is the instance that owns an entry positively known dead (``reap --dead-instances``)?

    Only if nobody listens on its control channel and it is an instance that would say it was
    alive: its liveness record has expired (``DEAD``), or it has none (``UNKNOWN``) and the
    entry carries a ``conn_id`` (written by a gateway speaking the protocol, which keeps a
    liveness record while it lives). A gateway written the original design's way writes
    neither record nor ``conn_id``: its absence says nothing, so its fresh entries are never
    reaped this way (once it is down its heartbeats stop and staleness reaps them).
    """
    if listening:
        return False
    if record is Liveness.DEAD:
        return True
    return record is Liveness.UNKNOWN and entry_has_conn_id


def judge(
    entry: Entry,
    now: datetime,
    options: ReapOptions,
    dead: Callable[[Entry], bool] | None = None,
) -> tuple[Reason | None, str]:
    """Why ``entry`` should go (or None) and a human detail. Pure given ``dead`` (is the
    entry's owner known dead: see :func:`owner_known_dead`)."""
    if options.instance is not None and entry.instance_id != options.instance:
        return None, ""
    verdict = assess(entry, now, options.timeout)
    if verdict.state is State.MALFORMED:
        return (Reason.MALFORMED if options.include_malformed else None), verdict.reason
    if verdict.state is State.STALE:
        return Reason.STALE, verdict.reason
    if dead is not None and entry.instance_id and dead(entry):
        return Reason.DEAD_INSTANCE, f"instance {entry.instance_id} is dead"
    return None, ""


@dataclass
class ReapReport:
    """What one pass examined, reaped and kept, and why (``reap -o json``)."""

    dry_run: bool
    timeout: float
    examined: int = 0
    candidates: int = 0
    reaped: int = 0
    skipped_refreshed: int = 0
    already_gone: int = 0
    malformed_kept: int = 0
    by_instance: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    items: list[dict[str, Any]] = field(default_factory=list)
    backup: str | None = None
    seconds: float = 0.0
    # names of gone writers' streams the pass removed from the event log's index (the CLI
    # prunes it after each pass that is not a dry run)
    events_index_pruned: int = 0
    # events the CLI recorded for this pass (one per robot reaped, up to its --robot-events
    # cap, plus a summary) and not: the robots the cap left out (events_capped) and lost ones
    events_recorded: int = 0
    events_not_recorded: int = 0
    events_capped: int = 0

    def note(self, entry: Entry, reason: str, result: str, detail: str) -> None:
        """Record one item of the report (at most MAX_ITEMS_REPORTED are kept)."""
        if len(self.items) < MAX_ITEMS_REPORTED:
            self.items.append(
                {
                    "robot_id": entry.robot_id,
                    "instance_id": entry.instance_id,
                    "reason": reason,
                    "result": result,
                    "detail": detail,
                }
            )

    def summary(self) -> str:
        """One line for a person: what was examined, reaped (or would be) and kept."""
        verb = "would reap" if self.dry_run else "reaped"
        count = self.candidates if self.dry_run else self.reaped
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.by_reason.items())) or "none"
        text = (
            f"reap: examined {self.examined}, {verb} {count} ({reasons}), "
            f"kept refreshed {self.skipped_refreshed}, malformed kept {self.malformed_kept} "
            f"in {self.seconds:.2f}s"
        )
        if self.backup:
            text += f"; backup {self.backup}"
        return text

    def as_dict(self) -> dict[str, Any]:
        """The report as stable snake_case JSON."""
        return {
            "dry_run": self.dry_run,
            "timeout_s": self.timeout,
            "examined": self.examined,
            "candidates": self.candidates,
            "reaped": self.reaped,
            "skipped_refreshed": self.skipped_refreshed,
            "already_gone": self.already_gone,
            "malformed_kept": self.malformed_kept,
            "by_instance": dict(self.by_instance),
            "by_reason": dict(self.by_reason),
            "backup": self.backup,
            "seconds": round(self.seconds, 3),
            "events_index_pruned": self.events_index_pruned,
            "events_recorded": self.events_recorded,
            "events_not_recorded": self.events_not_recorded,
            "events_capped": self.events_capped,
            "items": self.items,
        }


def _choose(
    batch: list[Entry],
    now: datetime,
    options: ReapOptions,
    dead: DeadInstances | None,
    report: ReapReport,
) -> list[tuple[Entry, Reason, str]]:
    """The entries of one batch to reap, counting what was examined and kept."""
    chosen: list[tuple[Entry, Reason, str]] = []
    for entry in batch:
        report.examined += 1
        reason, detail = judge(entry, now, options, dead)
        if reason is None:
            if detail and (options.instance is None or entry.instance_id == options.instance):
                report.malformed_kept += 1
                report.note(entry, Reason.MALFORMED, "kept", detail + " (use --include-malformed)")
            continue
        if options.limit is not None and report.candidates >= options.limit:
            break
        report.candidates += 1
        chosen.append((entry, reason, detail))
    return chosen


# How reap's report names each delete outcome (the ``result`` of its items)
_RESULTS = {
    DeleteOutcome.DELETED: "reaped",
    DeleteOutcome.CHANGED: "skipped_refreshed",
    DeleteOutcome.GONE: "already_gone",
    DeleteOutcome.WOULD_DELETE: "would_reap",
}


def _tally(
    report: ReapReport, chosen: list[tuple[Entry, Reason, str]], outcomes: list[DeleteOutcome]
) -> list[tuple[Entry, str, str]]:
    """Account for one batch's compare-and-delete outcomes (``WOULD_DELETE`` in a dry run);
    returns the entries deleted, with reason and detail."""
    deleted: list[tuple[Entry, str, str]] = []
    for (entry, reason, detail), outcome in zip(chosen, outcomes, strict=True):
        if outcome is DeleteOutcome.DELETED:
            deleted.append((entry, reason.value, detail))
        if outcome in (DeleteOutcome.DELETED, DeleteOutcome.WOULD_DELETE):
            report.reaped += outcome is DeleteOutcome.DELETED
            report.by_instance[entry.instance_id or "-"] += 1
            report.by_reason[reason.value] += 1
        elif outcome is DeleteOutcome.CHANGED:
            report.skipped_refreshed += 1
        else:
            report.already_gone += 1
        report.note(entry, reason.value, _RESULTS[outcome], detail)
    return deleted


class DeadInstances:
    """Memoised per instance: its liveness and whether anyone listens on its channel; called
    with an entry, says whether its owner is known dead (:func:`owner_known_dead`)."""

    def __init__(self, store: RegistryStore, timeout: float) -> None:
        self.store = store
        self.timeout = timeout
        self.known: dict[str, tuple[bool, Liveness]] = {}

    async def check(self, instance_ids: set[str]) -> None:
        """Judge the instances of ``instance_ids`` not judged yet (record, then listeners)."""
        now = utcnow()
        for instance_id in instance_ids - set(self.known):
            record = await self.store.instance_record(instance_id)
            state = liveness(record, now, self.timeout)
            listening = state is not Liveness.ALIVE and await self.store.is_listening(instance_id)
            self.known[instance_id] = (listening, state)

    def __call__(self, entry: Entry) -> bool:
        seen = self.known.get(entry.instance_id or "")
        return seen is not None and owner_known_dead(*seen, bool(entry.conn_id))


# Called with each batch's deleted entries (entry, reason, detail), in batch order
Reaped = Callable[[list[tuple[Entry, str, str]]], Awaitable[None]]


async def reap(
    store: RegistryStore,
    options: ReapOptions,
    progress: Callable[[int], None] | None = None,
    on_reaped: Reaped | None = None,
) -> ReapReport:
    """One pass over the registry. Returns what was examined, reaped and kept, and why.

    Every entry is in ``options.backup`` before its delete starts, so a pass that fails
    part-way (Redis stalled or gone) has backed up what it removed.

    Args:
        progress: called after each batch with the number of entries examined so far.
        on_reaped: awaited with every batch's deleted entries (each one, uncapped: the
            report's ``items`` keep only the first MAX_ITEMS_REPORTED), e.g. to record events.
    """

    async def tally(chosen: list[tuple[Entry, Reason, str]], outcomes: list[DeleteOutcome]) -> None:
        deleted = _tally(report, chosen, outcomes)
        if deleted and on_reaped is not None:
            await on_reaped(deleted)

    started = time.perf_counter()
    report = ReapReport(dry_run=options.dry_run, timeout=options.timeout)
    dead = DeadInstances(store, options.timeout) if options.dead_instances else None
    backup = None if options.dry_run else options.backup
    # the deletes of one batch run while the next batch is scanned and read; the backup of a
    # batch is on disk before its deletes start, and outcomes are tallied in batch order
    in_flight: tuple[list[tuple[Entry, Reason, str]], asyncio.Task[list[DeleteOutcome]]] | None = (
        None
    )
    with BackupWriter(backup) as writer:
        try:
            async for batch in store.iter_batches():
                now = utcnow()
                if dead is not None:
                    await dead.check({e.instance_id for e in batch if e.instance_id})
                chosen = _choose(batch, now, options, dead, report)
                if in_flight is not None:
                    await tally(in_flight[0], await in_flight[1])
                    in_flight = None
                if chosen and not options.dry_run:
                    await store.attach_dumps([e for e, _, _ in chosen])
                    writer.write([(e, r.value) for e, r, _ in chosen], now)
                    in_flight = (
                        chosen,
                        asyncio.create_task(store.delete_observed([e for e, _, _ in chosen])),
                    )
                else:
                    await tally(chosen, [DeleteOutcome.WOULD_DELETE] * len(chosen))
                if progress is not None:
                    progress(report.examined)
                if options.limit is not None and report.candidates >= options.limit:
                    break
            if in_flight is not None:
                await tally(in_flight[0], await in_flight[1])
                in_flight = None
        finally:
            if in_flight is not None:  # an error elsewhere: let the started deletes finish
                # (their outcome is lost with the report; the error being raised is the news)
                with contextlib.suppress(Exception):
                    await in_flight[1]
    report.backup = str(backup) if backup is not None and writer.count else None
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class ReapLoop:
    """A long-lived reaper (``reap --every``): a pass every ``every`` seconds.

    Each pass writes its own backup file, named by its time, when ``options`` has one (so a
    file holds one pass); :attr:`backup` is the file of the pass running or last run, for an
    error that must say where the removed entries are.
    """

    options: ReapOptions
    every: float
    backup: Path | None = None

    async def passes(
        self, store: RegistryStore, stop: asyncio.Event, on_reaped: Reaped | None = None
    ) -> AsyncIterator[tuple[str, ReapReport]]:
        """Run passes until ``stop`` is set, yielding when each ended (UTC ISO) and its report
        (``on_reaped`` as for :func:`reap`; :attr:`backup` names the pass's file)."""
        while not stop.is_set():
            options = self.options
            if options.backup is not None and not options.dry_run:
                options = replace(options, backup=default_backup_path("reap", utcnow()))
            self.backup = options.backup
            report = await reap(store, options, on_reaped=on_reaped)
            yield format_ts(utcnow()), report
            with contextlib.suppress(TimeoutError):
                await wait_within(stop.wait(), timeout=self.every)
