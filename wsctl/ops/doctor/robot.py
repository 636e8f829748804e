"""``wsctl doctor ROBOT``: one robot's entry, its owner's liveness and listener, the owner's
socket inventory and a WebSocket ping through it, each judged with what to do next."""

from __future__ import annotations

from typing import Any

from wsctl.ops.compat import Participation, classify, explain
from wsctl.ops.deployment import Deployment
from wsctl.ops.doctor.diagnose import (
    CHECK_LIVENESS,
    CHECK_PING,
    CHECK_SOCKETS,
    Finding,
    Kind,
    Severity,
    healthy,
    inventory_sessions,
    not_checked_finding,
)
from wsctl.ops.doctor.fleet import INVENTORY_TIMEOUT
from wsctl.protocol.envelopes import ROBOT_PING, ROBOT_PING_UNSUPPORTED, Envelope, Op, Status
from wsctl.registry.instances import Liveness, liveness
from wsctl.registry.model import Entry, State, assess, utcnow
from wsctl.shell import command

__all__ = [
    "doctor_robot",
    "rm_this_entry",
]


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
            findings.append(not_checked_finding(owner, checks, why, participation))
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
            sessions = {s.robot_id: s for s in inventory_sessions(inventory)} if inventory else {}
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
