"""Control-channel envelopes between instances and the CLI. Pure: no I/O.

Requests travel on ``{control_prefix}{instance_id}`` (classic pub/sub; Redis 6.2 has no sharded
pub/sub); every request with ``reply_to`` gets exactly one :class:`Reply` on that channel. JSON,
versioned with ``v``; unknown fields are ignored so newer peers can add some.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum
from typing import Any

from wsctl.errors import WsctlError
from wsctl.protocol.codec import dumps, loads

__all__ = [
    "DRAIN_BATCH",
    "DRAIN_INTERVAL",
    "MAX_DRAIN_INTERVAL",
    "MAX_HOPS",
    "MAX_MESSAGE_BYTES",
    "MAX_PUBLISH_BYTES",
    "MAX_REQUEST_BYTES",
    "NO_ENTRY",
    "ROBOT_PING",
    "ROBOT_PING_UNSUPPORTED",
    "VERSION",
    "CloseCode",
    "Envelope",
    "EnvelopeTooLarge",
    "Hop",
    "Op",
    "ProtocolError",
    "Reply",
    "Status",
    "decode_envelope",
    "decode_reply",
    "drain_params",
    "encode",
    "envelope_from_data",
    "fits",
    "format_bytes",
    "load_object",
    "message_oversize",
    "message_problem",
    "oversize",
    "parse_route",
    "parse_time",
    "reply_from_data",
    "reply_to",
    "utf8_size",
]

VERSION = 1
MAX_HOPS = 2

# Sizes (docs/protocol.md §7, "Sizes"). Redis closes a pub/sub subscriber whose output buffer
# passes 32 MB at once, or stays over 8 MB for 60 s (the default ``client-output-buffer-limit
# pubsub 32mb 8mb 60``); a gateway whose control subscription is closed loses every request
# in flight to it. So nothing larger than MAX_PUBLISH_BYTES is ever published (a quarter of the
# hard limit; a message that large leaves the buffer long before the soft limit's 60 s), a new
# request leaves room for the route entries forwarding adds, and a message a robot gets is at
# most MAX_MESSAGE_BYTES (UTF-8): the largest any gateway accepts, so a request carrying one
# fits whatever its text (JSON escapes a control character in 6 bytes: at most 6 MiB).
MAX_MESSAGE_BYTES = 1 << 20
MAX_PUBLISH_BYTES = 8 << 20
MAX_REQUEST_BYTES = MAX_PUBLISH_BYTES - (64 << 10)


class Op(StrEnum):
    """The operations an envelope asks an instance for (``op`` on the wire; docs/protocol.md)."""

    SEND = "send"
    KICK = "kick"
    PING = "ping"
    INVENTORY = "inventory"
    RESYNC = "resync"
    DRAIN = "drain"
    UNDRAIN = "undrain"


class CloseCode(IntEnum):
    """WebSocket close codes a gateway sends to a robot (4000-4999: application range)."""

    GOING_AWAY = 1001  # the instance is shutting down
    POLICY_VIOLATION = 1008  # a slow consumer: the robot does not read its messages
    INTERNAL_ERROR = 1011  # a write to the robot failed: the session is ended and cleaned up
    SERVICE_RESTART = 1012  # the instance is draining (``wsctl drain``): reconnect elsewhere
    SUPERSEDED = 4001  # the robot connected again (here or elsewhere); this socket is old
    KICKED = 4002  # an operator kicked the robot (``wsctl kick``); the reason says why


# The reason of a ``not_connected`` outcome for a robot without a registry entry, the one
# spelling of the gateway's routing, the fan-out and the CLI.
NO_ENTRY = "no registry entry"

# ``data`` of a ``pong`` reply to a robot ping when the instance's transport cannot ping a
# socket (Starlette has no ping): the instance holds the socket, liveness was not probed.
ROBOT_PING = "robot_ping"
ROBOT_PING_UNSUPPORTED = "unsupported"


class Status(StrEnum):
    """The statuses a reply reports (``status`` on the wire; docs/protocol.md): outcomes of
    ``send`` and ``kick`` and the answers to the other ops."""

    DELIVERED = "delivered"
    NOT_CONNECTED = "not_connected"
    INSTANCE_UNREACHABLE = "instance_unreachable"
    REJECTED = "rejected"
    ERROR = "error"
    PONG = "pong"
    INVENTORY = "inventory"
    KICKED = "kicked"
    RESYNCED = "resynced"
    DRAINING = "draining"
    UNDRAINED = "undrained"


# ``drain``: robots closed per batch and seconds between batches, when the envelope's
# ``message`` (a JSON object, optional) does not say.
DRAIN_BATCH = 50
DRAIN_INTERVAL = 1.0
MAX_DRAIN_INTERVAL = 3600.0


def drain_params(message: str | None) -> tuple[int, float]:
    """``(batch, interval)`` of a ``drain`` envelope: its ``message`` is null or a JSON object
    ``{"batch": N, "interval": S}`` (either optional). Raises ProtocolError otherwise."""
    if message is None or message == "":
        return DRAIN_BATCH, DRAIN_INTERVAL
    try:
        data = loads(message)
    except ValueError:
        raise ProtocolError("drain message must be a JSON object") from None
    if not isinstance(data, dict):
        raise ProtocolError("drain message must be a JSON object")
    batch = data.get("batch", DRAIN_BATCH)
    interval = data.get("interval", DRAIN_INTERVAL)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ProtocolError("drain batch must be a positive integer")
    if isinstance(interval, bool) or not isinstance(interval, int | float):
        raise ProtocolError("drain interval must be a number")
    if not 0 <= interval <= MAX_DRAIN_INTERVAL:
        raise ProtocolError(f"drain interval must be within 0..{MAX_DRAIN_INTERVAL:g} s")
    return batch, float(interval)


class ProtocolError(ValueError):
    """An envelope that cannot be understood (bad JSON, unknown op, wrong types)."""


class EnvelopeTooLarge(WsctlError):
    """A text larger than :data:`MAX_PUBLISH_BYTES` was about to be published; nothing was.
    Callers check with :func:`fits` first and answer ``rejected``; this is the last guard."""


def utf8_size(text: str) -> int:
    """The UTF-8 size of ``text`` in bytes: exact for text, an upper bound for text holding
    lone surrogates (bytes that were not UTF-8, which go to Redis as single bytes)."""
    if text.isascii():  # a scan, no copy
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def fits(text: str, limit: int = MAX_PUBLISH_BYTES) -> bool:
    """Does ``text`` (an encoded envelope, batch or reply) fit in ``limit`` bytes? Short texts
    are answered without encoding them (a character is at most 4 bytes)."""
    return len(text) * 4 <= limit or utf8_size(text) <= limit


def format_bytes(size: int) -> str:
    """``1048576`` -> ``1 MiB``, ``8192`` -> ``8 KiB``; any other size in bytes
    (``1,048,577 bytes``), so a limit and a size just over it never read alike."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size:,} bytes"


def oversize(text: str, limit: int = MAX_PUBLISH_BYTES) -> str | None:
    """Why ``text`` may not be published (larger than ``limit`` bytes), or None."""
    if fits(text, limit):
        return None
    return (
        f"envelope of {format_bytes(utf8_size(text))} is larger than the "
        f"{format_bytes(limit)} one control-channel message may carry"
    )


@dataclass(frozen=True)
class Hop:
    """One instance an envelope passed through, with the time (epoch seconds) it got there."""

    instance: str
    at: float


@dataclass(frozen=True)
class Envelope:
    """A request on an instance's control channel (JSON on the wire; docs/protocol.md).

    ``reply_to`` names the channel the reply goes to; ``hops`` counts forwards (at most
    :data:`MAX_HOPS`, so a stale registry cannot bounce a message forever); ``route`` records
    the instances it passed, for per-hop latency."""

    op: Op
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    robot_id: str | None = None
    message: str | None = None
    conn_id: str | None = None
    reply_to: str | None = None
    hops: int = 0
    origin: str = "cli"
    sent_at: float = field(default_factory=time.time)
    route: tuple[Hop, ...] = ()
    v: int = VERSION

    def arrived(self, instance: str, now: float) -> Envelope:
        """This envelope with ``instance`` appended to its route."""
        return replace(self, route=(*self.route, Hop(instance, now)))

    def forwarded(self) -> Envelope:
        """This envelope with one more hop counted, as it is forwarded to another instance."""
        return replace(self, hops=self.hops + 1)


@dataclass(frozen=True)
class Reply:
    """An instance's answer to an envelope, on the envelope's ``reply_to`` channel: the
    envelope's id, a status, the answering instance, the route taken, and op-specific ``data``."""

    id: str
    status: Status
    instance: str
    robot_id: str | None = None
    reason: str | None = None
    route: tuple[Hop, ...] = ()
    sent_at: float = 0.0
    replied_at: float = field(default_factory=time.time)
    data: dict[str, Any] = field(default_factory=dict)
    v: int = VERSION

    def hop_latencies_ms(self) -> list[tuple[str, float]]:
        """Per hop: the instance and the milliseconds since the previous hop (or the send)."""
        out: list[tuple[str, float]] = []
        previous = self.sent_at
        for hop in self.route:
            out.append((hop.instance, max(0.0, (hop.at - previous) * 1000)))
            previous = hop.at
        return out

    @property
    def total_ms(self) -> float:
        """Milliseconds from the envelope's send to this reply (0 when clocks disagree)."""
        return max(0.0, (self.replied_at - self.sent_at) * 1000)


def message_problem(message: str, max_bytes: int) -> str | None:
    """Why a ``send`` message cannot go to a robot as a WebSocket text frame, or None.

    A text frame is UTF-8: text holding lone surrogates (bytes that were not UTF-8, carried
    through JSON as ``\\udcXX`` escapes) cannot be encoded, and that is the message's fault,
    never a sign that the robot's socket is dead.
    """
    try:
        size = len(message.encode("utf-8"))
    except UnicodeEncodeError:
        return "message is not valid UTF-8 text"
    if size > max_bytes:
        return size_problem(max_bytes)
    return None


def size_problem(max_bytes: int) -> str:
    """The reason a message over ``max_bytes`` is ``rejected``: one spelling for a gateway's
    own limit, the largest any gateway accepts, ``send``, ``publish``, ``send_many`` and the
    CLI (the wire's, docs/protocol.md)."""
    return f"message larger than {max_bytes} bytes"


def message_oversize(message: str) -> str | None:
    """Why ``message`` can go to no robot at all (larger than :data:`MAX_MESSAGE_BYTES`, the
    largest any gateway accepts), or None: requesters refuse it before publishing anything."""
    if len(message) <= MAX_MESSAGE_BYTES // 4:
        return None
    size = utf8_size(message)
    if size <= MAX_MESSAGE_BYTES:
        return None
    return size_problem(MAX_MESSAGE_BYTES)


def reply_to(envelope: Envelope, status: Status, instance: str, **kw: Any) -> Reply:
    """The reply to ``envelope``: its id, robot, route and send time carried over, so the
    requester can match the reply and measure the round trip; ``kw`` sets the other fields."""
    return Reply(
        id=envelope.id,
        status=status,
        instance=instance,
        robot_id=envelope.robot_id,
        route=envelope.route,
        sent_at=envelope.sent_at,
        **kw,
    )


def encode(obj: Envelope | Reply) -> str:
    """JSON of an envelope or reply. Built field by field (not ``asdict``, which deep-copies):
    this runs for every message on every hop."""
    route = [{"instance": h.instance, "at": h.at} for h in obj.route]
    if isinstance(obj, Envelope):
        data: dict[str, Any] = {
            "op": obj.op.value,
            "id": obj.id,
            "robot_id": obj.robot_id,
            "message": obj.message,
            "conn_id": obj.conn_id,
            "reply_to": obj.reply_to,
            "hops": obj.hops,
            "origin": obj.origin,
            "sent_at": obj.sent_at,
            "route": route,
            "v": obj.v,
        }
    else:
        data = {
            "id": obj.id,
            "status": obj.status.value,
            "instance": obj.instance,
            "robot_id": obj.robot_id,
            "reason": obj.reason,
            "route": route,
            "sent_at": obj.sent_at,
            "replied_at": obj.replied_at,
            "data": obj.data,
            "v": obj.v,
        }
    return dumps(data)


def parse_time(data: dict[str, Any], name: str) -> float:
    """A numeric epoch time field (missing: 0.0); anything else is a ProtocolError."""
    value = data.get(name, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{name} must be a number")
    return float(value)


def parse_route(raw: Any) -> tuple[Hop, ...]:
    """The ``route`` list of decoded JSON as hops; raises ProtocolError for anything else."""
    if not isinstance(raw, list):
        raise ProtocolError("route must be a list")
    hops = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("instance"), str):
            raise ProtocolError("bad route hop")
        hops.append(Hop(item["instance"], parse_time(item, "at")))
    return tuple(hops)


def load_object(text: str | bytes) -> dict[str, Any]:
    """Decoded JSON that must be an object (any version)."""
    try:
        data = loads(text)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError and orjson's are ValueErrors
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("not a JSON object")
    return data


def _load(text: str | bytes) -> dict[str, Any]:
    data = load_object(text)
    if data.get("v") != VERSION:
        raise ProtocolError(f"unsupported version {data.get('v')!r}")
    return data


def _opt_str(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise ProtocolError(f"{name} must be a string")
    return value


def decode_envelope(text: str | bytes) -> Envelope:
    """Parse one envelope from the wire; raises ProtocolError for bad JSON, another
    protocol version, an unknown op or fields of the wrong type."""
    return envelope_from_data(_load(text))


def envelope_from_data(data: dict[str, Any]) -> Envelope:
    """An envelope from decoded JSON whose ``v`` is :data:`VERSION`."""
    try:
        op = Op(str(data.get("op")))
    except ValueError:
        raise ProtocolError(f"unknown op {data.get('op')!r}") from None
    ident = data.get("id")
    if not isinstance(ident, str) or not ident:
        raise ProtocolError("id missing")
    hops = data.get("hops", 0)
    if not isinstance(hops, int) or hops < 0:
        raise ProtocolError("hops must be a non-negative integer")
    envelope = Envelope(
        op=op,
        id=ident,
        robot_id=_opt_str(data, "robot_id"),
        message=_opt_str(data, "message"),
        conn_id=_opt_str(data, "conn_id"),
        reply_to=_opt_str(data, "reply_to"),
        hops=hops,
        origin=_opt_str(data, "origin") or "unknown",
        sent_at=parse_time(data, "sent_at"),
        route=parse_route(data.get("route", [])),
    )
    if op in (Op.SEND, Op.KICK) and not envelope.robot_id:
        raise ProtocolError(f"{op.value} needs robot_id")
    if op is Op.SEND and envelope.message is None:
        raise ProtocolError("send needs message")
    return envelope


def decode_reply(text: str | bytes) -> Reply:
    """Parse one reply from the wire; raises ProtocolError for bad JSON, another protocol
    version, an unknown status or fields of the wrong type."""
    return reply_from_data(_load(text))


def reply_from_data(data: dict[str, Any]) -> Reply:
    """A reply from decoded JSON whose ``v`` is :data:`VERSION`."""
    try:
        status = Status(str(data.get("status")))
    except ValueError:
        raise ProtocolError(f"unknown status {data.get('status')!r}") from None
    payload = data.get("data", {})
    if not isinstance(payload, dict):
        raise ProtocolError("data must be an object")
    return Reply(
        id=str(data.get("id", "")),
        status=status,
        instance=str(data.get("instance", "")),
        robot_id=_opt_str(data, "robot_id"),
        reason=_opt_str(data, "reason"),
        route=parse_route(data.get("route", [])),
        sent_at=parse_time(data, "sent_at"),
        replied_at=parse_time(data, "replied_at"),
        data=payload,
    )
