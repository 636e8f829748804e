"""Per-instance aggregation of the registry (``wsctl list instances``).

The aggregation itself is pure (:class:`InstanceTally` takes ``now``); only
:func:`summarize_instances` reads Redis, streaming entries so memory grows with instances only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from wsctl.registry.instances import InstanceRecord, liveness
from wsctl.registry.model import Entry, State, assess, utcnow
from wsctl.registry.store import RegistryStore

__all__ = ["InstanceTally", "instance_rows", "summarize_instances", "tally"]


@dataclass
class InstanceTally:
    """Counts and heartbeat ages of one instance's entries."""

    instance_id: str
    connections: int = 0
    fresh: int = 0
    stale: int = 0
    malformed: int = 0
    newest: float | None = None
    oldest: float | None = None

    def add(self, entry: Entry, now: datetime, timeout: float) -> None:
        """Count one entry as fresh, stale or malformed at ``now``."""
        verdict = assess(entry, now, timeout)
        self.connections += 1
        if verdict.state is State.ONLINE:
            self.fresh += 1
        elif verdict.state is State.STALE:
            self.stale += 1
        else:
            self.malformed += 1
        age = verdict.heartbeat_age
        if age is not None:
            self.newest = age if self.newest is None else min(self.newest, age)
            self.oldest = age if self.oldest is None else max(self.oldest, age)


def tally(
    entries: Iterable[Entry],
    now: datetime,
    timeout: float,
    into: dict[str, InstanceTally] | None = None,
) -> dict[str, InstanceTally]:
    """Count entries per instance (into ``into`` when given, for streaming batches)."""
    out: dict[str, InstanceTally] = {} if into is None else into
    for entry in entries:
        key = entry.instance_id or ""
        out.setdefault(key, InstanceTally(key)).add(entry, now, timeout)
    return out


def instance_rows(
    tallies: dict[str, InstanceTally],
    records: Iterable[InstanceRecord],
    now: datetime,
    timeout: float,
) -> list[dict[str, Any]]:
    """One row per instance seen in ``tallies`` or ``records`` (``list instances``). Pure."""
    by_id = {r.instance_id: r for r in records}
    rows = []
    for instance_id in sorted(set(tallies) | set(by_id)):
        t = tallies.get(instance_id, InstanceTally(instance_id))
        record = by_id.get(instance_id)
        rows.append(
            {
                "instance_id": instance_id or None,
                "liveness": liveness(record, now, timeout).value,
                "draining": record.draining if record else None,
                "connections": t.connections,
                "fresh": t.fresh,
                "stale": t.stale,
                "malformed": t.malformed,
                "newest_heartbeat_age_s": None if t.newest is None else round(t.newest, 3),
                "oldest_heartbeat_age_s": None if t.oldest is None else round(t.oldest, 3),
                "reported_connections": record.connections if record else None,
                "ws_url": record.ws_url if record else None,
                "pid": record.pid if record else None,
                "version": record.version if record else None,
                "started_at": record.started_at if record else None,
            }
        )
    return rows


async def summarize_instances(
    store: RegistryStore, records: list[InstanceRecord], timeout: float
) -> list[dict[str, Any]]:
    """Tally every entry per instance (streamed) and join the liveness records."""
    tallies: dict[str, InstanceTally] = {}
    now = utcnow()
    async for batch in store.iter_batches():
        now = utcnow()
        tally(batch, now, timeout, into=tallies)
    return instance_rows(tallies, records, now, timeout)
