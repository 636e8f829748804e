"""Version 2 of the control protocol: many ``send`` messages in one envelope. Pure: no I/O.

A batch envelope (``"v": 2``) carries ``items``, each a robot id, an item id (unique within the
batch) and optionally its own message; items without one carry the batch's shared ``message``
(one payload to many robots is sent, and written to the sockets of one instance, once). The
instance that handles a batch delivers what it holds, forwards the rest to the owners in
per-owner batches (same ``id``, same ``reply_to``, ``hops + 1``) and answers what it resolved in
one :class:`BatchReply` (in parts when one would be too large: :func:`pack_reply`): the ids
delivered plus an :class:`Outcome` per item that was not. Every
item gets exactly one outcome, from exactly one instance; a requester collects them by
``(batch id, item id)``. A requester that says so (``reply_hold_ms`` on the batch) accepts its
replies bundled: several batch replies in one :class:`ReplyBundle`, which an owner answering a
steady stream of batches sends at most every few milliseconds instead of one PUBLISH per batch
(:func:`pack_bundles`). Single-message envelopes (``"v": 1``, :mod:`wsctl.protocol`) keep
working side by side. Documented in docs/protocol.md (§16).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from wsctl.protocol.codec import dumps
from wsctl.protocol.envelopes import (
    MAX_PUBLISH_BYTES,
    VERSION,
    Envelope,
    Hop,
    Op,
    ProtocolError,
    Reply,
    Status,
    envelope_from_data,
    fits,
    load_object,
    parse_route,
    parse_time,
    reply_from_data,
    utf8_size,
)

__all__ = [
    "BATCH_BYTES",
    "BATCH_VERSION",
    "ITEM_STATUSES",
    "MAX_ITEMS",
    "MAX_REPLY_HOLD_MS",
    "Batch",
    "BatchReply",
    "Item",
    "Outcome",
    "OwnerHint",
    "ReplyBundle",
    "batch_from_data",
    "batch_reply_from_data",
    "decode_any_reply",
    "decode_control",
    "decode_replies",
    "encode_batch",
    "encode_batch_reply",
    "encode_owner_hint",
    "encode_reply_bundle",
    "item_key",
    "owner_hint_from_data",
    "pack_batch",
    "pack_bundles",
    "pack_reply",
    "reply_bundle_from_data",
    "reply_hold",
    "singles",
    "split",
]

BATCH_VERSION = 2
# Items one envelope may carry; a decoder refuses more. Senders use far fewer (wsctl: 500).
MAX_ITEMS = 10_000
# The size one batch envelope is kept under by the senders that build batches from many
# messages (a gateway's coalesced sends, its forwards): a subscriber's pub/sub output buffer
# must never have to take a multi-MB publish. One item alone may still be larger (a single
# message up to the gateway's size limit).
BATCH_BYTES = 256 * 1024
# The longest a requester may let an owner hold its replies (``reply_hold_ms``); a decoder
# takes more as this much (clamped, see reply_hold). A bundle carries at most MAX_ITEMS replies.
MAX_REPLY_HOLD_MS = 1000
# What an item's outcome may say (a batch has no op other than send).
ITEM_STATUSES = frozenset(
    {
        Status.DELIVERED,
        Status.NOT_CONNECTED,
        Status.INSTANCE_UNREACHABLE,
        Status.REJECTED,
        Status.ERROR,
    }
)


@dataclass(frozen=True, slots=True)
class Item:
    """One message of a batch: ``message`` None means the batch's shared message."""

    id: str
    robot_id: str
    message: str | None = None


@dataclass(frozen=True)
class Batch:
    """A version-2 envelope: many ``send`` items in one message, with the fields of a
    version-1 envelope (``reply_to``, ``hops``, ``route``...) applying to the whole batch."""

    items: tuple[Item, ...]
    message: str | None = None  # the shared payload of items without their own
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    reply_to: str | None = None
    hops: int = 0
    origin: str = "cli"
    sent_at: float = field(default_factory=time.time)
    route: tuple[Hop, ...] = ()
    # > 0: the requester accepts its replies in bundles (ReplyBundle), each held by the
    # instance that answers at most this many milliseconds; 0: one batch reply per answer
    reply_hold_ms: int = 0
    v: int = BATCH_VERSION

    def text(self, item: Item) -> str:
        """The message ``item`` carries (its own, else the batch's)."""
        return item.message if item.message is not None else (self.message or "")

    def arrived(self, instance: str, now: float) -> Batch:
        """This batch with ``instance`` appended to its route."""
        return replace(self, route=(*self.route, Hop(instance, now)))

    def forwarded(self, items: Sequence[Item]) -> Batch:
        """The batch to forward to one owner: ``items`` only, ``hops + 1``, same id/route."""
        return replace(self, items=tuple(items), hops=self.hops + 1)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one item that was not delivered: its id, the status, and why."""

    id: str
    status: Status
    reason: str | None = None


@dataclass(frozen=True)
class BatchReply:
    """What one instance resolved of a batch: ``delivered`` ids plus the other outcomes."""

    id: str
    instance: str
    delivered: tuple[str, ...] = ()
    failed: tuple[Outcome, ...] = ()
    route: tuple[Hop, ...] = ()
    sent_at: float = 0.0
    replied_at: float = field(default_factory=time.time)
    v: int = BATCH_VERSION

    def outcomes(self) -> Iterable[Outcome]:
        """Every item outcome of this reply, delivered ones included."""
        for ident in self.delivered:
            yield Outcome(ident, Status.DELIVERED)
        yield from self.failed

    def __len__(self) -> int:
        return len(self.delivered) + len(self.failed)


@dataclass(frozen=True)
class OwnerHint:
    """A notice, never answered: "these robots are not mine; their owner is, as far as I read
    the registry, X (None: no entry)". An instance sends it to the one that forwarded it items
    for robots it does not hold (the previous hop of the route), so that instance's owner
    cache stops sending them here (§16, owner hints)."""

    owners: tuple[tuple[str, str | None], ...]  # (robot id, owner or None), in item order
    origin: str  # the instance the items were wrongly forwarded to (the sender)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    sent_at: float = field(default_factory=time.time)
    v: int = BATCH_VERSION


@dataclass(frozen=True)
class ReplyBundle:
    """Several batch replies in one message, to one reply channel, from one instance (only to
    a requester that accepts them: ``reply_hold_ms`` > 0 on its batches). Each reply is
    handled exactly as if it had come alone."""

    replies: tuple[BatchReply, ...]
    instance: str
    v: int = BATCH_VERSION


def singles(batch: Batch, items: Sequence[Item]) -> list[Envelope]:
    """``items`` of ``batch`` forwarded as single (v1) envelopes, for an owner that does not
    speak batches: each with id ``{batch id}:{item id}`` (see :func:`item_key`), ``hops + 1``,
    the batch's reply channel, origin, send time and route."""
    return [
        Envelope(
            op=Op.SEND,
            id=f"{batch.id}:{item.id}",
            robot_id=item.robot_id,
            message=batch.text(item),
            reply_to=batch.reply_to,
            hops=batch.hops + 1,
            origin=batch.origin,
            sent_at=batch.sent_at,
            route=batch.route,
        )
        for item in items
    ]


def item_key(reply_id: str) -> tuple[str, str]:
    """The (batch id, item id) a single reply answers: ``{batch id}:{item id}`` for an item
    forwarded as a single envelope, else ``(reply id, "")``."""
    batch_id, sep, item_id = reply_id.partition(":")
    return (batch_id, item_id) if sep else (reply_id, "")


def split(items: Sequence[Item], size: int) -> list[tuple[Item, ...]]:
    """``items`` in consecutive chunks of at most ``size`` (order kept)."""
    return [tuple(items[i : i + size]) for i in range(0, len(items), max(1, size))]


T = TypeVar("T")


def _halves(
    parts: Sequence[T], encode_part: Callable[[Sequence[T]], str], limit: int
) -> tuple[list[tuple[Sequence[T], str]], list[T]]:
    """``parts`` encoded in as few texts of at most ``limit`` bytes as halving finds: all in
    one when that fits, else each half on its own, recursively, order kept. Returns the
    (parts, text) pairs and the parts that do not fit even alone. One encoding when it all
    fits (the usual case); at most ``log2(len)`` rounds of encodings otherwise."""
    packed: list[tuple[Sequence[T], str]] = []
    unfit: list[T] = []
    todo: list[Sequence[T]] = [parts]
    while todo:
        part = todo.pop()
        text = encode_part(part)
        if fits(text, limit):
            packed.append((part, text))
        elif len(part) <= 1:
            unfit.extend(part)
        else:
            middle = len(part) // 2
            todo.append(part[middle:])
            todo.append(part[:middle])  # popped first: order kept
    return packed, unfit


def pack_batch(
    batch: Batch, limit: int = MAX_PUBLISH_BYTES
) -> tuple[list[tuple[Batch, str]], list[Item]]:
    """``batch`` as envelopes of at most ``limit`` bytes each, with their JSON: itself when it
    fits, else its items split in halves (same id, reply channel, hops and route: a batch's
    items may arrive in several envelopes, as forwards to several owners do). The items that
    do not fit even alone come back apart, unsent: the caller answers them ``rejected``."""
    packed, unfit = _halves(
        batch.items, lambda items: encode_batch(replace(batch, items=tuple(items))), limit
    )
    return [(replace(batch, items=tuple(items)), text) for items, text in packed], unfit


def pack_reply(reply: BatchReply, limit: int = MAX_PUBLISH_BYTES) -> tuple[list[str], int]:
    """The JSON of ``reply`` in texts of at most ``limit`` bytes each: one when it fits, else
    its outcomes split over several replies with the same id (a requester collects outcomes
    by batch and item id, from any number of replies). Also returns how many outcomes do not
    fit even alone (left out: their requester reports them as ``timeout``)."""
    outcomes: list[Outcome] = [Outcome(i, Status.DELIVERED) for i in reply.delivered]
    outcomes.extend(reply.failed)

    def encode_part(part: Sequence[Outcome]) -> str:
        return encode_batch_reply(
            replace(
                reply,
                delivered=tuple(o.id for o in part if o.status is Status.DELIVERED),
                failed=tuple(o for o in part if o.status is not Status.DELIVERED),
            )
        )

    packed, unfit = _halves(outcomes, encode_part, limit)
    return [text for _, text in packed], len(unfit)


def _bundle_text(instance: str, replies: Sequence[str]) -> str:
    """A bundle's JSON from its replies' JSON (joined as they are: no second encoding)."""
    head = dumps({"v": BATCH_VERSION, "instance": instance})
    return f'{head[:-1]},"replies":[{",".join(replies)}]}}'


def pack_bundles(
    instance: str, replies: Sequence[str], limit: int = MAX_PUBLISH_BYTES
) -> list[str]:
    """The batch replies ``replies`` (their JSON, each fitting ``limit``: see
    :func:`pack_reply`) in as few messages of at most ``limit`` bytes as taking them in order
    makes: bundles (:class:`ReplyBundle`) of at most :data:`MAX_ITEMS` replies, and a reply
    that would be alone in its bundle, or does not fit in one, as itself. Linear."""
    overhead = utf8_size(_bundle_text(instance, []))
    out: list[str] = []
    group: list[str] = []
    size = overhead

    def close() -> None:
        if len(group) == 1:
            out.append(group[0])
        elif group:
            out.append(_bundle_text(instance, group))
        group.clear()

    for text in replies:
        length = utf8_size(text)
        if overhead + length > limit:  # fits only alone: sent as itself
            close()
            size = overhead
            out.append(text)
            continue
        if group and (size + 1 + length > limit or len(group) >= MAX_ITEMS):
            close()
            size = overhead
        size += length + (1 if group else 0)
        group.append(text)
    close()
    return out


def _route_json(route: tuple[Hop, ...]) -> list[dict[str, Any]]:
    return [{"instance": h.instance, "at": h.at} for h in route]


def encode_batch(batch: Batch) -> str:
    """JSON of a batch; an item carries ``message`` only when it has its own."""
    items: list[dict[str, str]] = []
    for item in batch.items:
        if item.message is None:
            items.append({"id": item.id, "robot_id": item.robot_id})
        else:
            items.append({"id": item.id, "robot_id": item.robot_id, "message": item.message})
    return dumps(
        {
            "v": batch.v,
            "op": "send",
            "id": batch.id,
            "message": batch.message,
            "items": items,
            "reply_to": batch.reply_to,
            "hops": batch.hops,
            "origin": batch.origin,
            "sent_at": batch.sent_at,
            "route": _route_json(batch.route),
            **({"reply_hold_ms": batch.reply_hold_ms} if batch.reply_hold_ms else {}),
        }
    )


def encode_batch_reply(reply: BatchReply) -> str:
    """JSON of a batch reply."""
    return dumps(
        {
            "v": reply.v,
            "id": reply.id,
            "instance": reply.instance,
            "delivered": list(reply.delivered),
            "failed": [
                {"id": o.id, "status": o.status.value, "reason": o.reason} for o in reply.failed
            ],
            "route": _route_json(reply.route),
            "sent_at": reply.sent_at,
            "replied_at": reply.replied_at,
        }
    )


def encode_reply_bundle(bundle: ReplyBundle) -> str:
    """JSON of a reply bundle (what :func:`pack_bundles` writes for replies already encoded)."""
    return _bundle_text(bundle.instance, [encode_batch_reply(r) for r in bundle.replies])


def encode_owner_hint(hint: OwnerHint) -> str:
    """JSON of an owner hint."""
    return dumps(
        {
            "v": hint.v,
            "op": "owners",
            "id": hint.id,
            "origin": hint.origin,
            "owners": [{"robot_id": robot, "owner": owner} for robot, owner in hint.owners],
            "sent_at": hint.sent_at,
        }
    )


def _text(data: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise ProtocolError(f"{name} missing")
        return None
    if not isinstance(value, str) or (required and not value):
        raise ProtocolError(f"{name} must be a non-empty string" if required else f"{name}")
    return value


def reply_hold(value: Any) -> int:
    """A batch's ``reply_hold_ms`` as its receiver takes it (§13's tolerance, never a reason
    to drop the batch): a number is clamped to 0..:data:`MAX_REPLY_HOLD_MS` and rounded down
    (37.5 from a JavaScript requester is 37); anything else (text, a boolean, null, NaN) is 0:
    no bundles, the safe reading."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return 0
    return int(min(max(value, 0), MAX_REPLY_HOLD_MS))


def batch_from_data(data: dict[str, Any]) -> Batch:
    """A batch envelope from decoded JSON (``v`` already checked to be 2)."""
    if data.get("op") != "send":
        raise ProtocolError(f"unknown batch op {data.get('op')!r}")
    ident = _text(data, "id", required=True) or ""
    hops = data.get("hops", 0)
    if not isinstance(hops, int) or isinstance(hops, bool) or hops < 0:
        raise ProtocolError("hops must be a non-negative integer")
    message = _text(data, "message")
    raw = data.get("items")
    if not isinstance(raw, list):
        raise ProtocolError("items must be a list")
    if len(raw) > MAX_ITEMS:
        raise ProtocolError(f"more than {MAX_ITEMS} items")
    items: list[Item] = []
    seen: set[str] = set()
    for entry in raw:
        if not isinstance(entry, dict):
            raise ProtocolError("item must be an object")
        item_id = entry.get("id")
        robot_id = entry.get("robot_id")
        own = entry.get("message")
        if not isinstance(item_id, str) or not item_id:
            raise ProtocolError("item id missing")
        if not isinstance(robot_id, str) or not robot_id:
            raise ProtocolError("item robot_id missing")
        if own is not None and not isinstance(own, str):
            raise ProtocolError("item message must be a string")
        if own is None and message is None:
            raise ProtocolError("item without message in a batch without message")
        if item_id in seen:
            raise ProtocolError(f"duplicate item id {item_id!r}")
        seen.add(item_id)
        items.append(Item(item_id, robot_id, own))
    hold = reply_hold(data.get("reply_hold_ms", 0))
    return Batch(
        items=tuple(items),
        message=message,
        id=ident,
        reply_to=_text(data, "reply_to"),
        hops=hops,
        origin=_text(data, "origin") or "unknown",
        sent_at=parse_time(data, "sent_at"),
        route=parse_route(data.get("route", [])),
        reply_hold_ms=hold,
    )


def owner_hint_from_data(data: dict[str, Any]) -> OwnerHint:
    """An owner hint from decoded JSON (``v`` 2, ``op`` ``owners``)."""
    ident = _text(data, "id", required=True) or ""
    origin = _text(data, "origin", required=True) or ""
    raw = data.get("owners")
    if not isinstance(raw, list):
        raise ProtocolError("owners must be a list")
    if len(raw) > MAX_ITEMS:
        raise ProtocolError(f"more than {MAX_ITEMS} owners")
    owners: list[tuple[str, str | None]] = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise ProtocolError("owner hint entry must be an object")
        robot_id = entry.get("robot_id")
        owner = entry.get("owner")
        if not isinstance(robot_id, str) or not robot_id:
            raise ProtocolError("owner hint robot_id missing")
        if owner is not None and (not isinstance(owner, str) or not owner):
            raise ProtocolError("owner must be a non-empty string or null")
        owners.append((robot_id, owner))
    return OwnerHint(
        owners=tuple(owners), origin=origin, id=ident, sent_at=parse_time(data, "sent_at")
    )


def batch_reply_from_data(data: dict[str, Any]) -> BatchReply:
    """A batch reply from decoded JSON (``v`` already checked to be 2)."""
    ident = _text(data, "id", required=True) or ""
    instance = _text(data, "instance", required=True) or ""
    delivered = data.get("delivered", [])
    if not isinstance(delivered, list) or not all(isinstance(i, str) for i in delivered):
        raise ProtocolError("delivered must be a list of item ids")
    raw = data.get("failed", [])
    if not isinstance(raw, list):
        raise ProtocolError("failed must be a list")
    failed: list[Outcome] = []
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise ProtocolError("bad failed item")
        try:
            status = Status(str(entry.get("status")))
        except ValueError:
            raise ProtocolError(f"unknown status {entry.get('status')!r}") from None
        if status not in ITEM_STATUSES or status is Status.DELIVERED:
            raise ProtocolError(f"status {status.value} is not a failed item's")
        reason = entry.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ProtocolError("reason must be a string")
        failed.append(Outcome(entry["id"], status, reason))
    return BatchReply(
        id=ident,
        instance=instance,
        delivered=tuple(delivered),
        failed=tuple(failed),
        route=parse_route(data.get("route", [])),
        sent_at=parse_time(data, "sent_at"),
        replied_at=parse_time(data, "replied_at"),
    )


def reply_bundle_from_data(data: dict[str, Any]) -> ReplyBundle:
    """A reply bundle from decoded JSON (``v`` 2 with ``replies``): each entry a batch reply
    (a bundle holds no bundle)."""
    instance = _text(data, "instance", required=True) or ""
    raw = data.get("replies")
    if not isinstance(raw, list):
        raise ProtocolError("replies must be a list")
    if len(raw) > MAX_ITEMS:
        raise ProtocolError(f"more than {MAX_ITEMS} replies")
    replies: list[BatchReply] = []
    for entry in raw:
        if not isinstance(entry, dict) or entry.get("v") != BATCH_VERSION or "replies" in entry:
            raise ProtocolError("a bundled reply must be a batch reply")
        replies.append(batch_reply_from_data(entry))
    return ReplyBundle(replies=tuple(replies), instance=instance)


def decode_control(text: str | bytes) -> Envelope | Batch | OwnerHint:
    """Any control-channel request: a single envelope (v1), a batch or an owner hint (v2)."""
    data = load_object(text)
    version = data.get("v")
    if version == BATCH_VERSION:
        if data.get("op") == "owners":
            return owner_hint_from_data(data)
        return batch_from_data(data)
    if version == VERSION:
        return envelope_from_data(data)
    raise ProtocolError(f"unsupported version {version!r}")


def decode_any_reply(text: str | bytes) -> Reply | BatchReply:
    """Any reply: to a single envelope (v1) or to a batch (v2)."""
    data = load_object(text)
    version = data.get("v")
    if version == BATCH_VERSION:
        if "replies" in data:
            raise ProtocolError("a reply bundle (see decode_replies)")
        return batch_reply_from_data(data)
    if version == VERSION:
        return reply_from_data(data)
    raise ProtocolError(f"unsupported version {version!r}")


def decode_replies(text: str | bytes) -> list[Reply | BatchReply]:
    """Every reply one message of a reply channel carries: a single reply (v1), a batch
    reply (v2), or each batch reply of a bundle, in order."""
    data = load_object(text)
    version = data.get("v")
    if version == BATCH_VERSION:
        if "replies" in data:
            return list(reply_bundle_from_data(data).replies)
        return [batch_reply_from_data(data)]
    if version == VERSION:
        return [reply_from_data(data)]
    raise ProtocolError(f"unsupported version {version!r}")
