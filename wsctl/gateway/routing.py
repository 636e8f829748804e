"""Where a message for a robot goes next, decided from facts alone. Pure: no I/O, no clock.

An instance that gets a ``send`` envelope (or an app calling ``fleet.send``) first tries its own
socket for the robot; if there is none, or it turned out dead, it reads the registry owner and
asks :func:`decide` again. The I/O shell (:mod:`wsctl.gateway.core`) carries out the decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from wsctl.protocol.envelopes import MAX_HOPS, NO_ENTRY, Status

__all__ = ["Decision", "LocalSocket", "Route", "decide"]


class LocalSocket(StrEnum):
    """What this instance knows about its own socket for the robot."""

    NONE = "none"  # no session here
    OPEN = "open"  # a session here, not known to be broken
    DEAD = "dead"  # a session here whose send just failed (it has been dropped)


class Route(StrEnum):
    """Where a ``send`` goes from this instance: its own socket, the owner, or nowhere
    (with the reason in the member's name)."""

    LOCAL = "local"  # write to our own socket
    FORWARD = "forward"  # publish to the owner's control channel
    NOT_CONNECTED = "not_connected"  # no registry entry
    STALE_OWNER = "stale_owner"  # the registry names us but we hold no live socket: a ghost
    HOP_LIMIT = "hop_limit"  # forwarding again would exceed MAX_HOPS
    REFUSED = "refused"  # the message itself cannot be sent (not the socket's fault)


@dataclass(frozen=True)
class Decision:
    """The router's verdict on one envelope: the route, the instance to forward to,
    and the reply status and reason when the message stops here."""

    route: Route
    target: str | None = None  # the instance to forward to (FORWARD)
    status: Status | None = None  # the reply when the message stops here (not LOCAL/FORWARD)
    reason: str | None = None


def decide(
    *,
    self_id: str,
    local: LocalSocket,
    owner: str | None,
    hops: int,
    max_hops: int = MAX_HOPS,
) -> Decision:
    """The next step for a message that has travelled ``hops`` times.

    ``owner`` is the registry's ``instance_id`` for the robot (None: no entry, or not read yet);
    it is only consulted when there is no open local socket.
    """
    if local is LocalSocket.OPEN:
        return Decision(Route.LOCAL)
    if not owner:
        reason = NO_ENTRY if local is not LocalSocket.DEAD else f"local socket dead and {NO_ENTRY}"
        return Decision(Route.NOT_CONNECTED, status=Status.NOT_CONNECTED, reason=reason)
    if owner == self_id:
        reason = (
            "local socket dead (entry removed)"
            if local is LocalSocket.DEAD
            else "registry named this instance but no socket was open (entry removed)"
        )
        return Decision(Route.STALE_OWNER, status=Status.NOT_CONNECTED, reason=reason)
    if hops >= max_hops:
        return Decision(
            Route.HOP_LIMIT,
            target=owner,
            status=Status.REJECTED,
            reason=f"hop limit {max_hops} reached (owner {owner})",
        )
    return Decision(Route.FORWARD, target=owner)
