"""Doctor's pure diff: the facts gathered about a fleet (registry entries, liveness records,
listeners, every live instance's socket inventory, cluster coverage) judged at ``now`` into
findings, each with its kind, severity, what it means and what to do. No I/O."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from wsctl.durations import counted
from wsctl.ops.compat import Participation, classify, explain, how_to_join, writes_conn_id
from wsctl.protocol.envelopes import Reply
from wsctl.registry.instances import InstanceRecord, Liveness, liveness
from wsctl.registry.keys import Keyspace
from wsctl.registry.model import Entry, State, assess
from wsctl.shell import command

__all__ = [
    "CHECK_LIVENESS",
    "CHECK_PING",
    "CHECK_SOCKETS",
    "GRACE_S",
    "MAX_FINDINGS_PER_KIND",
    "SAFE_FIXES",
    "Facts",
    "Finding",
    "Kind",
    "Session",
    "Severity",
    "diagnose",
    "healthy",
    "inventory_sessions",
    "not_checked",
    "not_checked_finding",
]


# An entry younger than this when the inventory was asked may not be in it yet (and the
# reverse for sessions): such differences are in flight, not faults.
GRACE_S = 3.0


MAX_FINDINGS_PER_KIND = 200


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


def not_checked_finding(
    instance_id: str, checks: list[str], why: str, participation: Participation
) -> Finding:
    """The ``info`` finding that says which checks of ``instance_id`` could not be made, why,
    and how its kind of gateway joins the control protocol."""
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
            out.append(not_checked_finding(instance_id, checks, why, participation))
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


def inventory_sessions(reply: Reply) -> list[Session]:
    """The sessions of an ``inventory`` reply (malformed rows left out)."""
    rows = reply.data.get("connections", [])
    return [
        Session(str(r.get("robot_id")), str(r.get("conn_id")), float(r.get("since", 0.0)))
        for r in rows
        if isinstance(r, dict)
    ]
