"""``wsctl doctor``: the registry versus reality.

Every live instance is asked for its local connection table (``inventory`` over the control
channel) and the tables are diffed against the registry. The diff (:func:`diagnose`) is pure:
it takes the gathered facts and ``now``. :func:`gather` is the thin I/O shell, :func:`fix`
applies only the safe repairs (fenced deletes of ghosts; asking an instance to re-register its
orphans).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from wsctl.durations import counted
from wsctl.ops.compat import Participation, classify, explain, how_to_join, writes_conn_id
from wsctl.ops.deployment import Deployment
from wsctl.protocol.envelopes import ROBOT_PING, ROBOT_PING_UNSUPPORTED, Envelope, Op, Reply, Status
from wsctl.protocol.rpc import Unreachable
from wsctl.registry.instances import InstanceRecord, Liveness, liveness
from wsctl.registry.keys import Keyspace
from wsctl.registry.model import F_CONNECTED_AT, Entry, State, assess, utcnow
from wsctl.registry.store import FENCE_FIELDS, DeleteOutcome
from wsctl.shell import command

__all__ = [
    "CHECK_LIVENESS",
    "CHECK_PING",
    "CHECK_SOCKETS",
    "GHOST_OUTCOMES",
    "GRACE_S",
    "INVENTORY_TIMEOUT",
    "MAX_FINDINGS_PER_KIND",
    "SAFE_FIXES",
    "DoctorReport",
    "Facts",
    "Finding",
    "Kind",
    "Session",
    "Severity",
    "confirm_ghosts",
    "diagnose",
    "doctor",
    "doctor_robot",
    "fix",
    "gather",
    "healthy",
    "not_checked",
]

# An entry younger than this when the inventory was asked may not be in it yet (and the
# reverse for sessions): such differences are in flight, not faults.
GRACE_S = 3.0
INVENTORY_TIMEOUT = 3.0
MAX_FINDINGS_PER_KIND = 200

# The fields doctor keeps of each entry while it asks the instances (the whole registry is held
# for the diff): the fencing set for --fix and connected_at for session identity. The rest is
# dropped, and the kept names are shared constants, halving memory on big registries.
_KEPT_FIELDS = (*FENCE_FIELDS, F_CONNECTED_AT)


class Severity(StrEnum):
    """How bad a finding is: errors and warnings make the fleet unhealthy (exit 1), info
    does not."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Kind(StrEnum):
    """What a finding is about, one stable name each (``kind`` in ``doctor -o json``); the
    docs/operate/doctor.md lists what each means and its fix."""

    GHOST = "ghost"
    NOT_REGISTERED = "not_registered"
    ORPHAN = "orphan"
    SPLIT = "split_owner"
    STALE_SESSION = "stale_session"
    DEAD_OWNER = "dead_owner"
    UNKNOWN_OWNER = "unknown_owner"
    NOT_SUBSCRIBED = "not_subscribed"
    NO_REPLY = "no_reply"
    CLOCK_SKEW = "clock_skew"
    MALFORMED = "malformed"
    STALE = "stale"
    PREFIX_COLLISION = "prefix_collision"
    UNCOVERED_SLOTS = "uncovered_slots"
    ROBOT_UNREACHABLE = "robot_unreachable"
    NOT_CHECKED = "not_checked"


SAFE_FIXES = frozenset({Kind.GHOST, Kind.ORPHAN})
# How ``doctor --fix`` reports each delete outcome of a ghost
GHOST_OUTCOMES = {
    DeleteOutcome.DELETED: "removed",
    DeleteOutcome.CHANGED: "changed since; kept",
    DeleteOutcome.GONE: "already gone",
    DeleteOutcome.WOULD_DELETE: "would remove",
}


@dataclass(frozen=True)
class Finding:
    """One problem doctor found: its kind and severity, what it saw (``detail``), the
    command that fixes it (shell-quoted), and the robot or instance concerned."""

    kind: Kind
    severity: Severity
    detail: str
    fix: str
    robot_id: str | None = None
    instance_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The finding as the stable JSON object of ``doctor -o json``; ``safe_fix`` says
        whether ``doctor --fix`` applies it."""
        return {
            "kind": self.kind.value,
            "severity": self.severity.value,
            "robot_id": self.robot_id,
            "instance_id": self.instance_id,
            "detail": self.detail,
            "fix": self.fix,
            "safe_fix": self.kind in SAFE_FIXES,
        }


@dataclass(frozen=True)
class Session:
    """One WebSocket session an instance reported holding in its inventory: the robot,
    the session's conn_id, and when it connected (epoch seconds)."""

    robot_id: str
    conn_id: str
    since: float


@dataclass
class Facts:
    """Everything gathered from Redis and the instances (the input of :func:`diagnose`)."""

    entries: dict[str, Entry] = field(default_factory=dict)
    records: dict[str, InstanceRecord] = field(default_factory=dict)
    listening: dict[str, bool] = field(default_factory=dict)
    inventories: dict[str, list[Session]] = field(default_factory=dict)
    no_reply: set[str] = field(default_factory=set)
    asked_at: float = 0.0
    cluster: dict[str, Any] | None = None
    keys_per_node: dict[str, int] = field(default_factory=dict)
    keyspace: Keyspace = field(default_factory=Keyspace)


# What doctor checks of an instance, by the names ``not_checked`` lists when it could not.
CHECK_SOCKETS = "sockets"  # its socket inventory against the registry (ghosts, orphans, splits)
CHECK_LIVENESS = "liveness"  # its liveness record
CHECK_PING = "robot_ping"  # doctor ROBOT: a WebSocket ping through it
_CHECK_TEXT = {
    CHECK_SOCKETS: "its sockets against the registry (ghosts, orphans, split owners)",
    CHECK_LIVENESS: "its liveness",
    CHECK_PING: "a ping of the robot through it",
}


def not_checked(facts: Facts, instance_id: str, state: Liveness) -> list[str]:
    """The checks doctor could not make for ``instance_id``."""
    missing = []
    if instance_id not in facts.inventories:
        missing.append(CHECK_SOCKETS)
    if state is Liveness.UNKNOWN:
        missing.append(CHECK_LIVENESS)
    return missing


def _not_checked_finding(
    instance_id: str, checks: list[str], why: str, participation: Participation
) -> Finding:
    what = " and ".join(_CHECK_TEXT[c] for c in checks)
    joins = participation in (Participation.NO_CONTROL_PROTOCOL, Participation.DOWN_OR_UNKNOWN)
    return Finding(
        Kind.NOT_CHECKED,
        Severity.INFO,
        f"could not check {what}: {why}",
        how_to_join() if joins else "see this instance's other findings",
        instance_id=instance_id,
    )


def _epoch(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else 0.0


def diagnose(facts: Facts, now: datetime, timeout: float, prefix: str) -> list[Finding]:
    """The findings for ``facts`` at ``now``. Pure."""
    out: list[Finding] = []
    owners = {e.instance_id for e in facts.entries.values() if e.instance_id}
    instances = owners | set(facts.records) | set(facts.inventories)
    live = {i: liveness(facts.records.get(i), now, timeout) for i in instances}
    fleet_has_records = bool(facts.records)
    conn_ids = writes_conn_id(facts.entries.values())

    for instance_id in sorted(instances):
        state = live[instance_id]
        if state is Liveness.ALIVE and not facts.listening.get(instance_id, False):
            out.append(
                Finding(
                    Kind.NOT_SUBSCRIBED,
                    Severity.ERROR,
                    "alive (fresh liveness record) but nobody listens on its control channel: "
                    "messages cannot be forwarded to its robots",
                    f"check the instance's logs and restart it ({instance_id})",
                    instance_id=instance_id,
                )
            )
        if instance_id in facts.no_reply:
            out.append(
                Finding(
                    Kind.NO_REPLY,
                    Severity.ERROR,
                    "listens on its control channel but did not answer an inventory request",
                    f"check the instance ({instance_id}); it may be overloaded or stuck",
                    instance_id=instance_id,
                )
            )
        checks = not_checked(facts, instance_id, state)
        if checks:
            listening = facts.listening.get(instance_id, False)
            participation = classify(listening, state, conn_ids.get(instance_id))
            why = (
                "it listens on its control channel but did not answer the inventory request"
                if instance_id in facts.no_reply
                else "it writes no liveness record"
                if listening
                else explain(
                    instance_id, facts.keyspace.control_channel(instance_id), participation
                )
            )
            out.append(_not_checked_finding(instance_id, checks, why, participation))
        count = sum(1 for e in facts.entries.values() if e.instance_id == instance_id)
        if count and state is not Liveness.ALIVE and not facts.listening.get(instance_id, False):
            # dead only as `reap --dead-instances` judges it (wsctl.ops.reap.owner_known_dead):
            # an owner with no record whose entries carry no conn_id may be a live
            # original-design gateway
            if state is Liveness.DEAD or conn_ids.get(instance_id, False):
                out.append(
                    Finding(
                        Kind.DEAD_OWNER,
                        Severity.ERROR,
                        f"{counted(count, 'entry', 'entries')} owned by an instance with no "
                        "liveness record that does "
                        "not listen: its robots are unreachable",
                        command("wsctl", "reap", "--dead-instances", "--instance", instance_id),
                        instance_id=instance_id,
                    )
                )
            else:
                out.append(
                    Finding(
                        Kind.UNKNOWN_OWNER,
                        Severity.INFO,
                        f"{counted(count, 'entry', 'entries')} owned by an instance that writes "
                        "no liveness record "
                        "(an original-design gateway?): its liveness cannot be checked",
                        "check the instance by its own means (health endpoint, logs); gateways "
                        "that write liveness records (wsctl gateway, docs/protocol.md) are "
                        "checked by doctor",
                        instance_id=instance_id,
                    )
                )

    # registry side
    stale_by_instance: Counter[str] = Counter()
    for entry in facts.entries.values():
        verdict = assess(entry, now, timeout)
        if verdict.state is State.MALFORMED:
            kind = Kind.CLOCK_SKEW if verdict.clock_skew else Kind.MALFORMED
            out.append(
                Finding(
                    kind,
                    Severity.WARNING,
                    verdict.reason,
                    "check the writer's clock and --naive-tz"
                    if kind is Kind.CLOCK_SKEW
                    else "wsctl reap --include-malformed --dry-run",
                    robot_id=entry.robot_id,
                    instance_id=entry.instance_id,
                )
            )
            continue
        if verdict.state is State.STALE:
            stale_by_instance[entry.instance_id or "-"] += 1
        owner = entry.instance_id
        if owner in facts.inventories:
            sessions = {s.robot_id: s for s in facts.inventories[owner]}
            session = sessions.get(entry.robot_id)
            fresh = _epoch(entry.connected_at) > facts.asked_at - GRACE_S
            if session is None and not fresh:
                out.append(
                    Finding(
                        Kind.GHOST,
                        Severity.WARNING,
                        f"registered to {owner}, which holds no socket for it",
                        "wsctl doctor --fix (or: "
                        + command("wsctl", "registry", "rm", entry.robot_id)
                        + ")",
                        robot_id=entry.robot_id,
                        instance_id=owner,
                    )
                )
            elif session is not None and entry.conn_id and session.conn_id != entry.conn_id:
                out.append(
                    Finding(
                        Kind.STALE_SESSION,
                        Severity.INFO,
                        f"{owner} holds session {session.conn_id[:8]} but the registry names "
                        f"{entry.conn_id[:8]}; the instance closes it at its next heartbeat",
                        "none needed; if it persists, restart the instance",
                        robot_id=entry.robot_id,
                        instance_id=owner,
                    )
                )
    for instance_id, count in sorted(stale_by_instance.items()):
        out.append(
            Finding(
                Kind.STALE,
                Severity.WARNING,
                f"{counted(count, 'entry', 'entries')} without a heartbeat for more than "
                f"{timeout:g}s",
                command("wsctl", "reap", "--timeout", f"{timeout:g}", "--instance", instance_id)
                + " --dry-run",
                instance_id=instance_id,
            )
        )

    # instance side
    for instance_id, held in sorted(facts.inventories.items()):
        for sess in held:
            if sess.since > facts.asked_at - GRACE_S:
                continue  # connected while we were asking
            registered = facts.entries.get(sess.robot_id)
            if registered is None:
                out.append(
                    Finding(
                        Kind.ORPHAN,
                        Severity.WARNING,
                        f"connected to {instance_id} but has no registry entry",
                        "wsctl doctor --fix (asks the instance to re-register)",
                        robot_id=sess.robot_id,
                        instance_id=instance_id,
                    )
                )
            elif registered.instance_id and registered.instance_id != instance_id:
                out.append(
                    Finding(
                        Kind.SPLIT,
                        Severity.WARNING,
                        f"connected to {instance_id} but registered to {registered.instance_id}",
                        f"{instance_id} closes its session at its next heartbeat; if it "
                        "persists: "
                        + command("wsctl", "send", sess.robot_id, "...", "--trace")
                        + " to find where it lives",
                        robot_id=sess.robot_id,
                        instance_id=instance_id,
                    )
                )

    # keyspace
    styles = Counter("wsctl" if e.conn_id else "original" for e in facts.entries.values())
    foreign = [
        i for i in owners if live.get(i) is not Liveness.ALIVE and not facts.listening.get(i, False)
    ]
    if fleet_has_records and styles["wsctl"] and styles["original"] and foreign:
        out.append(
            Finding(
                Kind.PREFIX_COLLISION,
                Severity.WARNING,
                f"entries under {prefix!r} come from wsctl gateways and from {len(foreign)} "
                "instance(s) that are not part of this fleet: several deployments may share "
                "the prefix",
                "give each deployment its own prefix (WSCTL_PREFIX / the gateways' config)",
            )
        )
    if facts.cluster and facts.cluster.get("uncovered_slots"):
        out.append(
            Finding(
                Kind.UNCOVERED_SLOTS,
                Severity.ERROR,
                f"{facts.cluster['uncovered_slots']} hash slots are not served "
                f"({', '.join(facts.cluster['uncovered_ranges'][:5])})",
                "check the cluster (redis-cli --cluster check)",
            )
        )
    return _cap(out)


def healthy(findings: Iterable[Finding]) -> bool:
    """Doctor's verdict: healthy unless a finding is a warning or an error (``info`` findings,
    such as checks that could not be made, do not count)."""
    return all(f.severity is Severity.INFO for f in findings)


def _cap(findings: list[Finding]) -> list[Finding]:
    seen: Counter[Kind] = Counter()
    capped = []
    for finding in findings:
        seen[finding.kind] += 1
        if seen[finding.kind] <= MAX_FINDINGS_PER_KIND:
            capped.append(finding)
    return capped


def _sessions(reply: Reply) -> list[Session]:
    rows = reply.data.get("connections", [])
    return [
        Session(str(r.get("robot_id")), str(r.get("conn_id")), float(r.get("since", 0.0)))
        for r in rows
        if isinstance(r, dict)
    ]


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
            facts.inventories[instance_id] = _sessions(reply)
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


def rm_this_entry(entry: Entry) -> str:
    """The command that removes exactly this entry, and only while it is this session (its
    ``conn_id``; for entries without one, its owner): a fix scoped to the one robot a finding
    is about, never a reap of the fleet."""
    if entry.conn_id:
        return command("wsctl", "registry", "rm", entry.robot_id, "--if-conn-id", entry.conn_id)
    if entry.instance_id:
        return command(
            "wsctl", "registry", "rm", entry.robot_id, "--if-instance", entry.instance_id
        )
    return command("wsctl", "registry", "rm", entry.robot_id)


async def doctor_robot(store: Deployment, robot_id: str, timeout: float) -> dict[str, Any]:
    """Everything known about one robot end to end, with findings and a ping through the route."""
    findings: list[Finding] = []
    now = utcnow()
    entry = await store.get(robot_id)
    result: dict[str, Any] = {"robot_id": robot_id, "registered": entry is not None}

    def add(kind: Kind, severity: Severity, detail: str, fix_hint: str) -> None:
        findings.append(Finding(kind, severity, detail, fix_hint, robot_id, owner))

    owner = entry.instance_id if entry is not None else None
    if entry is None:
        add(
            Kind.NOT_REGISTERED,
            Severity.ERROR,
            "no registry entry: the robot is not connected to any instance (or never was)",
            "is the robot running? check its logs and the gateway it should connect to",
        )
    else:
        verdict = assess(entry, now, timeout)
        result.update(
            {
                "state": verdict.state.value,
                "heartbeat_age_s": verdict.heartbeat_age,
                "fields": dict(entry.fields),
                "owner": owner,
            }
        )
        if verdict.state is State.MALFORMED:
            kind = Kind.CLOCK_SKEW if verdict.clock_skew else Kind.MALFORMED
            add(kind, Severity.WARNING, verdict.reason, "wsctl registry set / rm to repair it")
        elif verdict.state is State.STALE:
            add(Kind.STALE, Severity.WARNING, verdict.reason, rm_this_entry(entry))
    if owner:
        state = liveness(await store.instance_record(owner), now, timeout)
        listening = await store.is_listening(owner)
        result["owner_liveness"] = state.value
        result["owner_listening"] = listening
        participation = classify(listening, state, bool(entry.conn_id) if entry else None)
        checks = ([] if listening else [CHECK_SOCKETS, CHECK_PING]) + (
            [CHECK_LIVENESS] if state is Liveness.UNKNOWN else []
        )
        result["not_checked"] = checks
        why = (
            "it writes no liveness record"
            if listening
            else explain(owner, store.keys.control_channel(owner), participation)
        )
        if checks:
            findings.append(_not_checked_finding(owner, checks, why, participation))
        if participation is Participation.NO_CONTROL_PROTOCOL:
            pass  # an original-design owner is not dead for not listening: it never does
        elif not listening and state is Liveness.ALIVE:
            add(
                Kind.NOT_SUBSCRIBED,
                Severity.ERROR,
                f"owner {owner} is alive (fresh liveness record) but does not listen on its "
                "control channel",
                f"check the instance's logs and restart it ({owner}); its robots are not "
                "reaped, it is not dead",
            )
        elif not listening:
            assert entry is not None  # an owner comes from the entry
            add(
                Kind.DEAD_OWNER,
                Severity.ERROR,
                f"owner {owner} does not listen on its control channel",
                rm_this_entry(entry),
            )
        else:
            inventory = await store.request(
                owner,
                Envelope(op=Op.INVENTORY, origin="doctor"),
                INVENTORY_TIMEOUT,
            )
            sessions = {s.robot_id: s for s in _sessions(inventory)} if inventory else {}
            session = sessions.get(robot_id)
            result["owner_holds_socket"] = session is not None
            result["owner_session_matches"] = bool(
                session and entry and (not entry.conn_id or session.conn_id == entry.conn_id)
            )
            if inventory is None:
                add(Kind.NO_REPLY, Severity.ERROR, f"owner {owner} did not answer", "check it")
            elif session is None:
                add(
                    Kind.GHOST,
                    Severity.WARNING,
                    f"owner {owner} holds no socket for it",
                    command("wsctl", "registry", "rm", robot_id),
                )
            ping = await store.request(
                owner,
                Envelope(op=Op.PING, robot_id=robot_id, origin="doctor"),
                INVENTORY_TIMEOUT,
            )
            unsupported = ping is not None and (ping.data.get(ROBOT_PING) == ROBOT_PING_UNSUPPORTED)
            if ping is not None and ping.status is Status.PONG:
                result["ping"] = {
                    "ok": True,
                    "supported": not unsupported,
                    "robot_rtt_ms": ping.data.get("robot_rtt_ms"),
                    "route": [h.instance for h in ping.route],
                    "total_ms": round(ping.total_ms, 3),
                }
                if unsupported:
                    add(
                        Kind.NOT_CHECKED,
                        Severity.INFO,
                        f"robot ping unsupported by {owner}'s transport (Starlette has no "
                        "WebSocket ping): it holds the socket, the robot was not probed",
                        "rely on the server's keepalive (uvicorn --ws-ping-interval)",
                    )
            else:
                reason = ping.reason if ping is not None else "no reply"
                result["ping"] = {"ok": False, "reason": reason}
                add(
                    Kind.ROBOT_UNREACHABLE,
                    Severity.ERROR,
                    f"ping through {owner} failed: {reason}",
                    command("wsctl", "send", robot_id, "...", "--trace"),
                )
    result["findings"] = [f.as_dict() for f in findings]
    result["healthy"] = healthy(findings)
    return result
