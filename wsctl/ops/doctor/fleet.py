"""``wsctl doctor``: the registry versus reality.

Every live instance is asked for its local connection table (``inventory`` over the control
channel) and the tables are diffed against the registry. The diff
(:func:`~wsctl.ops.doctor.diagnose.diagnose`) is pure: it takes the gathered facts and
``now``. :func:`gather` is the thin I/O shell, :func:`fix`
applies only the safe repairs (fenced deletes of ghosts; asking an instance to re-register its
orphans).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from wsctl.ops.deployment import Deployment
from wsctl.ops.doctor.diagnose import (
    Facts,
    Finding,
    Kind,
    diagnose,
    healthy,
    inventory_sessions,
    not_checked,
)
from wsctl.protocol.envelopes import Envelope, Op, Reply, Status
from wsctl.protocol.rpc import Unreachable
from wsctl.registry.instances import liveness
from wsctl.registry.model import F_CONNECTED_AT, Entry, utcnow
from wsctl.registry.store import FENCE_FIELDS, DeleteOutcome

__all__ = [
    "GHOST_OUTCOMES",
    "INVENTORY_TIMEOUT",
    "DoctorReport",
    "confirm_ghosts",
    "doctor",
    "fix",
    "gather",
]

INVENTORY_TIMEOUT = 3.0

# The fields doctor keeps of each entry while it asks the instances (the whole registry is held
# for the diff): the fencing set for --fix and connected_at for session identity. The rest is
# dropped, and the kept names are shared constants, halving memory on big registries.
_KEPT_FIELDS = (*FENCE_FIELDS, F_CONNECTED_AT)


# How ``doctor --fix`` reports each delete outcome of a ghost
GHOST_OUTCOMES = {
    DeleteOutcome.DELETED: "removed",
    DeleteOutcome.CHANGED: "changed since; kept",
    DeleteOutcome.GONE: "already gone",
    DeleteOutcome.WOULD_DELETE: "would remove",
}


async def gather(store: Deployment, timeout: float) -> Facts:
    """Read the registry, liveness records, subscriber counts and every live inventory."""
    facts = Facts(keyspace=store.keys)
    async for record in store.instance_records():
        facts.records[record.instance_id] = record
    facts.asked_at = time.time()
    candidates = set(facts.records)
    # entries first seen below may name more instances; ask those that listen too
    async for batch in store.iter_batches():
        for entry in batch:
            fields = entry.fields
            entry.fields = {name: fields[name] for name in _KEPT_FIELDS if name in fields}
            facts.entries[entry.robot_id] = entry
            if entry.instance_id:
                candidates.add(entry.instance_id)
    for instance_id in sorted(candidates):
        facts.listening[instance_id] = await store.is_listening(instance_id)
    targets = [
        (i, Envelope(op=Op.INVENTORY, origin="doctor")) for i, ok in facts.listening.items() if ok
    ]
    replies = await store.gather_requests(targets, INVENTORY_TIMEOUT)
    for instance_id, reply in replies.items():
        if isinstance(reply, Reply) and reply.status is Status.INVENTORY:
            facts.inventories[instance_id] = inventory_sessions(reply)
        elif not isinstance(reply, Unreachable):
            facts.no_reply.add(instance_id)
    facts.cluster, facts.keys_per_node = await store.cluster_view()
    return facts


@dataclass
class DoctorReport:
    """The result of :func:`doctor`: findings, the facts they were judged on, when and
    with which liveness timeout, and what ``--fix`` did."""

    findings: list[Finding]
    facts: Facts
    now: datetime
    timeout: float
    fixed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """True when no finding is worse than informational."""
        return healthy(self.findings)

    def as_dict(self) -> dict[str, Any]:
        """The report as the JSON document of ``doctor -o json``."""
        by_severity = Counter(f.severity.value for f in self.findings)
        return {
            "healthy": self.healthy,
            "entries": len(self.facts.entries),
            "instances": self.instance_rows(),
            "cluster": self.facts.cluster,
            "keys_per_node": self.facts.keys_per_node,
            "counts": dict(by_severity),
            "findings": [f.as_dict() for f in self.findings],
            "fixed": self.fixed,
        }

    def instance_rows(self) -> list[dict[str, Any]]:
        """One row per instance seen (owning entries, writing a liveness record or
        answering inventory): liveness, listening, entries owned and sockets held."""
        facts = self.facts
        owned = Counter(e.instance_id for e in facts.entries.values() if e.instance_id)
        names = sorted(set(owned) | set(facts.records) | set(facts.inventories))
        return [
            {
                "instance_id": i,
                "liveness": liveness(facts.records.get(i), self.now, self.timeout).value,
                "listening": facts.listening.get(i, False),
                "entries": owned.get(i, 0),
                "sockets": len(facts.inventories[i]) if i in facts.inventories else None,
                "not_checked": not_checked(
                    facts, i, liveness(facts.records.get(i), self.now, self.timeout)
                ),
            }
            for i in names
        ]


async def doctor(store: Deployment, timeout: float) -> DoctorReport:
    """Check the whole fleet: read the registry and liveness records, ask each listening
    instance for its inventory, diff them, and return the findings.

    Ghost findings whose entry changed meanwhile are dropped (a robot that moved while
    instances were asked is not a fault). ``timeout`` is the fleet's liveness timeout."""
    facts = await gather(store, timeout)
    now = utcnow()
    findings = diagnose(facts, now, timeout, store.keys.prefix)
    return DoctorReport(await confirm_ghosts(store, findings, facts), facts, now, timeout)


def _session(entry: Entry) -> tuple[str | None, str | None]:
    """What identifies one registration: its conn_id, and for the original code's entries
    (which have none) when it connected."""
    return entry.conn_id, entry.fields.get(F_CONNECTED_AT)


async def confirm_ghosts(store: Deployment, findings: list[Finding], facts: Facts) -> list[Finding]:
    """Drop ghost findings whose entry changed since the registry was read (the robot left or
    reconnected while the instances were being asked): on a busy fleet these are not faults."""
    ghosts = [f.robot_id for f in findings if f.kind is Kind.GHOST and f.robot_id]
    if not ghosts:
        return findings
    now_entries = {
        e.robot_id: e for e in await store.read_keys([store.keys.conn_key(r) for r in ghosts])
    }
    stale: set[str] = set()
    for robot_id in ghosts:
        before, after = facts.entries.get(robot_id), now_entries.get(robot_id)
        if after is None or before is None or _session(after) != _session(before):
            stale.add(robot_id)
        else:
            facts.entries[robot_id] = after
    return [f for f in findings if not (f.kind is Kind.GHOST and f.robot_id in stale)]


async def fix(store: Deployment, report: DoctorReport, dry_run: bool) -> list[dict[str, Any]]:
    """Apply the safe fixes: fenced deletes of ghosts, a resync request per orphan owner."""
    done: list[dict[str, Any]] = []
    ghosts = [
        report.facts.entries[f.robot_id]
        for f in report.findings
        if f.kind is Kind.GHOST and f.robot_id in report.facts.entries
    ]
    if ghosts:
        results = (
            [DeleteOutcome.WOULD_DELETE] * len(ghosts)
            if dry_run
            else await store.delete_observed(ghosts)
        )
        for entry, result in zip(ghosts, results, strict=True):
            done.append(
                {"kind": "ghost", "robot_id": entry.robot_id, "result": GHOST_OUTCOMES[result]}
            )
    owners = sorted(
        {f.instance_id for f in report.findings if f.kind is Kind.ORPHAN and f.instance_id}
    )
    for instance_id in owners:
        if dry_run:
            done.append({"kind": "orphan", "instance_id": instance_id, "result": "would resync"})
            continue
        try:
            reply = await store.request(instance_id, Envelope(op=Op.RESYNC, origin="doctor"), 5.0)
        except Unreachable:
            reply = None
        answer = (
            f"re-registered {reply.data.get('reregistered', 0)}"
            if reply is not None and reply.status is Status.RESYNCED
            else "no answer"
        )
        done.append({"kind": "orphan", "instance_id": instance_id, "result": answer})
    return done
