"""What an instance answers over HTTP before a robot's WebSocket exists, whatever the
transport: which robot a handshake is for, whether it is admitted or refused (with which
status, body and headers), and the ``/healthz`` and ``/metrics`` answers.

Both adapters (the ``websockets`` shell in :mod:`wsctl.gateway.server` and the Starlette/ASGI
adapter in :mod:`wsctl.gateway.asgi`) ask these functions and only translate the answer into
their library's response, so a robot or a load balancer sees the same thing from either.
Pure: no I/O, no web framework, no WebSocket library.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from wsctl.errors import UsageError
from wsctl.gateway.identity import token_ok
from wsctl.registry.keys import validate_id

__all__ = [
    "CLOSE_POLICY",
    "CLOSE_TRY_LATER",
    "HEALTH_PATH",
    "METRICS_PATH",
    "WS_PATH",
    "AdmissionState",
    "Refusal",
    "advertised_url",
    "health_answer",
    "presented_token",
    "refusal",
    "robot_from_path",
]

WS_PATH = "/ws/"  # the reference instance's robot endpoint: /ws/{robot_id}
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"

# Where a server cannot answer a handshake with an HTTP status (an ASGI server without the
# ``websocket.http.response`` extension), the refusal is a close code instead.
CLOSE_POLICY = 1008  # bad id, bad token
CLOSE_TRY_LATER = 1013  # shutting down, draining


@dataclass(frozen=True)
class Refusal:
    """A refused handshake: the HTTP answer, and the close code for servers that cannot
    send one."""

    status: int
    body: str  # text/plain, one line ending in a newline
    headers: tuple[tuple[str, str], ...] = ()
    close_code: int = CLOSE_POLICY

    @property
    def reason(self) -> str:
        """The body as a close reason: no newline, at most 100 characters. (ASGI servers turn
        a close before accept into HTTP 403, so only logs see it.)"""
        return self.body.rstrip("\n")[:100]


class AdmissionState(Protocol):
    """What the admission decision reads of the fleet core (:class:`FleetCore` has it)."""

    @property
    def stopping(self) -> bool:
        """The instance is shutting down."""

    @property
    def draining(self) -> bool:
        """The instance drains (``wsctl drain``)."""

    @property
    def retry_after(self) -> int:
        """Seconds a robot refused while draining should wait."""


def robot_from_path(path: str) -> str | None:
    """The robot id of ``/ws/{robot_id}`` (percent-decoded), else None."""
    parts = urlsplit(path)
    if not parts.path.startswith(WS_PATH):
        return None
    return unquote(parts.path[len(WS_PATH) :])


def presented_token(target: str, authorization: str | None) -> str | None:
    """The robot's token: ``Authorization: Bearer …`` wins over ``?token=`` in ``target``
    (a request target such as ``/ws/r1?token=…``, or just ``?token=…``)."""
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    values = parse_qs(urlsplit(target).query).get("token")
    return values[0] if values else None


def refusal(
    state: AdmissionState,
    robot_id: str,
    target: str,
    authorization: str | None,
    auth_secret: str | None,
) -> Refusal | None:
    """Why the handshake of ``robot_id`` is refused, or None to accept it.

    In this order: the instance shuts down (503) or drains (503 with ``Retry-After``, so
    robots and load balancers go to other instances meanwhile); the id is not a valid robot
    id (400); with a secret, the token in ``authorization`` or ``target`` is not the robot's
    (401)."""
    if state.stopping:
        return Refusal(503, "shutting down\n", close_code=CLOSE_TRY_LATER)
    if state.draining:
        retry = (("Retry-After", str(state.retry_after)),)
        return Refusal(503, "draining\n", retry, close_code=CLOSE_TRY_LATER)
    try:
        validate_id(robot_id)
    except UsageError as exc:
        return Refusal(400, f"{exc}\n")
    if auth_secret and not token_ok(auth_secret, robot_id, presented_token(target, authorization)):
        return Refusal(401, "bad or missing token\n")
    return None


def health_answer(status: int, text: str) -> tuple[int, str]:
    """``/healthz``'s status and body for what :meth:`FleetCore.health` said."""
    return status, text + "\n"


def advertised_url(host: str, port: int, advertise_url: str | None = None) -> str:
    """Where robots and ``simulate`` reach an instance (a wildcard bind advertises the host
    name instead of 0.0.0.0)."""
    if advertise_url:
        return advertise_url.rstrip("/")
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"ws://{host}:{port}"
