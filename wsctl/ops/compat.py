"""Instances that do not take part in the control protocol, and how to say so. Pure.

An instance that nobody listens for on its control channel is one of three things, told apart by
what it leaves in Redis (see docs/protocol.md, "Levels of participation"):

* ``alive_not_listening``: it has a fresh liveness record, so it is a wsctl-protocol gateway whose
  subscription is broken;
* ``no_control_protocol``: no liveness record, and its entries have no ``conn_id``: a gateway
  written the original design's way, which never listens (it is not down);
* ``down_or_unknown``: anything else (no fresh record, and nothing says which of the two).

``send``, ``simulate`` and ``doctor`` use the same words for the same case.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from wsctl.registry.instances import Liveness
from wsctl.registry.model import Entry

__all__ = [
    "PROTOCOL_DOC",
    "Participation",
    "classify",
    "explain",
    "how_to_join",
    "writes_conn_id",
]

PROTOCOL_DOC = "docs/protocol.md"


class Participation(StrEnum):
    """How an instance takes part in the control protocol (see :func:`classify`):
    listening, alive but not listening (a wsctl gateway in trouble), never speaking it
    (an original-design gateway), or down/unknown."""

    LISTENING = "listening"
    ALIVE_NOT_LISTENING = "alive_not_listening"
    NO_CONTROL_PROTOCOL = "no_control_protocol"
    DOWN_OR_UNKNOWN = "down_or_unknown"


def classify(listening: bool, liveness: Liveness, writes_conn_id: bool | None) -> Participation:
    """How an instance takes part, from whether anyone listens on its control channel, its
    liveness record, and whether its entries carry ``conn_id`` (None: no entry seen)."""
    if listening:
        return Participation.LISTENING
    if liveness is Liveness.ALIVE:
        return Participation.ALIVE_NOT_LISTENING
    if liveness is Liveness.UNKNOWN and writes_conn_id is False:
        return Participation.NO_CONTROL_PROTOCOL
    return Participation.DOWN_OR_UNKNOWN


def writes_conn_id(entries: Iterable[Entry]) -> dict[str, bool]:
    """Per owning instance: does any of its entries carry a ``conn_id`` (wsctl's fencing
    token, which original-design gateways do not write)?"""
    out: dict[str, bool] = {}
    for entry in entries:
        owner = entry.instance_id
        if owner:
            out[owner] = out.get(owner, False) or bool(entry.conn_id)
    return out


ADAPTER = "wsctl's FastAPI adapter (wsctl.gateway.asgi, pip install 'wsctl[fastapi]')"


def how_to_join() -> str:
    """The one-line hint for a gateway that does not speak the control protocol."""
    return (
        f"to take part, a gateway implements {PROTOCOL_DOC}; "
        f"FastAPI/Starlette apps can embed {ADAPTER}"
    )


def explain(instance_id: str, channel: str, participation: Participation) -> str:
    """One line saying why nothing can be sent through ``instance_id`` (not for LISTENING)."""
    if participation is Participation.ALIVE_NOT_LISTENING:
        return (
            f"{instance_id} is alive (fresh liveness record) but nobody listens on its control "
            f"channel {channel}: check its logs"
        )
    if participation is Participation.NO_CONTROL_PROTOCOL:
        return (
            f"{instance_id} does not speak wsctl's control protocol (nobody listens on "
            f"{channel}, it writes no liveness record and no conn_id: an original-design "
            f"gateway), so messages cannot reach its robots through wsctl; {how_to_join()}"
        )
    return (
        f"{instance_id} does not listen on its control channel {channel} and has no fresh "
        f"liveness record: it is down, or it does not speak wsctl's control protocol "
        f"({PROTOCOL_DOC}; FastAPI/Starlette apps: {ADAPTER})"
    )
