"""The app's sends, coalesced: what ``send`` and ``publish`` hand to the fleet core for robots
it does not hold leaves in batch envelopes (protocol v2), not one request per message.

Sends queue here; one flusher takes whatever has queued (at most :data:`BATCH_ITEMS` items and
about :data:`~wsctl.protocol.batch.BATCH_BYTES`), makes it one batch whose route starts at this
instance, and routes it like a batch from the control channel
(:meth:`~wsctl.gateway.batch_router.BatchRouter.route`: local writes, owners from the cache or
one pipelined read, one forward batch per owner in one pipeline). While a flush waits for
Redis, the next sends queue behind it and leave together in the next one: under load batches
grow by themselves. There is no fixed linger: a flush starts as soon as the flusher is free,
with what was submitted up to then (at least everything submitted in the same loop iteration),
so a send waits only for the flush before it. Flushes run one after another, so each robot's
messages keep their order. Owners answer the forwarded items to the instance's
reply inbox (:class:`~wsctl.protocol.rpc.Inbox`), item by item. Under load (a batch flushed
while earlier acknowledged batches still wait for their answers) the batches say they accept
bundled answers (``reply_hold_ms``, :class:`~wsctl.protocol.batch.ReplyBundle`), so an owner
answering a steady stream of them publishes far fewer replies; a lone send, or sends awaited
one after another, ask for none and are answered at once.

Published messages (``publish``, nobody waits for an owner's answer) may also leave from
inside the caller's own call, before the flusher gets its turn: when :data:`EARLY_ITEMS` of
them are queued and no flush is under way, the one ``publish`` call that saw it takes them
(whole prefix of the queue whose owners are known without reading: cached, speaking batches)
and writes their forward batches to Redis at once, without an await, on a connection of their
own per node (:class:`~wsctl.redis.internals.PublishLanes`), whose replies one task reads in
order. An app that submits thousands of messages in one go (``asyncio.gather``) runs nothing
else until the last one is submitted; without this the owners would get nothing before then.
Each robot's order holds (while it stays on one instance: see docs/gateway/fastapi.md,
"Order"): the hand-over takes only a prefix of the queue, never while a flush
is under way, and the flusher publishes nothing until every early hand-over was answered. A
forward nobody heard (its cached owner is gone) goes back to the head of the queue, its owner
forgotten, for the flusher to route through the registry, as a flush does once.

While the reply inbox is not subscribed (Redis restarted, a failover), acknowledged sends would
lose their answers: they wait aside (parked) until it is, together with every later message to
their robots (each robot's order holds), while the other messages, published ones included,
keep leaving: a publish never waits for the inbox, whose answer it does not need. A robot's
messages wait aside only while an acknowledged send to it is still waiting ahead of them (one
that timed out or was cancelled lets the rest go). The flusher looks at the waiting sends only
when something changed (the inbox's state, a waiting send ended), not per submit or on a timer.

Every send ends with an outcome within its timeout, whatever Redis does: ``timeout`` at its
deadline, with a reason that says which: still queued (withdrawn: never sent later), being
handed to Redis (it may still arrive), or forwarded and not answered. When Redis refuses
connections, sends fail at once (``error``) instead of waiting for the reply inbox.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import heapq
import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.exceptions import ResponseError

from wsctl.gateway.batch_router import TOO_LARGE_REASON, BatchRouter, Routed
from wsctl.gateway.outcomes import SendOutcome, SendResult, redis_reason, unsure_reason
from wsctl.gateway.parts import CoreParts
from wsctl.protocol.batch import BATCH_BYTES, Batch, BatchReply, Item
from wsctl.protocol.envelopes import Reply, Status, utf8_size
from wsctl.protocol.rpc import Inbox
from wsctl.redis.internals import LaneClosed
from wsctl.redis.pubsub import Audience
from wsctl.tasks import wait_within

__all__ = ["BATCH_ITEMS", "EARLY_ITEMS", "PUBLISH_ITEMS", "Outbox"]

# Items one coalesced batch carries at most (the protocol allows 10,000). Smaller batches are
# answered sooner (the owner replies once it wrote the whole batch) and keep both instances
# busy at once. Measured (bench/app_send_bench.py, 1,000 sends in flight, two runs each): 1,000
# items 16.0k and 14.8k msg/s, 200 items 18.3k and 16.6k, 100 items 18.3k and 17.8k (10,000 in
# flight: within the noise); 200 costs 0.01 PUBLISH per message.
BATCH_ITEMS = 200
# Items a batch carries at most when its sends only publish (fire and forget: nobody waits for
# the owner's answer, so a larger batch delays no reply); acknowledged sends among them still
# count towards BATCH_ITEMS. Measured (bench/app_send_bench.py --wsctl-only, fleet.publish with
# 10,000 in flight, 3 runs each on a busy machine): 200 items 11.8k, 12.9k, 10.6k msg/s and
# 53-57 us of the sending instance's CPU per message; 1,000 items 13.8k, 16.2k, 17.2k msg/s and
# 42-44 us (the flusher hands five times as much to Redis per round trip). Again without a
# linger (quiet machine, 8 runs each, interleaved): 1,000 items median 30.9k msg/s (28.0-32.6k),
# 2,500 items 33.9k (30.1-34.6k): the flusher waits for one PUBLISH round trip per batch, so
# fewer, larger batches leave the sending instance less idle. At about 100 bytes a message the
# batch's byte bound (BATCH_BYTES) caps it near there anyway.
PUBLISH_ITEMS = 2500
# No linger: a flush starts as soon as the previous one is done, with what was submitted up to
# then. Measured (bench/app_send_bench.py --runs 3, paced 1 send per ms through the non-owner,
# with owners bundling replies): p50 0.8-0.9 ms and p99 3.5, 4.7, 3.9 ms (socket.io 5.1, 4.1,
# 4.1 ms in the same runs), 1.28-1.31 Redis commands per forwarded message; with the 2 ms linger
# it replaces p50 3.1 ms, p99 6.0 ms (socket.io 4.1 ms), 1.10-1.15 commands (a 2 ms linger
# lasts 2-3 ms with epoll's 1 ms timer). The blasts do not regress: fleet.send 1,000 in flight
# 25.3k msg/s (24.0k, 26.7k, 25.3k), 10,000 in flight 32.3k, fleet.publish 29.8k. (Those p50/p99
# are the robots' receive latency; the sender's await returns later, after the owner's answer:
# paced ack p50 7.4 ms, p99 14.3 ms with bundled answers, see REPLY_EVERY.)

# Published messages queued that make the publish call seeing them hand them to Redis itself
# when no flush is under way (see the module doc; 0: never). Below it the flusher takes them,
# as it takes everything else.
EARLY_ITEMS = 200

# The longest the outbox lets an owner hold its answers to bundle them (``reply_hold_ms``, at
# most half a send's time left), asked only while earlier acknowledged batches still wait for
# their answers (under load); owners hold them much less (REPLY_EVERY of
# wsctl.gateway.batching). Delivery is not delayed by it, only the answer.
REPLY_HOLD_MS = 100
# How often batches nobody waits for any more (every sender timed out) are forgotten.
SWEEP_EVERY = 1.0
# The reasons of a send that timed out before an owner took it: still queued at its deadline
# (then never sent: safe to retry), or being handed to Redis (it may still arrive: a retry may
# deliver it twice).
WITHDRAWN_REASON = "not sent within {timeout:g}s: withdrawn, never sent"
TAKEN_REASON = "no outcome within {timeout:g}s: being handed to Redis, it may still arrive"
# Seconds between two looks at the unanswered sends while a stopping instance waits for them.
ANSWER_POLL = 0.01
# Deadlines kept (settled sends' included) before the settled ones are forgotten.
COMPACT_MIN = 10_000
# Per item, what its envelope adds to the message's own bytes (ids, JSON punctuation).
ITEM_OVERHEAD = 40


class Core(CoreParts, Protocol):
    """What the outbox uses of :class:`wsctl.gateway.core.FleetCore` (no import cycle)."""

    batches: BatchRouter

    @property
    def inbox(self) -> Inbox:
        """The core's reply inbox."""


@dataclass(eq=False, slots=True)
class _Send:
    """One queued message and the future its sender waits on."""

    robot_id: str
    text: str
    ack: bool  # send() waits for the owner's answer; publish() only for the hand-over
    future: asyncio.Future[SendResult]
    size: int
    deadline: float  # loop time
    timeout: float  # seconds the sender gave it (for the reason)
    seq: int  # submission order (a robot's messages leave in it)
    owner: str = ""  # the instance it was forwarded to, once it was
    taken: bool = False  # being routed: from now on it may reach the robot, whatever comes
    watched: bool = False  # parked once: its end makes the flusher look at the parked sends


@dataclass(eq=False, slots=True)
class _HandedOver:
    """An early hand-over (:meth:`Outbox._hand_over`) waiting for Redis's answers: per PUBLISH,
    the owner and the sends it carries."""

    carried: list[tuple[str, list[_Send]]]
    written: asyncio.Future[list[int | BaseException]]


@dataclass(eq=False)
class _InFlight:
    """A flushed batch whose forwarded items wait for their owners' answers."""

    sends: dict[str, _Send] = field(default_factory=dict)  # item id -> send


class Outbox:
    """The queue and flusher of one fleet core's coalesced sends."""

    def __init__(
        self,
        core: Core,
        *,
        batch_items: int = BATCH_ITEMS,
        batch_bytes: int = BATCH_BYTES,
        publish_items: int = PUBLISH_ITEMS,
        bundle_replies: bool = True,
        early_items: int = 0,
    ) -> None:
        self.core = core
        # published messages queued that make a publish call hand them over itself (0: never)
        self.early_items = early_items
        self.bundle_replies = bundle_replies  # owners may answer in bundles (reply_hold_ms)
        self.batch_items = max(1, batch_items)
        self.publish_items = max(self.batch_items, publish_items)
        self.batch_bytes = batch_bytes
        self._queue: collections.deque[_Send] = collections.deque()
        # acknowledged sends waiting for the reply inbox, and every later send to their robots
        # (each robot's in submission order: _take parks in queue order, and a send _unpark
        # gives back precedes every send to its robot still parked)
        self._parked: collections.deque[_Send] = collections.deque()
        # robot -> the submission order (seq) of its earliest parked send: a queued send to
        # the robot submitted after it parks behind it; one submitted before it (given back
        # by _unpark) may leave
        self._parked_robots: dict[str, int] = {}
        self._park_changed = False  # the inbox's state changed or a parked send ended
        self._inbox_watch: asyncio.Task[None] | None = None
        self._held: collections.Counter[str] = collections.Counter()  # robot -> queued/flushing
        self._wake = asyncio.Event()
        self._flights: dict[str, _InFlight] = {}  # batch id -> its unanswered items
        # every send's deadline, earliest first, and the one timer that expires them (not a
        # timer per send): (deadline, sequence, send); settled sends leave when it fires
        self._deadlines: list[tuple[float, int, _Send]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._compact_at = COMPACT_MIN  # heap size that makes the next compaction
        self.batches_sent = 0
        self.items_sent = 0
        self.closed = False
        # early hand-overs (publish calls writing to Redis themselves, see the module doc)
        self._flushing = False  # a flush is under way: no early hand-over may overtake it
        # a lane refused a hand-over: the flusher takes what queued (until its next flush; a
        # refusal costs a scan of the queue's head, not to be paid per submit)
        self._early_refused = False
        self._handed: set[_HandedOver] = set()  # written, Redis's answers not read yet
        self._unheard: collections.deque[_Send] = collections.deque()  # for the flusher, first
        self._checks: set[asyncio.Task[None]] = set()  # cluster-wide "did anyone hear?"
        self._audience = Audience()
        self.early_batches = 0

    # ------------------------------------------------------------------ senders
    def holds(self, robot_id: str) -> bool:
        """Are messages for ``robot_id`` queued or being flushed? (A later message to the robot
        must then queue behind them, even when the robot's socket is here.)"""
        return robot_id in self._held

    @property
    def queued(self) -> int:
        """Messages waiting for the flusher (those waiting for the reply inbox included)."""
        return len(self._queue) + len(self._parked)

    async def send(
        self, robot_id: str, text: str, timeout: float, *, ack: bool = True
    ) -> SendResult:
        """Queue ``text`` for ``robot_id`` and wait for its outcome: the owner's answer
        (``ack``), or only its hand-over to Redis (``published``), for at most ``timeout``
        seconds (then ``timeout``)."""
        future = self.submit(robot_id, text, timeout, ack=ack)
        try:
            return await future
        except asyncio.CancelledError:
            future.cancel()  # never sent, if it is still queued
            raise

    def submit(
        self, robot_id: str, text: str, timeout: float, *, ack: bool = True
    ) -> asyncio.Future[SendResult]:
        """Queue ``text`` for ``robot_id`` now (no await: messages submitted one after another
        leave in that order) and return the future of its outcome, settled within
        ``timeout`` seconds. Cancelling the future withdraws the message if still queued."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[SendResult] = loop.create_future()
        here = (self.core.instance_id,)
        if self.closed:
            future.set_result(
                SendResult(SendOutcome.ERROR, robot_id, here, "the instance is stopping")
            )
            return future
        size = utf8_size(text) + len(robot_id) + ITEM_OVERHEAD
        deadline = loop.time() + max(0.0, timeout)
        seq = next(self._order)
        sent = _Send(robot_id, text, ack, future, size, deadline, timeout, seq)
        self._queue.append(sent)
        self._held[robot_id] += 1
        self._wake.set()
        # the deadline settles the future itself (cheaper than a wait per send); a send still
        # queued then is dropped by the flusher, never sent later
        deadlines = self._deadlines
        heapq.heappush(deadlines, (deadline, seq, sent))
        if len(deadlines) >= self._compact_at:
            self._compact()
        if self._timer is None or deadline < self._timer_at:
            self._arm(loop, deadline)
        if not ack and len(self._queue) >= self.early_items > 0 and not self._flushing:
            self._hand_over()
        return future

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = loop.call_at(when, self._expire_due)

    def _compact(self) -> None:
        """Forget the deadlines of settled sends (they would wait for the timer to reach them,
        holding their messages): linear, and at most once per doubling of what is alive."""
        alive = [entry for entry in self._deadlines if not entry[2].future.done()]
        heapq.heapify(alive)
        self._deadlines = alive
        self._compact_at = max(COMPACT_MIN, 2 * len(alive))

    def _expire_due(self) -> None:
        """The deadline timer: every send whose deadline has come and that has no outcome yet
        gets ``timeout`` (:func:`_expire`); settled ones are forgotten; then it is armed for
        the earliest deadline left (none: unarmed until the next send)."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        here = (self.core.instance_id,)
        deadlines = self._deadlines
        while deadlines:
            deadline, _, sent = deadlines[0]
            if sent.future.done():
                heapq.heappop(deadlines)
            elif deadline <= now:
                heapq.heappop(deadlines)
                _expire(sent, here, sent.timeout)
            else:
                self._arm(loop, deadline)
                return

    # ------------------------------------------------------------------ flusher
    async def run(self) -> None:
        """The flusher: batches of whatever queued, one after another, until cancelled."""
        loop = asyncio.get_running_loop()
        swept = loop.time()
        while not self.closed:  # not on cancellation alone (see FleetCore.stop)
            with contextlib.suppress(TimeoutError):
                await wait_within(self._wake.wait(), SWEEP_EVERY)
            self._wake.clear()
            if loop.time() - swept >= SWEEP_EVERY:
                swept = loop.time()
                self.sweep()  # batches whose every sender gave up: not awaited any more
            while not self.closed:
                if self._handed or self._checks:
                    # early hand-overs go first: nothing published may overtake them
                    await self._handed_over()
                    continue
                if self._unheard:  # their cached owner did not hear them: route again
                    # in submission order: on a cluster the checks that put them here
                    # end in any order
                    unheard = sorted(self._unheard, key=_submitted)
                    self._queue.extendleft(reversed(unheard))
                    self._unheard.clear()
                self._unpark()
                if not self._queue:
                    break
                # no linger: what queued while the previous flush waited on Redis leaves now
                self._flushing = True
                sends = self._take()
                try:
                    if sends:
                        await self._flush(sends)
                finally:
                    self._flushing = False
                    self._early_refused = False
                    self._release(sends)
            self._watch_inbox()
            if self.core.lanes is not None:
                self.core.lanes.prepare()  # a lane lost meanwhile is opened again

    def _take(self) -> list[_Send]:
        """The next batch's sends, in queue order: at most batch_items acknowledged ones,
        publish_items in all, and batch_bytes (one send alone may be larger). Sends whose
        sender gave up are dropped here."""
        taken: list[_Send] = []
        size = 0
        acked = 0
        queue = self._queue
        # answers would be lost: acknowledged sends wait for the inbox, or fail at once when
        # Redis refuses connections (known at once), unless their robot is here (written)
        subscribed = self.core.inbox.subscribed
        refused = None if subscribed else self._refused_reason()
        parked = self._parked_robots
        while queue and acked < self.batch_items and len(taken) < self.publish_items:
            sent = queue[0]
            if sent.future.done():
                queue.popleft()
                self._release((sent,))
                continue
            if refused is not None and self._answered_by_inbox(sent):
                queue.popleft()
                _settle(sent, SendOutcome.ERROR, (self.core.instance_id,), refused)
                self._release((sent,))
                continue
            first = parked.get(sent.robot_id)
            if (first is not None and first < sent.seq) or (
                not subscribed and refused is None and self._answered_by_inbox(sent)
            ):
                queue.popleft()  # behind an acknowledged send to its robot: stays behind it
                self._parked.append(sent)
                if first is None:
                    parked[sent.robot_id] = sent.seq
                if sent.ack and not sent.watched:
                    sent.watched = True  # its end (timeout, cancel) may free the sends behind
                    sent.future.add_done_callback(self._parked_done)
                continue
            if taken and size + sent.size > self.batch_bytes:
                break
            queue.popleft()
            taken.append(sent)
            size += sent.size
            acked += sent.ack
        return taken

    def _answered_by_inbox(self, sent: _Send) -> bool:
        """Does ``sent``'s outcome come through the reply inbox? (An acknowledged send to a
        robot not held here; one held here is written and answered here.)"""
        return sent.ack and self.core.local.get(sent.robot_id) is None

    def _refused_reason(self) -> str | None:
        """The outcome reason of a send that needs the reply inbox while Redis refuses
        connections (known at once: such sends fail now), else None."""
        refused = self.core.inbox.refused
        if refused is None:
            return None
        return redis_reason(self.core.target.scrub(str(refused)))

    def _parked_done(self, _future: asyncio.Future[SendResult]) -> None:
        self._park_changed = True
        self._wake.set()

    def _watch_inbox(self) -> None:
        """While sends are parked, one task waits for the reply inbox's state to change
        (subscribed, or refused) and wakes the flusher then: no polling."""
        if self._parked and (self._inbox_watch is None or self._inbox_watch.done()):
            self._inbox_watch = asyncio.create_task(self._inbox_changed(), name="outbox inbox")

    async def _inbox_changed(self) -> None:
        inbox = self.core.inbox
        while self._parked and not self.closed:
            if await inbox.wait_ready(SWEEP_EVERY) or inbox.refused is not None:
                self._park_changed = True
                self._wake.set()
                return

    def _unpark(self) -> None:
        """The sends waiting for the reply inbox, looked at only when something changed
        (:meth:`_parked_done`, :meth:`_inbox_changed`): forgotten when their sender gave up;
        acknowledged ones fail (``error``) when Redis refuses connections (known at once);
        back to the head of the queue, in order, once the inbox is subscribed (or when Redis
        refuses: what is left only publishes), and so is every send to a robot that no
        acknowledged send waits ahead of any more (it timed out or was cancelled). They are
        looked at in each robot's submission order, so a send given back was submitted before
        every send to its robot still parked, and :meth:`_take` lets it leave ahead of them."""
        if not self._parked or not self._park_changed:
            return
        self._park_changed = False
        subscribed = self.core.inbox.subscribed
        refused = None if subscribed else self._refused_reason()
        if refused is not None:
            here = (self.core.instance_id,)
            for sent in self._parked:
                if self._answered_by_inbox(sent):
                    _settle(sent, SendOutcome.ERROR, here, refused)
        back: list[_Send] = []
        parked = self._parked
        robots = self._parked_robots
        robots.clear()
        waiting: set[str] = set()  # robots an acknowledged send still waits ahead for
        still_away = not subscribed and refused is None
        for _ in range(len(parked)):
            sent = parked.popleft()
            if sent.future.done():
                self._release((sent,))
                continue
            if still_away and (sent.robot_id in waiting or self._answered_by_inbox(sent)):
                waiting.add(sent.robot_id)
                parked.append(sent)
                robots.setdefault(sent.robot_id, sent.seq)
                continue
            back.append(sent)
        self._queue.extendleft(reversed(back))

    def _release(self, sends: Iterable[_Send]) -> None:
        held = self._held
        for sent in sends:
            held[sent.robot_id] -= 1
            if held[sent.robot_id] <= 0:
                del held[sent.robot_id]

    async def _flush(self, sends: list[_Send]) -> None:
        """Route one batch of ``sends`` and settle what is known now; the owners' answers
        settle the rest (through the inbox)."""
        core = self.core
        me = core.instance_id
        for sent in sends:
            sent.taken = True
        ack = any(s.ack for s in sends)
        batch = _batch_of(
            sends,
            me,
            reply_to=core.inbox.channel if ack else None,
            reply_hold_ms=self._reply_hold(sends, asyncio.get_running_loop().time()),
        )
        flight = _InFlight({str(n): s for n, s in enumerate(sends)})
        if ack:
            self._flights[batch.id] = flight
            core.inbox.expect(batch.id, lambda reply: self._answered(batch.id, reply))
        self.batches_sent += 1
        self.items_sent += len(sends)
        routed = await core.batches.route(batch, events=False)
        self._settle_routed(batch.id, flight, routed)

    # ------------------------------------------------------------------ early hand-over
    def _hand_over(self) -> None:
        """Publish the head of the queue from inside the caller's ``publish`` (see the module
        doc): the longest prefix of published messages to robots not held here whose owner
        is known without reading (cached, speaking batches), within one batch's bounds,
        written to the publish lanes at once. Nothing happens when messages wait aside for
        the reply inbox or for a second route, when the head is not such a message, or when
        a lane is not open (then the flusher takes them, as it takes everything else)."""
        lanes = self.core.lanes if self.early_items > 0 else None
        if lanes is None or self._early_refused or self._parked or self._unheard or self._checks:
            return
        core = self.core
        me = core.instance_id
        now = time.monotonic()
        owners = core.batches.owners
        known = core.batches.speaks_batches_known
        local = core.local
        queue = self._queue
        taken: list[_Send] = []
        owner_of: list[str] = []
        size = 0
        while queue and len(taken) < self.publish_items:
            sent = queue[0]
            if sent.future.done():
                queue.popleft()
                self._release((sent,))
                continue
            if sent.ack or local.get(sent.robot_id) is not None:
                break
            owner = owners.get(sent.robot_id, now, count=False)  # counted once used, below
            if owner is None or owner == me or not known(owner, now):
                break
            if taken and size + sent.size > self.batch_bytes:
                break
            queue.popleft()
            taken.append(sent)
            owner_of.append(owner)
            size += sent.size
        if not taken:
            return
        batch = _batch_of(taken, me)
        per_owner: dict[str, list[int]] = {}
        for n, owner in enumerate(owner_of):
            per_owner.setdefault(owner, []).append(n)
        messages: list[tuple[str, str]] = []
        carried: list[tuple[str, list[_Send]]] = []
        unfit: list[_Send] = []
        for owner, numbers in per_owner.items():
            parts, left_out = core.batches.batch_forwards(
                batch, owner, [batch.items[n] for n in numbers]
            )
            for channel, text, items in parts:
                messages.append((channel, text))
                carried.append((owner, [taken[int(item.id)] for item in items]))
            unfit.extend(taken[int(item.id)] for item in left_out)
        written = lanes.publish(messages) if messages else None
        if written is None and messages:
            # a lane is not open (being opened), full, or its node changed: the flusher takes
            # them, and what queues until its next flush
            queue.extendleft(reversed(taken))
            self._early_refused = True
            return
        for sent in taken:
            sent.taken = True
        # one lookup per robot and batch, as a flush counts them
        owners.used(len({sent.robot_id for sent in taken}))
        self.batches_sent += 1
        self.early_batches += 1
        self.items_sent += len(taken)
        here = (me,)
        for sent in unfit:  # one message too large for any PUBLISH (never at these bounds)
            _settle(sent, SendOutcome.REJECTED, here, TOO_LARGE_REASON)
            self._release((sent,))
        if written is not None:
            handed = _HandedOver(carried, written)
            self._handed.add(handed)
            written.add_done_callback(lambda done: self._answered_early(handed, done))

    def _answered_early(
        self, handed: _HandedOver, done: asyncio.Future[list[int | BaseException]]
    ) -> None:
        """Redis answered an early hand-over (or its lane failed): heard forwards are
        ``published``; one nobody heard goes to the flusher for a second route, its owner
        forgotten (on a cluster, after asking every node, see
        :class:`~wsctl.redis.pubsub.Audience`); a failed one ends as
        :meth:`_early_failed` says."""
        self._handed.discard(handed)
        results = done.result()  # the lanes end a write with its results, never an exception
        for (owner, sends), result in zip(handed.carried, results, strict=True):
            if isinstance(result, BaseException):
                self._early_failed(sends, result)
            elif result > 0:
                self._published(owner, sends)
            elif self.core.lanes is not None and self.core.lanes.cluster:
                check = asyncio.create_task(  # not in the context of whoever published
                    self._heard_on_cluster(owner, sends), context=contextvars.Context()
                )
                self._checks.add(check)
                check.add_done_callback(self._checks.discard)
            else:
                self._not_heard(sends)
        self._wake.set()

    async def _heard_on_cluster(self, owner: str, sends: list[_Send]) -> None:
        """A forward the channel's home node counted nobody for: asked of every node."""
        channel = self.core.keys.control_channel(owner)
        try:
            heard = await self._audience.heard(self.core.client, channel, 0)
        except asyncio.CancelledError:
            self._early_failed(sends, LaneClosed("the instance is stopping"))
            raise
        except Exception as exc:  # Redis failed answering: the forward's fate is not known
            self._early_failed(sends, exc, published=True)
            return
        if heard:
            self._published(owner, sends)
        else:
            self._not_heard(sends)
        self._wake.set()

    def _published(self, owner: str, sends: list[_Send]) -> None:
        """An early forward to ``owner`` was heard: its sends are ``published``."""
        here = (self.core.instance_id, owner)
        self.core.metrics.messages_forwarded += len(sends)
        for sent in sends:
            sent.owner = owner
            _settle(sent, SendOutcome.PUBLISHED, here)
        self._release(sends)

    def _not_heard(self, sends: list[_Send]) -> None:
        """Nobody listens where the cache said these robots are: route them again (until
        then they are as good as never sent: nobody got them)."""
        self.core.batches.owners.invalidate(s.robot_id for s in sends)
        for sent in sends:
            sent.taken = False
        self._unheard.extend(sends)

    def _early_failed(
        self, sends: list[_Send], exc: BaseException, *, published: bool = False
    ) -> None:
        """An early hand-over's PUBLISH was written and then failed (Redis did not answer in
        time, its connection was lost, the instance stopped), or it ran (``published``) and
        asking who heard it failed: ``timeout``, as it may have gone out (a stalled Redis runs
        what it had read once it resumes; what reached the kernel before a connection was
        lost still arrives). Redis refusing it (an error reply) is an ``error``: not sent."""
        core = self.core
        here = (core.instance_id,)
        outcome = SendOutcome.TIMEOUT
        if isinstance(exc, LaneClosed) and not published:
            reason = "no answer from Redis before the instance stopped: it may have been published"
        else:
            core._redis_failed("control", exc)
            why = redis_reason(core.target.scrub(str(exc)))
            if isinstance(exc, ResponseError) and not published:  # Redis answered no (its ACL)
                outcome, reason = SendOutcome.ERROR, why
            else:
                reason = unsure_reason(why, published=published)
        for sent in sends:
            if not sent.future.done():
                core.metrics.messages_failed += 1
                _settle(sent, outcome, here, reason)
        self._release(sends)

    async def _handed_over(self) -> None:
        """Wait until every early hand-over was answered (and checked, on a cluster): bounded
        by the lanes' read timeout and each check's own."""
        waiting: list[asyncio.Future[Any]] = [h.written for h in self._handed]
        waiting.extend(self._checks)
        if waiting:
            await asyncio.wait(waiting)  # their callbacks (added first) ran before this returns

    def _reply_hold(self, sends: list[_Send], now: float) -> int:
        """The ``reply_hold_ms`` of a batch of ``sends`` flushed at ``now`` (loop time): 0
        (answer at once) unless replies are bundled (:attr:`bundle_replies`) and earlier
        acknowledged batches still wait for their answers (under load: the answer would
        find company); then owners may hold its answers up to :data:`REPLY_HOLD_MS`, never
        more than half the time its earliest acknowledged send has left (0 below a
        millisecond). A lone send, or sends awaited one after another, are answered at once."""
        if not self.bundle_replies or not self._awaiting():
            return 0
        acked = [s.deadline for s in sends if s.ack]
        if not acked:
            return 0
        return max(0, min(REPLY_HOLD_MS, int((min(acked) - now) * 1000 / 2)))

    def _awaiting(self) -> bool:
        """Does an earlier flushed batch still wait for an owner's answer? (Batches whose
        senders all gave up are forgotten on the way: amortised, each once.)"""
        for batch_id, flight in list(self._flights.items()):
            if any(not s.future.done() for s in flight.sends.values()):
                return True
            self._drop_answered(batch_id, flight)
        return False

    def _settle_routed(self, batch_id: str, flight: _InFlight, routed: Routed) -> None:
        here = (self.core.instance_id,)
        sends = flight.sends
        for ident in routed.delivered:
            sent = sends.pop(ident, None)
            if sent is not None:
                _settle(sent, SendOutcome.DELIVERED, here)
        for outcome in routed.failed:
            sent = sends.pop(outcome.id, None)
            if sent is not None:
                # its forward may have gone out (Routed.unsure): timeout, not error
                unsure = outcome.id in routed.unsure
                status = SendOutcome.TIMEOUT if unsure else SendOutcome(outcome.status.value)
                _settle(sent, status, here, outcome.reason)
        for ident, owner in routed.forwarded:
            sent = sends.get(ident)
            if sent is None:
                continue
            sent.owner = owner
            if not sent.ack:
                del sends[ident]
                _settle(sent, SendOutcome.PUBLISHED, (*here, owner))
        self._drop_answered(batch_id, flight)

    def _answered(self, batch_id: str, reply: Reply | BatchReply) -> None:
        """An owner's answer for items of a flushed batch (a batch reply, or a single reply
        ``{batch}:{item}`` from an owner that does not speak batches)."""
        flight = self._flights.get(batch_id)
        if flight is None:
            return
        sends = flight.sends
        route = tuple(hop.instance for hop in reply.route)
        # the instance that answered (and, for a delivered item, holds the robot)
        answerer = reply.instance
        owners = self.core.batches.owners
        now = time.monotonic()
        if isinstance(reply, BatchReply):
            outcomes: list[tuple[str, Status, str | None]] = [
                (ident, Status.DELIVERED, None) for ident in reply.delivered
            ]
            outcomes.extend((o.id, o.status, o.reason) for o in reply.failed)
        else:
            outcomes = [(reply.id.partition(":")[2], reply.status, reply.reason)]
        for ident, status, reason in outcomes:
            sent = sends.pop(ident, None)
            if sent is None:
                continue
            if status is Status.NOT_CONNECTED:
                # the forward came back: forget the owner
                owners.invalidate((sent.robot_id,))
            elif status is Status.DELIVERED and answerer:
                # the cached owner still holds the robot: its entry counts from now
                owners.confirm(sent.robot_id, answerer, now)
            try:
                outcome = SendOutcome(status.value)
            except ValueError:
                outcome = SendOutcome.ERROR
            _settle(sent, outcome, route, reason)
        self._drop_answered(batch_id, flight)

    def _drop_answered(self, batch_id: str, flight: _InFlight) -> None:
        """Forget the batch once no sender waits on any of its items."""
        for ident in [i for i, s in flight.sends.items() if s.future.done()]:
            del flight.sends[ident]
        if not flight.sends and self._flights.pop(batch_id, None) is not None:
            self.core.inbox.forget(batch_id)

    def sweep(self) -> None:
        """Forget batches whose every sender gave up (timed out): their answers, if they ever
        come, are not awaited."""
        for batch_id, flight in list(self._flights.items()):
            self._drop_answered(batch_id, flight)

    async def answered(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until every forwarded send has its owner's
        answer and every early hand-over Redis's: a stopping instance gives replies on their
        way a moment to arrive."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (self._flights or self._handed or self._checks) and (
            asyncio.get_running_loop().time() < deadline
        ):
            await asyncio.sleep(ANSWER_POLL)

    def close(self, reason: str = "the instance is stopping") -> None:
        """Settle every send still without an outcome (the flusher has stopped), saying what
        is true: one still queued was never sent (``error``), one forwarded may have arrived
        (``timeout``: sending it again may deliver it twice)."""
        self.closed = True
        here = (self.core.instance_id,)
        for waiting in (self._unheard, self._parked, self._queue):
            while waiting:
                _settle(waiting.popleft(), SendOutcome.ERROR, here, f"{reason}: never sent")
        self._parked_robots.clear()
        self._held.clear()
        if self._inbox_watch is not None:
            self._inbox_watch.cancel()
            self._inbox_watch = None
        for batch_id, flight in list(self._flights.items()):
            for sent in flight.sends.values():
                if sent.owner or sent.taken:
                    who = f"from {sent.owner} " if sent.owner else ""
                    why = f"no reply {who}before {reason}: it may have arrived"
                    _settle(sent, SendOutcome.TIMEOUT, here, why)
                else:
                    _settle(sent, SendOutcome.ERROR, here, f"{reason}: never sent")
            self.core.inbox.forget(batch_id)
        self._flights.clear()
        for handed in self._handed:
            for _, sends in handed.carried:
                why = f"no answer from Redis before {reason}: it may have been published"
                for sent in sends:
                    _settle(sent, SendOutcome.TIMEOUT, here, why)
        self._handed.clear()
        for check in self._checks:
            check.cancel()
        self._deadlines.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _batch_of(
    sends: list[_Send], origin: str, *, reply_to: str | None = None, reply_hold_ms: int = 0
) -> Batch:
    """The batch carrying ``sends`` (item ids are their positions), its route starting here;
    one shared message when they all carry the same text."""
    first = sends[0].text
    shared = all(s.text == first for s in sends)
    return Batch(
        items=tuple(
            Item(str(n), s.robot_id, None if shared else s.text) for n, s in enumerate(sends)
        ),
        message=first if shared else None,
        reply_to=reply_to,
        origin=origin,
        reply_hold_ms=reply_hold_ms,
    ).arrived(origin, time.time())


def _submitted(sent: _Send) -> int:
    """The position of ``sent`` in submission order (its ``seq``)."""
    return sent.seq


def _expire(sent: _Send, here: tuple[str, ...], timeout: float) -> None:
    """``sent``'s deadline passed without an outcome: ``timeout``, with the reason that is
    true: still queued (withdrawn, never sent: the flusher drops it), being handed to Redis
    (it may still arrive), or forwarded without an answer."""
    if sent.owner:
        reason = f"no reply from {sent.owner} within {timeout:g}s"
    elif sent.taken:
        reason = TAKEN_REASON.format(timeout=timeout)
    else:
        reason = WITHDRAWN_REASON.format(timeout=timeout)
    _settle(sent, SendOutcome.TIMEOUT, here, reason)


def _settle(
    sent: _Send, outcome: SendOutcome, route: tuple[str, ...], reason: str | None = None
) -> None:
    if not sent.future.done():
        sent.future.set_result(SendResult(outcome, sent.robot_id, route, reason))
