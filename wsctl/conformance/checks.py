"""The conformance kit's checks: what each verifies, at which level, the protocol section it
tests, what it needs first and when it runs. Pure: no I/O, no clock.

Every check tests one rule of docs/protocol.md at one level of participation (§1): 0 the
registry, 1 fencing and heartbeats, 2 the control channel. A check ends ``pass``, ``fail``
(with what was expected and what was seen) or ``n/a``: not applicable (the gateway does not
offer an optional part, or the kit may not do what the check needs, such as freezing Redis),
or not run because a check it needs failed first (``blocked_by`` names it).

:mod:`wsctl.conformance.results` holds the results and the levels reached,
:mod:`wsctl.conformance.judgements` the pure judgements of what the gateway left in Redis or
sent back; the probes (:mod:`wsctl.conformance.probes`) gather the facts and hand them over.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

__all__ = [
    "CHECKS",
    "LEVELS",
    "PROTOCOL_DOC",
    "CheckSpec",
    "Phase",
    "Verdict",
    "check_ids",
    "spec",
]

PROTOCOL_DOC = "docs/protocol.md"
LEVELS = (0, 1, 2)


class Verdict(StrEnum):
    """How one check ended."""

    PASS = "pass"
    FAIL = "fail"
    NA = "n/a"


class Phase(IntEnum):
    """When a check runs. Checks of one phase run after every check of the phases before;
    ``PARALLEL`` checks run at the same time (each with robots of its own), the others one
    at a time, because they act on the whole instance (re-register every session, drain it,
    freeze its Redis) or read what the others left (the event log)."""

    GATE = 0  # what every other check needs: a robot's entry, the control channel
    PARALLEL = 1
    EXCLUSIVE = 2
    LAST = 3


@dataclass(frozen=True)
class CheckSpec:
    """One check: its id (``area.name``), level, the protocol section it tests (``§4``) and
    that section's anchor in docs/protocol.md, what it verifies, the checks whose failure
    leaves nothing for it to verify, and its phase."""

    id: str
    level: int
    section: str
    anchor: str
    title: str
    requires: tuple[str, ...] = ()
    phase: Phase = Phase.PARALLEL

    @property
    def doc(self) -> str:
        """Where the rule is written: ``docs/protocol.md#anchor``."""
        return f"{PROTOCOL_DOC}#{self.anchor}"


_ENTRY = ("registry.entry",)
_LISTEN = ("control.listening",)
_REPLIES = ("control.replies",)

_S3 = ("§3", "3-keys-and-fields")
_S4 = ("§4", "4-sessions-and-the-conn_id-fencing-rule")
_S4_REG = ("§4", "register")
_S4_DISC = ("§4", "disconnect")
_S5 = ("§5", "5-heartbeats")
_S6 = ("§6", "6-the-liveness-record")
_S7 = ("§7", "7-the-control-channel")
_S2 = ("§2", "2-redis")
_S8 = ("§8", "8-envelopes")
_S10_PING = ("§10", "ping")
_S10_INV = ("§10", "inventory")
_S10_RESYNC = ("§10", "resync")
_S10_KICK = ("§10", "kick")
_S10_DRAIN = ("§10", "drain")
_S10_UNDRAIN = ("§10", "undrain")
_S11 = ("§11", "11-routing-a-send-hop-limit-and-ordering")
_S12 = ("§12", "12-the-robot-side")
_S16 = ("§16", "16-batched-sends-version-2")
_S16_HINTS = ("§16", "owner-hints")
_S16_BUNDLES = ("§16", "reply-bundles")
_S17 = ("§17", "17-the-event-log-optional")


def _c(
    ident: str,
    level: int,
    where: tuple[str, str],
    title: str,
    requires: tuple[str, ...] = _ENTRY,
    phase: Phase = Phase.PARALLEL,
) -> CheckSpec:
    return CheckSpec(ident, level, where[0], where[1], title, requires, phase)


# Every check, in the order the report lists them (by level, then as the protocol reads).
CHECKS: tuple[CheckSpec, ...] = (
    # level 0: the registry
    _c(
        "registry.entry",
        0,
        _S3,
        "a robot's connect creates its entry ws_conn:{robot_id}, naming the instance",
        (),
        Phase.GATE,
    ),
    _c(
        "registry.fields",
        0,
        _S3,
        "the entry holds robot_id, status connected and websocket_state active",
        phase=Phase.GATE,
    ),
    _c(
        "registry.timestamps",
        0,
        _S3,
        "connected_at and last_heartbeat parse, not in the future",
        phase=Phase.GATE,
    ),
    _c(
        "registry.instance_id",
        0,
        _S6,
        "the instance id is the same for every session",
        phase=Phase.GATE,
    ),
    _c(
        "registry.disconnect",
        0,
        _S4_DISC,
        "the robot's disconnect removes its entry",
        phase=Phase.GATE,
    ),
    # level 1: fencing and heartbeats
    _c("fencing.conn_id", 1, _S4, "every session writes a fresh conn_id into its entry"),
    _c(
        "fencing.late_disconnect",
        1,
        _S4,
        "a late disconnect never erases the entry of the robot's newer session elsewhere",
    ),
    _c(
        "fencing.supersede_local",
        1,
        _S4_REG,
        "a second socket of a robot closes the first with 4001; the entry stays the newer one's",
    ),
    _c(
        "heartbeat.refresh",
        1,
        _S5,
        "last_heartbeat is refreshed every interval while the robot sends nothing",
    ),
    _c(
        "heartbeat.reregister",
        1,
        _S5,
        "an entry that vanished (Redis flushed) is written again by the next heartbeat",
    ),
    _c(
        "heartbeat.superseded",
        1,
        _S5,
        "a session whose entry names another session is closed with 4001, the entry untouched",
    ),
    _c(
        "heartbeat.no_resurrect",
        1,
        _S5,
        "the entry of a closed session is never written again",
    ),
    _c(
        "faults.bad_bytes",
        1,
        _S12,
        "a robot sending bad bytes ends at most its own session, and cleanly",
    ),
    _c(
        "faults.redis_frozen",
        1,
        _S2,
        "Redis frozen for a while: sockets kept, a robot accepted meanwhile registered after",
        phase=Phase.EXCLUSIVE,
    ),
    # level 2: the liveness record and the control channel
    _c("liveness.record", 2, _S6, "a liveness record with every field, a TTL, refreshed"),
    _c(
        "control.listening",
        2,
        _S7,
        "the instance listens on ws_ctl:{instance_id}",
        phase=Phase.GATE,
    ),
    _c(
        "control.replies",
        2,
        _S7,
        "every request gets exactly one reply, carrying its id, the instance and the route",
        _LISTEN,
        Phase.GATE,
    ),
    _c(
        "control.ping",
        2,
        _S10_PING,
        "ping answers pong with connections and version; a robot ping pong or not_connected",
        _REPLIES,
    ),
    _c(
        "control.inventory",
        2,
        _S10_INV,
        "inventory lists the sessions held with their conn_id",
        _REPLIES,
    ),
    _c(
        "control.resync",
        2,
        _S10_RESYNC,
        "resync writes the missing entries of held sessions again at once",
        _REPLIES,
        Phase.EXCLUSIVE,
    ),
    _c(
        "control.malformed",
        2,
        _S8,
        "malformed envelopes are dropped without a reply or harm; unknown fields are ignored",
        _REPLIES,
    ),
    _c(
        "send.delivered",
        2,
        _S11,
        "send to a robot held: the text frame as sent, reply delivered",
        _REPLIES,
    ),
    _c("send.not_connected", 2, _S11, "send to a robot without entry: not_connected", _REPLIES),
    _c(
        "send.ghost",
        2,
        _S11,
        "send to a robot whose entry names this instance without a socket: not_connected, "
        "entry removed",
        _REPLIES,
    ),
    _c(
        "send.forward",
        2,
        _S11,
        "send to another instance's robot: forwarded with hops + 1 and the route, same id",
        _REPLIES,
    ),
    _c(
        "send.hop_limit",
        2,
        _S11,
        "a send that has travelled 2 hops is rejected, never forwarded again",
        _REPLIES,
    ),
    _c(
        "send.unreachable",
        2,
        _S11,
        "send to the robot of an instance nobody listens for: instance_unreachable",
        _REPLIES,
    ),
    _c(
        "send.ordering",
        2,
        _S11,
        "sends to one robot from one requester arrive in the order sent",
        _REPLIES,
    ),
    _c(
        "send.rejected",
        2,
        _S11,
        "a message over the size limit or not UTF-8 is rejected; the socket is kept",
        _REPLIES,
    ),
    _c(
        "kick.operator",
        2,
        _S10_KICK,
        "an operator's kick closes with 4002 and its reason, removes the entry; another "
        "conn_id kicks nothing",
        _REPLIES,
    ),
    _c(
        "kick.superseded",
        2,
        _S10_KICK,
        "a kick without message or reply_to closes the session with 4001",
        _LISTEN,
    ),
    _c(
        "register.kick_previous",
        2,
        _S4_REG,
        "a robot registering here that another instance held: a kick to that instance",
        _LISTEN,
    ),
    _c(
        "batch.send",
        2,
        _S16,
        "a batch (protocol 2): delivered, answered, forwarded per owner, one reply",
        _REPLIES,
    ),
    _c(
        "batch.reply_bundles",
        2,
        _S16_BUNDLES,
        "batches with reply_hold_ms: each answered once, plain or bundled (from the gateway), "
        "within the hold + 1.5 s of its publish (the kit's clock); batches without it: never bundled",
        _REPLIES,
    ),
    _c(
        "batch.owner_hints",
        2,
        _S16_HINTS,
        "a forward for a robot not held here: an owner hint to the previous hop",
        _REPLIES,
    ),
    _c(
        "faults.reply_unread",
        2,
        _S7,
        "a reply channel nobody reads does not stall the instance",
        _REPLIES,
    ),
    _c(
        "drain.reply",
        2,
        _S10_DRAIN,
        "drain answers draining with the sessions, the record says draining at once",
        _REPLIES,
        Phase.EXCLUSIVE,
    ),
    _c(
        "drain.refuse_new",
        2,
        _S10_DRAIN,
        "while draining, a robot's handshake is refused with 503 and Retry-After",
        _REPLIES,
        Phase.EXCLUSIVE,
    ),
    _c(
        "drain.close",
        2,
        _S10_DRAIN,
        "draining closes the sessions with 1012 and removes their entries",
        _REPLIES,
        Phase.EXCLUSIVE,
    ),
    _c(
        "drain.undrain",
        2,
        _S10_UNDRAIN,
        "undrain answers undrained, the record says draining 0, robots are accepted again",
        _REPLIES,
        Phase.EXCLUSIVE,
    ),
    _c(
        "faults.redis_frozen_control",
        2,
        _S7,
        "after Redis was frozen the control channel answers again",
        ("faults.redis_frozen", "control.replies"),
        Phase.EXCLUSIVE,
    ),
    _c(
        "events.log",
        2,
        _S17,
        "event-log entries (if the gateway writes them) have every field of §17",
        phase=Phase.LAST,
    ),
)

_BY_ID = {c.id: c for c in CHECKS}


def spec(check_id: str) -> CheckSpec:
    """The check called ``check_id`` (KeyError for an unknown one)."""
    return _BY_ID[check_id]


def check_ids(level: int | None = None) -> list[str]:
    """Every check id (of levels up to ``level`` when given), in report order."""
    return [c.id for c in CHECKS if level is None or c.level <= level]
