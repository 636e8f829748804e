"""Batched ``send`` envelopes (protocol v2) on one instance: the thin I/O shell over
:func:`wsctl.gateway.batching.route_items`.

Batches are handled one at a time, in the order they arrive on the control channel (a bounded
queue between the subscriber and one worker), which keeps every robot's messages in order:
within a batch items are taken in order, local sockets are written synchronously (no await
between two writes), and what goes to another instance leaves together per batch (on the
core's publish lanes, else one pipeline: :func:`~wsctl.redis.pubsub.publish_many`), the
per-owner forward batches before the next batch is looked at. The app's own sends go through
the same routing (:meth:`BatchRouter.route`), coalesced into batches by the outbox
(:mod:`wsctl.gateway.outbox`). Per batch:

1. every item whose robot has an open socket here is written: an identical payload is encoded
   once, and framed once (:mod:`wsctl.gateway.wsframes`), and the items of one robot leave in
   one write; a socket whose write fails is dropped and its entry removed (fenced), and its
   items are routed on;
2. the owners of the rest come from the owner cache (first hop only) or one pipelined ``HGET``
   per robot in one round trip;
3. :func:`route_items` decides; ghosts (entries naming this instance without a socket) are
   removed as observed;
4. one write (lanes or pipeline) publishes a forward batch per owner (parts of at most
   :data:`~wsctl.protocol.batch.BATCH_BYTES`), plus, for a forwarded batch (``hops`` >= 1)
   with items for robots this instance does not hold, one owner hint to the instance that
   forwarded it (the previous hop), whose owner cache sent them here. A forward that reached
   no subscriber (PUBLISH's receiver count, see :class:`~wsctl.redis.pubsub.Audience`) makes
   its items ``instance_unreachable``, except on the first hop when the owner came from the
   cache: those robots' owners are read from the registry again and routed once more (a
   robot that moved away from an instance that died). A forward whose fate is not known (no
   answer in time, written and then lost, or who heard it could not be asked) is an
   ``error`` whose reason says it may have been published (the app's own sends say
   ``timeout``: :attr:`Routed.unsure`);
5. a batch from the control channel gets this instance's one reply: the ids delivered here and
   the outcome of every item answered here (the owners answer for what they were sent). When
   the requester accepts bundles (``reply_hold_ms`` > 0), replies to its channel go out
   Nagle-style (:class:`~wsctl.gateway.batching.ReplyHolder`): the first after a quiet spell at
   once, then at most one PUBLISH per :data:`~wsctl.gateway.batching.REPLY_EVERY` carrying
   what came meanwhile (the messages themselves are written at once; only the answers wait).
   A batch without ``reply_hold_ms`` is answered at once, whatever its channel got before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from wsctl.eventlog.model import EventName
from wsctl.gateway.batching import OwnerCache, ReplyHolder, SharedText, route_items
from wsctl.gateway.local import LocalConn
from wsctl.gateway.outbound import SlowConsumer
from wsctl.gateway.outcomes import (
    is_redis_failure,
    may_have_published,
    redis_reason,
    unsure_reason,
)
from wsctl.gateway.parts import CoreParts
from wsctl.gateway.routing import LocalSocket
from wsctl.protocol.batch import (
    BATCH_BYTES,
    BATCH_VERSION,
    Batch,
    BatchReply,
    Item,
    Outcome,
    OwnerHint,
    encode_owner_hint,
    pack_batch,
    pack_bundles,
    pack_reply,
    singles,
)
from wsctl.protocol.envelopes import (
    MAX_PUBLISH_BYTES,
    Status,
    encode,
    fits,
    format_bytes,
    message_problem,
)
from wsctl.redis.pubsub import Audience, publish_many
from wsctl.registry.model import F_INSTANCE_ID
from wsctl.tasks import wait_within

__all__ = ["BATCH_QUEUE", "TOO_LARGE_REASON", "BatchRouter", "Routed"]

log = logging.getLogger("wsctl.gateway")

# Batches waiting for the worker; beyond this the subscriber stops reading (backpressure).
BATCH_QUEUE = 64
# How long an instance's protocol version (from its liveness record) is remembered.
PROTOCOL_TTL = 10.0
# The outcome reason of an item no control-channel message can carry to its owner.
TOO_LARGE_REASON = (
    f"too large to forward: larger than the {format_bytes(MAX_PUBLISH_BYTES)} one "
    "control-channel message may carry"
)
# How long a stopping instance waits for the replies it still holds to be published (the one
# being published when it stops included).
HELD_FLUSH_WAIT = 1.0


class Core(CoreParts, Protocol):
    """What the router uses of :class:`wsctl.gateway.core.FleetCore` (no import cycle)."""

    @property
    def drainer(self) -> Any:
        """The core's :class:`~wsctl.gateway.drain.Drainer` (who was drained lately)."""


@dataclass
class Routed:
    """What :meth:`BatchRouter.route` did with a batch's items: written here (ids), answered
    here (outcomes), and handed to an owner, who answers for them (``(id, owner)``)."""

    delivered: list[str] = field(default_factory=list)
    failed: list[Outcome] = field(default_factory=list)
    forwarded: list[tuple[str, str]] = field(default_factory=list)
    # how many of ``delivered`` and ``failed`` were answered already, in the forwards' pipeline
    answered: tuple[int, int] = (0, 0)
    # ids among ``failed`` whose forward Redis did not answer in time, or whose listeners
    # could not be asked after it was published: it may have arrived (the app's sends say
    # ``timeout``, not ``error``: a retry may deliver twice)
    unsure: set[str] = field(default_factory=set)
    publishing: bool = False  # the forwards' PUBLISH is under way
    published: bool = False  # ...and done: who heard them is being asked


class BatchRouter:
    """Owns the batch queue, its worker and the owner cache of one fleet core."""

    def __init__(self, core: Core, owner_ttl: float) -> None:
        self.core = core
        self.owners = OwnerCache(ttl=owner_ttl)
        self.audience = Audience()
        self.queue: asyncio.Queue[Batch] = asyncio.Queue(BATCH_QUEUE)
        # replies to requesters that accept bundles, held Nagle-style per reply channel
        self.replies = ReplyHolder()
        self._held_changed = asyncio.Event()
        self._held_stop = False  # the worker stops: publish what is held, then end
        self._protocols: dict[str, tuple[float, int]] = {}  # instance -> (read at, version)

    async def speaks_batches(self, instance_id: str) -> bool:
        """Does the instance's liveness record say ``protocol`` 2? (Read at most every
        PROTOCOL_TTL seconds per instance.)"""
        now = time.monotonic()
        cached = self._protocols.get(instance_id)
        if cached is None or now - cached[0] > PROTOCOL_TTL:
            core = self.core
            raw = await core.client.hget(core.keys.instance_key(instance_id), "protocol")
            try:
                version = int(raw or 0)
            except ValueError:
                version = 0
            cached = self._protocols[instance_id] = (now, version)
        return cached[1] >= BATCH_VERSION

    def speaks_batches_known(self, instance_id: str, now: float) -> bool:
        """:meth:`speaks_batches` as far as known at ``now`` (monotonic), without reading:
        False when not read within PROTOCOL_TTL seconds before."""
        cached = self._protocols.get(instance_id)
        return cached is not None and now - cached[0] <= PROTOCOL_TTL and cached[1] >= BATCH_VERSION

    async def run(self) -> None:
        """The worker: one batch at a time, in arrival order, until cancelled or the core
        stops (a cancellation lost in a Redis call's write must not keep it running). The
        replies it holds (:class:`~wsctl.gateway.batching.ReplyHolder`) go out on their own
        task, and what is still held when it stops goes out then."""
        self._held_stop = False
        held = asyncio.create_task(self._send_held(), name="held replies")
        try:
            while not self.core.finishing:
                batch = await self.queue.get()
                try:
                    await self.handle(batch)
                except asyncio.CancelledError:
                    raise
                except Exception:  # handle() answers what it can; never let the worker die
                    log.exception("batch %s failed", batch.id[:8])
        finally:
            # a stopping owner answers what it holds: the held-replies task is told to stop,
            # finishes the publish it is in (never cancelled mid-publish: those replies are
            # no longer in the holder), publishes the rest and ends; waited for, bounded
            self._held_stop = True
            self._held_changed.set()
            await self._finish_held(held)

    @staticmethod
    async def _finish_held(held: asyncio.Task[None]) -> None:
        """Wait for the held-replies task to end, at most :data:`HELD_FLUSH_WAIT` seconds,
        then cancel it if it has not. A cancellation of the caller meanwhile (a stopping core
        cancels its tasks again every 0.1 s) is deferred, not swallowed: raised once the wait
        is over, so it cannot cut the last replies' publish short."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HELD_FLUSH_WAIT
        cancelled = False
        while not held.done():
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                await asyncio.wait([held], timeout=left)
            except asyncio.CancelledError:
                cancelled = True
        held.cancel()  # (a no-op once it ended)
        if cancelled:
            raise asyncio.CancelledError

    async def _send_held(self) -> None:
        """Publish held replies when they are due (together, all that are), until
        told to stop (``_held_stop``): then what is still held, and end."""
        replies = self.replies
        changed = self._held_changed
        while not self._held_stop:
            changed.clear()
            when = replies.next_due
            if when is None:
                await changed.wait()
                continue
            wait = when - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await wait_within(changed.wait(), wait)
                continue
            await self._publish_replies(self._bundled(replies.due(time.monotonic())))
        await self._publish_replies(self._bundled(replies.take_all()))

    async def _publish_replies(self, messages: list[tuple[str, str]]) -> None:
        """Publish held replies (together), once more if that failed: requesters match
        replies by id, so a reply that went out twice is harmless, one lost is a timeout."""
        if not messages:
            return
        try:
            await publish_many(self.core.client, messages, self.core.lanes)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis failed: counted and logged by the core; tried again
            self.core._redis_failed("control", exc)
        await self._publish(messages)

    def _bundled(self, held: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
        """(channel, text) of the messages that carry ``held`` replies: bundles per channel."""
        me = self.core.instance_id
        return [
            (channel, text)
            for channel, texts in held
            for text in pack_bundles(me, texts, BATCH_BYTES)
        ]

    # ------------------------------------------------------------------ owner hints
    def apply_hint(self, hint: OwnerHint) -> int:
        """Correct the owner cache from a hint (no I/O): every robot the cache says
        ``hint.origin`` owns gets the hinted owner (or is forgotten). Returns how many."""
        now = time.monotonic()
        corrected = 0
        for robot_id, owner in hint.owners:
            if self.owners.correct(robot_id, hint.origin, owner, now):
                corrected += 1
        self.core.metrics.owner_cache_corrected += corrected
        return corrected

    async def hint_message(
        self, route: tuple[Any, ...], owners: list[tuple[str, str | None]]
    ) -> tuple[str, str] | None:
        """The (channel, text) of the owner hint for the previous hop of ``route`` (whose
        last hop is this instance), or None: no previous hop, or it does not speak v2."""
        core = self.core
        if not owners or len(route) < 2:
            return None
        via = route[-2].instance
        if not via or via == core.instance_id or not await self.speaks_batches(via):
            return None
        hint = OwnerHint(owners=tuple(owners), origin=core.instance_id)
        text = encode_owner_hint(hint)
        if not fits(text):
            return None  # a hint is an optimisation: one too large is not sent
        core.metrics.owner_hints_sent += 1
        return core.keys.control_channel(via), text

    # ------------------------------------------------------------------ local writes
    async def _write(self, conn: LocalConn, payloads: list[SharedText]) -> None:
        """Hand ``payloads`` to ``conn``'s socket, in order, without waiting for the robot
        where the socket can (``send_texts_nowait``: the websockets write buffer, or the
        FastAPI adapter's outbound queue; :mod:`wsctl.gateway.outbound`), else awaiting
        ``send_text`` per payload (a transport of one's own without a write that does not
        wait). Raises when the socket is gone, and
        :class:`~wsctl.gateway.outbound.SlowConsumer` when the robot does not read (closed)."""
        sock = conn.sock
        many: Callable[[list[SharedText]], None] | None = getattr(sock, "send_texts_nowait", None)
        if many is not None:
            many(payloads)
            return
        for payload in payloads:
            await sock.send_text(payload.text)

    async def _deliver_local(
        self, batch: Batch, delivered: list[str], failed: list[Outcome]
    ) -> list[tuple[Item, LocalSocket]]:
        """Step 1: write what this instance holds; return the items to route on.

        The items of each robot held here are written together, in batch order (one write per
        socket and batch where the transport allows); an identical payload is encoded once per
        batch (and framed once, where the transport shares frames)."""
        core = self.core
        pending: list[tuple[Item, LocalSocket]] = []
        # per distinct payload: its shared encoding, or why it cannot be sent (checked once)
        encoded: dict[str, SharedText | str] = {}
        limit = core.config.max_message_bytes
        # robot id -> (its session here, its items' ids, their payloads), in batch order
        writes: dict[str, tuple[LocalConn, list[str], list[SharedText]]] = {}
        local = core.local
        for item in batch.items:
            text = batch.text(item)
            payload = encoded.get(text)
            if payload is None:
                problem = message_problem(text, limit)
                payload = encoded[text] = problem or SharedText(text, text.encode("utf-8"))
            if isinstance(payload, str):
                failed.append(Outcome(item.id, Status.REJECTED, payload))
                continue
            robot_id = item.robot_id
            queued = writes.get(robot_id)
            if queued is None:
                conn = local.get(robot_id)
                if conn is None or conn.closed:
                    pending.append((item, LocalSocket.NONE))
                    continue
                queued = writes[robot_id] = (conn, [], [])
            queued[1].append(item.id)
            queued[2].append(payload)
        for robot_id, (conn, ids, payloads) in writes.items():
            try:
                await self._write(conn, payloads)
            except SlowConsumer as exc:  # closed: its items are not delivered, nor routed on
                if core._drop(conn):
                    await core._remove_entry(conn)
                self.owners.invalidate((robot_id,))
                failed.extend(Outcome(ident, Status.NOT_CONNECTED, exc.reason) for ident in ids)
                continue
            except Exception as exc:  # any failure of a robot's socket makes it a dead one
                log.debug("write to %s failed: %r", robot_id, exc)
                if core._drop(conn):
                    await core._remove_entry(conn)
                self.owners.invalidate((robot_id,))
                by_id = {i.id: i for i in batch.items if i.robot_id == robot_id}
                pending.extend((by_id[ident], LocalSocket.DEAD) for ident in ids)
                continue
            delivered.extend(ids)
        return pending

    # ------------------------------------------------------------------ owners
    async def _owners(
        self, batch: Batch, pending: list[tuple[Item, LocalSocket]]
    ) -> tuple[dict[str, str | None], set[str]]:
        """Step 2: every pending robot's owner, cached ones first (first hop only); and the
        robots whose owner came from the cache."""
        core = self.core
        now = time.monotonic()
        owners: dict[str, str | None] = {}
        cached_ones: set[str] = set()
        lookup: list[str] = []
        for item, local in pending:
            robot_id = item.robot_id
            if robot_id in owners or robot_id in lookup:
                continue
            cached = (
                self.owners.get(robot_id, now)
                if batch.hops == 0 and local is LocalSocket.NONE
                else None
            )
            if cached is not None and cached != core.instance_id:
                owners[robot_id] = cached
                cached_ones.add(robot_id)
            else:
                lookup.append(robot_id)
        if lookup:
            pipe = core.client.pipeline(transaction=False)
            for robot_id in lookup:
                pipe.hget(core.keys.conn_key(robot_id), F_INSTANCE_ID)
            for robot_id, raw in zip(lookup, await pipe.execute(), strict=True):
                owner = str(raw) if raw else None
                owners[robot_id] = owner
                if owner:
                    self.owners.put(robot_id, owner, now)
                else:
                    self.owners.invalidate((robot_id,))
        return owners, cached_ones

    async def _remove_ghosts(self, robot_ids: list[str]) -> None:
        """Entries that name this instance although it holds no socket: remove as observed."""
        core = self.core
        for robot_id in robot_ids:
            self.owners.invalidate((robot_id,))
            entry = await core.store.get(robot_id)
            ours = entry is not None and entry.instance_id == core.instance_id
            if entry is not None and ours and core.local.get(robot_id) is None:
                await core.store.delete_observed([entry])
                core.metrics.ghosts_removed += 1

    # ------------------------------------------------------------------ one batch
    async def handle(self, batch: Batch) -> None:
        """Deliver, forward and answer one batch from the control channel: every item gets
        exactly one outcome, from this instance or from the one it is forwarded to. What is
        answered here goes out in the forwards' pipeline (one round trip), and what only the
        forwards' receiver counts decide (an owner nobody listens for) in a second reply."""
        batch = batch.arrived(self.core.instance_id, time.time())
        answer = self._answer_to(batch) if batch.reply_to else None
        if answer is not None and batch.reply_hold_ms > 0:
            # the requester accepts bundles: the reply may wait for company (ReplyHolder)
            routed = await self.route(batch)
            texts = [t for _, t in answer(routed.delivered, routed.failed)]
            channel = batch.reply_to or ""
            hold = batch.reply_hold_ms / 1000
            if self.replies.offer(channel, texts, time.monotonic(), hold):
                await self._publish([(channel, text) for text in texts])
            elif texts:
                self._held_changed.set()
            return
        routed = await self.route(batch, answer=answer)
        if answer is not None:
            done_delivered, done_failed = routed.answered
            rest = answer(routed.delivered[done_delivered:], routed.failed[done_failed:])
            if rest:
                await self._publish(rest)

    def _answer_to(
        self, batch: Batch
    ) -> Callable[[list[str], list[Outcome]], list[tuple[str, str]]]:
        """What answers ``delivered`` and ``failed`` items of ``batch``: (channel, text) of
        its reply, in as many texts as it takes to fit (none when there is nothing to say)."""
        core = self.core
        reply_to = batch.reply_to or ""

        def answer(delivered: list[str], failed: list[Outcome]) -> list[tuple[str, str]]:
            if not delivered and not failed:
                return []
            reply = BatchReply(
                id=batch.id,
                instance=core.instance_id,
                delivered=tuple(delivered),
                failed=tuple(failed),
                route=batch.route,
                sent_at=batch.sent_at,
            )
            texts, left_out = pack_reply(reply)
            if len(texts) > 1 or left_out:
                core.metrics.envelopes_refused += 1
                log.warning(
                    "the reply to batch %s did not fit one message: sent in %d, %d outcome(s) "
                    "left out",
                    batch.id[:8],
                    len(texts),
                    left_out,
                )
            return [(reply_to, text) for text in texts]

        return answer

    async def _forward_messages(
        self, batch: Batch, owner: str, items: list[Item]
    ) -> tuple[list[tuple[str, str, list[Item]]], list[Outcome]]:
        """(channel, text, items) of the envelopes that carry ``items`` to ``owner``, each
        fitting one message (a batch split in halves as needed, or one single envelope per
        item for an owner that does not speak batches), and a ``rejected`` outcome per item
        that fits in none."""
        unfit: list[Item] = []
        out: list[tuple[str, str, list[Item]]] = []
        if await self.speaks_batches(owner):
            out, unfit = self.batch_forwards(batch, owner, items)
        else:
            channel = self.core.keys.control_channel(owner)
            for single, item in zip(singles(batch, items), items, strict=True):
                text = encode(single)
                if fits(text):
                    out.append((channel, text, [item]))
                else:
                    unfit.append(item)
        if unfit:
            self.core.metrics.envelopes_refused += 1
        return out, [Outcome(i.id, Status.REJECTED, TOO_LARGE_REASON) for i in unfit]

    def batch_forwards(
        self, batch: Batch, owner: str, items: list[Item]
    ) -> tuple[list[tuple[str, str, list[Item]]], list[Item]]:
        """(channel, text, items) of the forward batches that carry ``items`` to ``owner``
        (which speaks batches), each fitting one message (split in halves as needed), and
        the items that fit in none (see :data:`TOO_LARGE_REASON`). No I/O."""
        channel = self.core.keys.control_channel(owner)
        packed, unfit = pack_batch(batch.forwarded(items))
        return [(channel, text, list(part.items)) for part, text in packed], list(unfit)

    async def route(
        self,
        batch: Batch,
        *,
        events: bool = True,
        answer: Callable[[list[str], list[Outcome]], list[tuple[str, str]]] | None = None,
    ) -> Routed:
        """Deliver what this instance holds and forward the rest of ``batch`` (whose route
        already ends with this instance) to the owners; publish nothing else. Returns what
        became of each item here: the caller answers the delivered and failed ones (a reply
        on the control channel, or the app's own futures); the owners answer the forwarded
        ones. A Redis failure part-way leaves what was written delivered and makes every item
        not yet handed over an ``error``. ``events``: write a ``forward_failed`` event per
        failed item (not for the app's own sends, whose outcome the app gets). ``answer``: the
        reply to what is known when the forwards leave, published in their pipeline (then
        counted in :attr:`Routed.answered`)."""
        core = self.core
        routed = Routed()
        try:
            pending = await self._deliver_local(batch, routed.delivered, routed.failed)
            again = batch.hops == 0  # owners from the cache get one more chance
            while pending:
                pending = await self._forward(batch, pending, routed, again, answer)
                again, answer = False, None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failure part-way: what is not answered is an error
            if is_redis_failure(exc):  # counted as a Redis failure only when it is one
                core._redis_failed("control", exc)
                reason = redis_reason(core.target.scrub(str(exc)))
            else:
                log.exception("routing batch %s failed", batch.id[:8])
                reason = f"internal error: {type(exc).__name__}"
            unsure = routed.published or (routed.publishing and may_have_published(exc))
            if unsure:
                reason = unsure_reason(reason, published=routed.published)
            answered = {*routed.delivered, *(o.id for o in routed.failed)}
            answered.update(ident for ident, _ in routed.forwarded)
            left = [i.id for i in batch.items if i.id not in answered]
            routed.failed.extend(Outcome(ident, Status.ERROR, reason) for ident in left)
            if unsure:
                routed.unsure.update(left)
        core.metrics.messages_delivered += len(routed.delivered)
        core.metrics.messages_forwarded += len(routed.forwarded)
        core.metrics.messages_failed += len(routed.failed)
        if routed.failed and events:
            robot_of = {i.id: i.robot_id for i in batch.items}
            for outcome in routed.failed:
                core.events.emit(
                    EventName.FORWARD_FAILED,
                    robot_of.get(outcome.id, ""),
                    status=outcome.status.value,
                    reason=outcome.reason,
                    origin=batch.origin,
                    hops=batch.hops,
                    batch=batch.id,
                )
        return routed

    def _moving(self, batch: Batch, outcomes: list[Outcome]) -> list[Outcome]:
        """``outcomes`` with "robot is moving" as the reason of a not_connected robot this
        instance drained lately (the sender should retry)."""
        drainer = self.core.drainer
        robot_of: dict[str, str] | None = None
        out: list[Outcome] = []
        for outcome in outcomes:
            if outcome.status is Status.NOT_CONNECTED:
                if robot_of is None:
                    robot_of = {i.id: i.robot_id for i in batch.items}
                moving = drainer.moving(robot_of.get(outcome.id, ""))
                if moving is not None:
                    outcome = replace(outcome, reason=moving)
            out.append(outcome)
        return out

    async def _forward(
        self,
        batch: Batch,
        pending: list[tuple[Item, LocalSocket]],
        routed: Routed,
        again: bool,
        answer: Callable[[list[str], list[Outcome]], list[tuple[str, str]]] | None,
    ) -> list[tuple[Item, LocalSocket]]:
        """Steps 2-4 for ``pending``; returns the items to route once more (their owner came
        from the cache and did not hear the forward), when ``again``. ``answer``: the reply to
        what is known by then, published in the same pipeline."""
        core = self.core
        owners, from_cache = await self._owners(batch, pending)
        messages: list[tuple[str, str]] = []
        carried: list[tuple[str, list[Item]]] = []  # per message: the owner and its items
        if batch.hops >= 1:
            # sent here by an instance that thought we hold these robots: tell it
            me = core.instance_id
            hinted = {
                item.robot_id: (o if (o := owners.get(item.robot_id)) != me else None)
                for item, _ in pending
            }
            hint = await self.hint_message(batch.route, list(hinted.items()))
            if hint is not None:
                messages.append(hint)
                carried.append(("", []))
        plan = route_items(
            self_id=core.instance_id, hops=batch.hops, pending=pending, owners=owners
        )
        routed.failed.extend(self._moving(batch, plan.failed))
        if plan.stale:
            await self._remove_ghosts(plan.stale)
        for owner, items in plan.forward.items():
            parts, unfit = await self._forward_messages(batch, owner, items)
            routed.failed.extend(unfit)
            for channel, text, part in parts:
                messages.append((channel, text))
                carried.append((owner, part))
        if not messages:
            return []
        forwards = len(messages)
        answered = (len(routed.delivered), len(routed.failed))
        if answer is not None:
            messages.extend(answer(routed.delivered, routed.failed))
        routed.publishing = True
        counts = (await self._publish_forwards(messages))[:forwards]
        routed.publishing, routed.published = False, True
        if answer is not None:
            routed.answered = answered  # (had the pipeline failed, handle() answers them all)
        messages = messages[:forwards]
        retry: list[tuple[Item, LocalSocket]] = []
        for (channel, _), (owner, items), count in zip(messages, carried, counts, strict=True):
            if not owner:
                continue  # the owner hint: nobody answers it
            if await self.audience.heard(core.client, channel, count):
                routed.forwarded.extend((item.id, owner) for item in items)
                continue
            self.owners.invalidate(item.robot_id for item in items)
            reason = f"owner {owner} is not listening on its control channel"
            for item in items:
                if again and item.robot_id in from_cache:
                    retry.append((item, LocalSocket.NONE))
                else:
                    routed.failed.append(Outcome(item.id, Status.INSTANCE_UNREACHABLE, reason))
        routed.published = False
        return retry

    async def _publish_forwards(self, messages: list[tuple[str, str]]) -> list[int]:
        """The forwards (and owner hint) of a batch, together (on the publish lanes, else one
        pipeline: :func:`~wsctl.redis.pubsub.publish_many`); each PUBLISH's receiver count.
        Not retried by wsctl: what failed may have gone out in part (a receiver drops a copy
        a retry on a lost connection may deliver twice, see
        :class:`~wsctl.gateway.dedup.RecentPayloads`)."""
        return await publish_many(self.core.client, messages, self.core.lanes)

    async def _publish(self, messages: list[tuple[str, str]]) -> None:
        """The forwards and the reply, together (on the publish lanes, else one pipeline). Not
        retried here (only what a lost lane carried goes once more, through the pool): what
        failed may have gone out in part, and a duplicate is worse than a timeout (the
        requester reports items it got no outcome for as ``timeout``)."""
        try:
            await publish_many(self.core.client, messages, self.core.lanes)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis failed: counted and logged by the core, never raised
            self.core._redis_failed("control", exc)
