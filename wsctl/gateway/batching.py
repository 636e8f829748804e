"""Batched routing (protocol v2): the pure parts. No I/O, no clock (``now`` is passed in).

:func:`route_items` decides, for the items of a batch that this instance could not write to a
local socket, what becomes of each: forwarded to its owner (grouped in per-owner batches, order
kept), or answered here. :class:`OwnerCache` remembers owners for a short time so that steady
traffic through a non-owner does not read the registry for every message; the owner an item is
forwarded to always checks its own socket and reads the registry itself, so a stale cache entry
costs at most a hop, never a wrong delivery; that instance tells the one that forwarded it
(an owner hint), which corrects its cache with :meth:`OwnerCache.correct`.
:class:`ReplyHolder` decides when an owner's replies to requesters that accept bundles go out:
Nagle-style, per reply channel.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from wsctl.gateway.routing import LocalSocket, Route, decide
from wsctl.protocol.batch import BATCH_BYTES, Item, Outcome
from wsctl.protocol.envelopes import Status, utf8_size

__all__ = [
    "OWNER_CACHE_TTL",
    "REPLY_EVERY",
    "OwnerCache",
    "ReplyHolder",
    "RoutePlan",
    "SharedText",
    "route_items",
]

# Seconds an owner is remembered. Measured (bench/app_send_bench.py, paced 1 message per ms
# to 1,000 robots, each robot every second or so): 1 s read the registry for 0.7 of the
# messages, 10 s for the first message to each robot only. A stale entry costs a hop, never a
# wrong delivery (the instance sent to checks its socket and the registry, and hints back), and
# an owner that stopped listening sends its robots back to the registry at once.
OWNER_CACHE_TTL = 10.0
OWNER_CACHE_SIZE = 100_000
# A reply to a requester that asks for bundles (reply_hold_ms > 0; wsctl's outbox asks only
# under load) goes at once when none went to its channel in the last REPLY_EVERY seconds, else
# it is held until REPLY_EVERY after that one (only the answer waits, never the message); a
# reply to a batch that does not ask is never held. Measured (bench/app_send_bench.py
# --wsctl-only, paced 1 send per ms through the non-owner, Redis commands per forwarded
# message, of which HGET 0.33 is the first message to each of 1,000 robots): no bundling 2.2-2.4;
# 2 ms 1.64 (2 runs); 5 ms 1.40 (1 run); 10 ms 1.28 and 1.34 (PUBLISH 0.95-1.00, nearly all of
# it the forwards), paced p50 0.7-0.9 ms, p99 2.1-4.6 ms; the blasts answer in batches of 200
# anyway (0.01 commands per message either way). With bundles asked only under load (--runs 3):
# paced 1.30 commands, delivered p99 5.4 ms, acknowledged (await fleet.send returned) p50
# 7.4 ms, p99 14.3 ms: the price of the bundling; one caller in sequence is never held (ack
# p50 1.0 ms, 2.00 commands: a forward and its reply). Other holds, same rule (--reply-every,
# --wsctl-only, 1 run each): 5 ms 1.40 commands, ack p50 5.0 ms, p99 11.6 ms; 0 (no holding)
# 2.08 commands, ack p50 1.0 ms, p99 4.9 ms. 10 ms keeps the 1.5 target with a margin.
REPLY_EVERY = 0.010
# Reply channels a ReplyHolder remembers before it forgets the quiet ones.
FORGET_AT = 1024


class SharedText:
    """One message text of a batch as the sockets get it: its UTF-8 bytes, encoded once per
    batch however many robots it goes to, and the transport's frame of it, which an adapter
    that can share frames builds on first use (:func:`wsctl.gateway.wsframes.frame_of`)."""

    __slots__ = ("data", "frame", "text")

    def __init__(self, text: str, data: bytes) -> None:
        self.text = text
        self.data = data
        self.frame: bytes | None = None


class OwnerCache:
    """robot id -> owner instance, each for ``ttl`` seconds, at most ``size`` entries (oldest
    dropped first). Used only for messages that have not been forwarded yet (``hops == 0``)."""

    def __init__(self, ttl: float = OWNER_CACHE_TTL, size: int = OWNER_CACHE_SIZE) -> None:
        self.ttl = ttl
        self.size = size
        self._owners: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, robot_id: str, now: float, *, count: bool = True) -> str | None:
        """The cached owner of ``robot_id`` if cached less than ``ttl`` seconds before
        ``now``, else None (counted as a hit or a miss, unless ``count`` is False: a caller
        that only looks, and counts what it uses with :meth:`used`)."""
        found = self._owners.get(robot_id)
        if found is None or now - found[1] > self.ttl:
            self.misses += count
            return None
        self.hits += count
        return found[0]

    def used(self, hits: int) -> None:
        """Count ``hits`` lookups answered by the cache (see :meth:`get`'s ``count``)."""
        self.hits += hits

    def put(self, robot_id: str, owner: str, now: float) -> None:
        """Remember ``owner`` for ``robot_id`` as of ``now``, dropping the oldest entries
        beyond ``size``; a no-op when caching is off (``ttl`` <= 0)."""
        if self.ttl <= 0:
            return
        self._owners[robot_id] = (owner, now)
        self._owners.move_to_end(robot_id)
        while len(self._owners) > self.size:
            self._owners.popitem(last=False)

    def invalidate(self, robot_ids: Iterable[str]) -> None:
        """Forget the owners of ``robot_ids`` (an owner answered that it no longer holds
        them, so the next message asks the registry)."""
        for robot_id in robot_ids:
            self._owners.pop(robot_id, None)

    def confirm(self, robot_id: str, owner: str, now: float) -> bool:
        """``owner`` answered that it delivered a message to ``robot_id``: if the cache names
        it (fresh or expired), the entry counts from ``now`` again, so a robot that keeps
        getting messages never sends the next one back to the registry. True when refreshed;
        an entry naming someone else (newer) or none (invalidated) is left as it is."""
        found = self._owners.get(robot_id)
        if found is None or found[0] != owner:
            return False
        self._owners[robot_id] = (owner, now)
        self._owners.move_to_end(robot_id)
        return True

    def correct(self, robot_id: str, wrong: str, owner: str | None, now: float) -> bool:
        """An owner hint from ``wrong``: if the cache names ``wrong`` as the robot's owner
        (fresh or expired), replace it with ``owner`` as of ``now`` (None: forget it). True
        when the cache said ``wrong``; an entry naming someone else is newer: kept."""
        found = self._owners.get(robot_id)
        if found is None or found[0] != wrong:
            return False
        if owner is None or owner == wrong:
            del self._owners[robot_id]
        else:
            self.put(robot_id, owner, now)
        return True

    def __len__(self) -> int:
        return len(self._owners)


@dataclass
class RoutePlan:
    """Per owner the items to forward to it (in batch order); the items answered here; the
    robots whose entry names this instance although it holds no socket (ghosts to remove)."""

    forward: dict[str, list[Item]] = field(default_factory=dict)
    failed: list[Outcome] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)


def route_items(
    *,
    self_id: str,
    hops: int,
    pending: Sequence[tuple[Item, LocalSocket]],
    owners: Mapping[str, str | None],
) -> RoutePlan:
    """Decide each pending item with :func:`wsctl.gateway.routing.decide` (the same rules as a
    single message). ``owners`` maps every pending robot to its owner (None: no entry)."""
    plan = RoutePlan()
    stale: dict[str, None] = {}
    for item, local in pending:
        decision = decide(self_id=self_id, local=local, owner=owners.get(item.robot_id), hops=hops)
        if decision.route is Route.FORWARD:
            plan.forward.setdefault(decision.target or "", []).append(item)
            continue
        if decision.route is Route.STALE_OWNER:
            stale[item.robot_id] = None
        plan.failed.append(Outcome(item.id, decision.status or Status.ERROR, decision.reason))
    plan.stale = list(stale)
    return plan


class ReplyHolder:
    """When an owner's replies go out, per reply channel (Nagle-style, pure: ``now`` is
    passed in): the first after a quiet spell at once; while one went out less than
    ``every`` seconds ago, the next ones are held and leave together, in one bundle
    (:func:`~wsctl.protocol.batch.pack_bundles`), ``every`` seconds after it, or sooner
    when a requester allows less (its ``hold``) or ``limit`` bytes (UTF-8) are held: one
    bundle's size, :data:`~wsctl.protocol.batch.BATCH_BYTES`. Only replies to requesters that
    ask for it (``reply_hold_ms`` > 0: wsctl's outbox asks only under load) come here. Memory: the held replies (bounded by time) and
    one time per channel that replied within the last ``every`` seconds."""

    def __init__(self, every: float = REPLY_EVERY, limit: int = BATCH_BYTES) -> None:
        self.every = every
        self.limit = limit
        self._last: dict[str, float] = {}  # channel -> when its last reply went out
        self._held: dict[str, list[str]] = {}  # channel -> replies waiting, in order
        self._size: dict[str, int] = {}  # channel -> their bytes (UTF-8)
        self._due: dict[str, float] = {}  # channel -> when its held replies must go
        self._forget_at = FORGET_AT  # channels remembered that make the next clean-up

    def offer(self, channel: str, texts: list[str], now: float, hold: float) -> bool:
        """Replies ``texts`` for ``channel``, whose requester lets them wait ``hold``
        seconds at most: True when they go out now (the caller publishes them), False when
        they are held (:meth:`due` hands them out)."""
        if not texts:
            return False
        last = self._last.get(channel)
        if channel not in self._held and (last is None or now - last >= self.every):
            self._last[channel] = now
            if len(self._last) >= self._forget_at:
                self._forget_quiet(now)
            return True
        held = self._held.setdefault(channel, [])
        held.extend(texts)
        size = self._size[channel] = self._size.get(channel, 0) + sum(utf8_size(t) for t in texts)
        due = min(now + max(0.0, hold), (last if last is not None else now) + self.every)
        if size >= self.limit:
            due = now  # a full bundle: nothing to wait for
        self._due[channel] = min(self._due.get(channel, due), due)
        return False

    @property
    def next_due(self) -> float | None:
        """When the earliest held replies must go (None: nothing held)."""
        return min(self._due.values(), default=None)

    @property
    def held(self) -> int:
        """Replies held now."""
        return sum(len(texts) for texts in self._held.values())

    def due(self, now: float) -> list[tuple[str, list[str]]]:
        """The held replies whose time has come, per channel (in the order they came); those
        channels count as replied to at ``now``. Channels quiet for ``every`` are forgotten."""
        out: list[tuple[str, list[str]]] = []
        for channel, when in list(self._due.items()):
            if when <= now:
                out.append((channel, self._held.pop(channel)))
                del self._due[channel], self._size[channel]
                self._last[channel] = now
        if len(self._last) >= self._forget_at:
            self._forget_quiet(now)
        return out

    def _forget_quiet(self, now: float) -> None:
        """Forget the channels that replied ``every`` seconds ago or more (they would go at
        once anyway); next time when twice as many are remembered (linear overall)."""
        self._last = {c: t for c, t in self._last.items() if now - t < self.every}
        self._forget_at = max(FORGET_AT, 2 * len(self._last))

    def take_all(self) -> list[tuple[str, list[str]]]:
        """Every held reply, per channel (a stopping owner sends them now)."""
        out = list(self._held.items())
        self._held.clear()
        self._due.clear()
        self._size.clear()
        return out
