"""Fan-out: one message to many robots, straight to each robot's owner. The one
implementation behind ``wsctl send --robot/--instance/--robots-from`` (:mod:`wsctl.ops.fanout`
adds the operator's explanations) and an app's ``fleet.send_many`` (the fleet core).

The selection streams (from the registry, or from a list of ids); owners are read in pipelined
batches; each owner is checked once (does it listen, does it speak batches: a
:data:`TargetCheck`) and gets batches of
at most :data:`BATCH_ITEMS` robots carrying the payload once (protocol v2), or single envelopes
when its liveness record does not say ``protocol`` 2. With ``via`` every batch goes to that
instance, which routes. Every robot ends with exactly one :class:`FanOutcome`; an item without
an answer by the deadline is ``timeout``, so a frozen or killed owner never makes it hang, and
an item whose PUBLISH reached no subscriber (a killed owner) is ``instance_unreachable`` at once.

Sizes: a message larger than any gateway accepts makes every robot ``rejected`` and nothing is
published; a batch too large for one message is split (an item too large alone is
``rejected``); and at most :data:`WINDOW_BYTES` of envelopes an instance has not answered yet
are in flight to it, so a slow or frozen instance's pub/sub output buffer in Redis never holds
more than that from one fan-out (Redis closes a subscriber over 32 MB, and the instance loses
what was in flight). An instance that answers nothing for ``timeout`` seconds while its window
is full gets no more: its remaining robots are ``timeout`` without being sent.

Answers come back to the process's reply inbox (:func:`wsctl.protocol.rpc.inbox_for`, or the
one given), matched by batch and item id: a fan-out opens no subscription of its own.

Redis failing (a timeout or a lost connection on a publish, an owner lookup or the selection)
ends the run at once: going on would cost every later batch the same wait. The robots already
answered keep their outcome, those sent but not answered are ``timeout`` (their fate is
unknown), those selected but not sent are ``not_tried``, the summary says ``aborted``, and the
error is raised. Returns results; printing is the CLI's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from wsctl.protocol.batch import (
    BATCH_VERSION,
    Batch,
    BatchReply,
    Item,
    item_key,
    pack_batch,
)
from wsctl.protocol.envelopes import (
    MAX_PUBLISH_BYTES,
    MAX_REQUEST_BYTES,
    NO_ENTRY,
    Envelope,
    Op,
    Reply,
    Status,
    encode,
    format_bytes,
    message_oversize,
    oversize,
    utf8_size,
)
from wsctl.protocol.rpc import Inbox, inbox_for
from wsctl.redis.factory import is_cluster
from wsctl.redis.pubsub import publish_many, subscriber_count
from wsctl.redis.target import AsyncClient
from wsctl.registry.instances import get_record, is_listening
from wsctl.registry.keys import Keyspace
from wsctl.registry.model import F_CONN_ID, F_INSTANCE_ID
from wsctl.registry.store import RegistryStore
from wsctl.tasks import wait_within

__all__ = [
    "BATCH_ITEMS",
    "WINDOW_BYTES",
    "FanOutcome",
    "FanTarget",
    "FanoutOptions",
    "FanoutResult",
    "FanoutSummary",
    "RobotOutcome",
    "Selection",
    "TargetCheck",
    "chunks_of",
    "fan_out",
    "lookup_owners",
    "registry_check",
    "registry_selection",
    "selection_of",
    "with_owners",
]

BATCH_ITEMS = 500  # robots per batch envelope
LOOKUP_CHUNK = 1000  # owners read per pipeline
# Bytes of envelopes published to one instance and not answered yet; beyond this the fan-out
# waits for answers (one envelope is always allowed). A quarter of Redis's default pub/sub
# hard limit (32 MB) with the largest envelope on top: one fan-out can never make Redis close
# an instance's control subscription, however slowly the instance reads.
WINDOW_BYTES = MAX_PUBLISH_BYTES


class FanOutcome(StrEnum):
    """What became of the message for one robot. The outcomes a reply reports are spelled as
    the wire's :class:`~wsctl.protocol.envelopes.Status` (and so as a single ``send``'s
    :class:`~wsctl.gateway.outcomes.SendOutcome`)."""

    DELIVERED = Status.DELIVERED.value
    NOT_CONNECTED = Status.NOT_CONNECTED.value
    REJECTED = Status.REJECTED.value
    INSTANCE_UNREACHABLE = Status.INSTANCE_UNREACHABLE.value
    TIMEOUT = "timeout"
    ERROR = Status.ERROR.value
    NOT_TRIED = "not_tried"  # selected, never sent: Redis failed first


_FROM_STATUS = {
    Status.DELIVERED: FanOutcome.DELIVERED,
    Status.NOT_CONNECTED: FanOutcome.NOT_CONNECTED,
    Status.REJECTED: FanOutcome.REJECTED,
    Status.INSTANCE_UNREACHABLE: FanOutcome.INSTANCE_UNREACHABLE,
    Status.ERROR: FanOutcome.ERROR,
}


@dataclass(frozen=True, slots=True)
class RobotOutcome:
    """What became of the message for one robot, the instance that said so, and why."""

    robot_id: str
    outcome: FanOutcome
    instance: str | None = None  # the instance that answered (or the owner, when none did)
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The outcome as one stable JSON object (a line of ``send -o jsonl``)."""
        return {
            "robot_id": self.robot_id,
            "outcome": self.outcome.value,
            "instance": self.instance,
            "reason": self.reason,
        }


@dataclass
class FanoutSummary:
    """Counts per outcome over a whole fan-out, with how many robots were selected and
    how long it took."""

    selected: int = 0
    counts: dict[FanOutcome, int] = field(default_factory=lambda: dict.fromkeys(FanOutcome, 0))
    seconds: float = 0.0
    dry_run: bool = False
    sent: int = 0  # robots whose message was published (or whose publish was attempted)
    selection_done: bool = False  # the whole selection was read: ``selected`` is the total
    aborted: bool = False  # Redis failed and the run stopped early

    @property
    def answered(self) -> int:
        """Robots with an outcome so far."""
        return sum(self.counts.values())

    @property
    def ok(self) -> bool:
        """True when every selected robot got the message."""
        return self.counts[FanOutcome.DELIVERED] == self.selected

    def as_dict(self) -> dict[str, Any]:
        """The summary as a JSON object: ``selected``, one count per outcome, ``seconds``,
        ``aborted``."""
        out: dict[str, Any] = {"selected": self.selected}
        out.update({o.value: n for o, n in self.counts.items()})
        out["seconds"] = round(self.seconds, 3)
        out["aborted"] = self.aborted
        return out


@dataclass
class FanoutOptions:
    """How a fan-out runs: the instance to publish through (``via``; default each
    owner), the pace, how long to wait for answers, batch size, and the liveness timeout
    that judges owners."""

    via: str | None = None
    rate: float = 0.0  # robots per second; 0: as fast as possible
    timeout: float = 5.0  # seconds to wait for answers after the last publish
    batch_items: int = BATCH_ITEMS
    liveness_timeout: float = 90.0
    origin: str = "cli"


Key = tuple[str, str]  # (batch or envelope id, item id; "" for a single envelope)
# Chunks of (robot id, its owner when already known) as a selection yields them.
Selection = AsyncIterable[list[tuple[str, str | None]]]


@dataclass(frozen=True)
class FanTarget:
    """An instance messages go to, as checked once per run: does it listen on its control
    channel, does it speak batches (protocol 2), and if it does not listen, why."""

    listening: bool
    batches: bool
    why: str | None = None


# How a fan-out checks an instance: (instance id, whether the robots' entries carry a conn_id,
# None when not known) -> what it found.
TargetCheck = Callable[[str, "bool | None"], Awaitable[FanTarget]]


def registry_check(
    client: AsyncClient,
    keys: Keyspace,
    explain: Callable[[str, bool | None], Awaitable[str]] | None = None,
) -> TargetCheck:
    """The check of a run that knows nothing yet: a subscriber count over every node and the
    instance's liveness record (its protocol); ``explain`` says why an instance that does not
    listen cannot be reached (default: that it does not listen)."""

    async def check(instance_id: str, conn_id_known: bool | None) -> FanTarget:
        listening = await is_listening(client, keys, instance_id)
        record = await get_record(client, keys, instance_id)
        why = None
        if not listening:
            if explain is not None:
                why = await explain(instance_id, conn_id_known)
            else:
                why = f"{instance_id} does not listen on its control channel"
        speaks = record is not None and record.protocol >= BATCH_VERSION
        return FanTarget(listening, speaks, why)

    return check


@dataclass
class FanoutResult:
    """Every robot's outcome of one fan-out (in the order they became known), and the counts
    per outcome."""

    outcomes: list[RobotOutcome]
    summary: FanoutSummary

    @property
    def ok(self) -> bool:
        """True when every selected robot got the message."""
        return self.summary.ok

    def by_robot(self) -> dict[str, RobotOutcome]:
        """The outcomes by robot id."""
        return {o.robot_id: o for o in self.outcomes}


class _FanOut:
    def __init__(
        self,
        client: AsyncClient,
        keys: Keyspace,
        message: str,
        options: FanoutOptions,
        on_outcome: Callable[[RobotOutcome], None] | None,
        summary: FanoutSummary | None,
        check: TargetCheck,
        inbox: Inbox,
    ) -> None:
        self.client = client
        self.keys = keys
        self.message = message
        self.options = options
        self.on_outcome = on_outcome
        self.summary = summary if summary is not None else FanoutSummary()
        self.seen: set[str] = set()
        self.open: dict[str, None] = {}  # selected robots without an outcome yet, in order
        self.pending: dict[Key, tuple[str, str]] = {}  # key -> (robot id, target instance)
        # the window: key -> its envelope; envelope -> [instance, bytes, items unanswered]
        self.carrier: dict[Key, int] = {}
        self.envelopes: dict[int, list[Any]] = {}
        self.serials = itertools.count()
        self.inflight: dict[str, int] = {}  # instance -> bytes published, not answered
        self.freed_at: dict[str, float] = {}  # instance -> when bytes to it were last freed
        self.freed = asyncio.Event()
        self.stalled: dict[str, str] = {}  # instance -> why nothing more is sent to it
        self.refused = message_oversize(message)  # the message is too large for any gateway
        self.targets: dict[str, FanTarget] = {}
        self.check = check
        self.inbox = inbox
        self.channel = inbox.channel
        self.expected: list[str] = []  # ids the inbox hands this run the replies of
        self.sent = 0
        self.started = time.perf_counter()
        self.done = asyncio.Event()
        self.finished_sending = False

    # ------------------------------------------------------------------ outcomes
    def record(
        self, robot_id: str, outcome: FanOutcome, instance: str | None, reason: str | None
    ) -> None:
        self.summary.counts[outcome] += 1
        self.open.pop(robot_id, None)
        if self.on_outcome is not None:
            self.on_outcome(RobotOutcome(robot_id, outcome, instance, reason))

    def settled(self, key: Key) -> None:
        """``key`` needs no answer any more: when it was its envelope's last, the envelope's
        bytes leave its instance's window."""
        serial = self.carrier.pop(key, None)
        if serial is None:
            return
        envelope = self.envelopes[serial]
        envelope[2] -= 1
        if envelope[2] <= 0:
            del self.envelopes[serial]
            instance, size = envelope[0], envelope[1]
            self.inflight[instance] -= size
            self.freed_at[instance] = time.monotonic()
            self.freed.set()

    def on_reply(self, reply: Reply | BatchReply) -> None:
        """A reply from the inbox: a batch's, item by item, or a single envelope's (an item
        forwarded to an owner that does not speak batches is answered ``{batch}:{item}``)."""
        if isinstance(reply, BatchReply):
            for ident in reply.delivered:
                self.answered((reply.id, ident), Status.DELIVERED, reply.instance, None)
            for failed in reply.failed:
                self.answered((reply.id, failed.id), failed.status, reply.instance, failed.reason)
        else:
            self.answered(item_key(reply.id), reply.status, reply.instance, reply.reason)

    def expect(self, ident: str) -> None:
        """Have the inbox hand this run the replies carrying ``ident``."""
        self.inbox.expect(ident, self.on_reply)
        self.expected.append(ident)

    def answered(self, key: Key, status: Status, instance: str, reason: str | None) -> None:
        found = self.pending.pop(key, None)
        if found is None:
            return  # not ours, or a second answer (never counted twice)
        self.settled(key)
        self.record(found[0], _FROM_STATUS.get(status, FanOutcome.ERROR), instance, reason)
        if self.finished_sending and not self.pending:
            self.done.set()

    # ------------------------------------------------------------------ targets
    async def target(self, instance_id: str, conn_id_known: bool | None) -> FanTarget:
        found = self.targets.get(instance_id)
        if found is None:
            found = self.targets[instance_id] = await self.check(instance_id, conn_id_known)
        return found

    # ------------------------------------------------------------------ sending
    async def pace(self, count: int) -> None:
        """Wait until ``count`` more robots may be sent at ``rate`` per second."""
        rate = self.options.rate
        if rate > 0:
            delay = self.started + self.sent / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        self.sent += count

    async def room(self, instance_id: str, size: int) -> bool:
        """Wait until ``size`` more bytes fit the instance's window (at once when nothing to
        it is unanswered). False when it answered nothing for ``timeout`` seconds meanwhile."""
        waiting_since = time.monotonic()
        while (used := self.inflight.get(instance_id, 0)) > 0 and used + size > WINDOW_BYTES:
            progress = max(waiting_since, self.freed_at.get(instance_id, 0.0))
            remaining = progress + self.options.timeout - time.monotonic()
            if remaining <= 0:
                return False
            self.freed.clear()
            with contextlib.suppress(TimeoutError):
                await wait_within(self.freed.wait(), remaining)
        return True

    def envelopes_for(
        self, instance_id: str, chunk: list[str], batches: bool
    ) -> tuple[list[tuple[str, list[tuple[Key, str]]]], list[str]]:
        """The texts that carry ``chunk`` to the instance, each with its (key, robot) items:
        one batch (split when too large for one message) or one envelope per robot; and the
        robots that fit in no message (a robot id of megabytes)."""
        out: list[tuple[str, list[tuple[Key, str]]]] = []
        unfit: list[str] = []
        if batches:
            batch = Batch(
                items=tuple(Item(str(n), r) for n, r in enumerate(chunk)),
                message=self.message,
                reply_to=self.channel,
                origin=self.options.origin,
            )
            self.expect(batch.id)
            packed, left = pack_batch(batch, MAX_REQUEST_BYTES)
            for part, text in packed:
                out.append((text, [((part.id, i.id), i.robot_id) for i in part.items]))
            unfit = [i.robot_id for i in left]
            return out, unfit
        for robot_id in chunk:
            envelope = Envelope(
                op=Op.SEND,
                robot_id=robot_id,
                message=self.message,
                reply_to=self.channel,
                origin=self.options.origin,
            )
            text = encode(envelope)
            if oversize(text, MAX_REQUEST_BYTES) is None:
                self.expect(envelope.id)
                out.append((text, [((envelope.id, ""), robot_id)]))
            else:
                unfit.append(robot_id)
        return out, unfit

    async def send_group(self, instance_id: str, robots: list[str], known: bool | None) -> None:
        """Send to ``robots`` through ``instance_id`` (their owner, or the via instance)."""
        target = await self.target(instance_id, known)
        if not target.listening:
            for robot_id in robots:
                self.record(robot_id, FanOutcome.INSTANCE_UNREACHABLE, instance_id, target.why)
            return
        size = max(1, self.options.batch_items)
        if self.options.rate > 0:
            size = max(1, min(size, int(self.options.rate / 20)))
        for start in range(0, len(robots), size):
            chunk = robots[start : start + size]
            await self.pace(len(chunk))
            texts, unfit = self.envelopes_for(instance_id, chunk, target.batches)
            for robot_id in unfit:
                why = (
                    f"too large for one control-channel message ({format_bytes(MAX_PUBLISH_BYTES)})"
                )
                self.record(robot_id, FanOutcome.REJECTED, instance_id, why)
            await self.publish_window(instance_id, texts)

    async def publish_window(
        self, instance_id: str, texts: list[tuple[str, list[tuple[Key, str]]]]
    ) -> None:
        """Publish ``texts`` to the instance in as few pipelines as its window allows (one,
        unless the window fills). When the instance stalls (answers nothing for ``timeout``
        seconds with its window full), the robots of what is left are ``timeout``, unsent."""
        channel = self.keys.control_channel(instance_id)
        sized = [(text, items, utf8_size(text)) for text, items in texts]
        at = 0
        while at < len(sized):
            if instance_id not in self.stalled and not await self.room(instance_id, sized[at][2]):
                self.stalled[instance_id] = (
                    f"not sent: {instance_id} answered nothing for {self.options.timeout:g}s "
                    f"while {format_bytes(self.inflight[instance_id])} to it were unanswered"
                )
            if instance_id in self.stalled:
                why = self.stalled[instance_id]
                for _, items, _ in sized[at:]:
                    for _, robot_id in items:
                        self.record(robot_id, FanOutcome.TIMEOUT, instance_id, why)
                return
            group: list[tuple[str, list[tuple[Key, str]]]] = []
            while at < len(sized) and (
                not group or self.inflight.get(instance_id, 0) + sized[at][2] <= WINDOW_BYTES
            ):
                text, items, size = sized[at]
                self.reserve(instance_id, items, size)
                group.append((text, items))
                at += 1
            # a failure propagates: run() ends the fan-out (never a resend, never a wait)
            counts = await publish_many(self.client, [(channel, text) for text, _ in group])
            per_message = [[key for key, _ in items] for _, items in group]
            await self.unheard(instance_id, channel, per_message, counts)

    def reserve(self, instance_id: str, items: list[tuple[Key, str]], size: int) -> None:
        """Count one envelope about to be published: its items pending, its bytes in the
        instance's window until every item is answered."""
        serial = next(self.serials)
        self.envelopes[serial] = [instance_id, size, len(items)]
        self.inflight[instance_id] = self.inflight.get(instance_id, 0) + size
        for key, robot_id in items:
            self.pending[key] = (robot_id, instance_id)
            self.carrier[key] = serial
        self.summary.sent += len(items)

    async def unheard(
        self, instance_id: str, channel: str, per_message: list[list[Key]], counts: list[int]
    ) -> None:
        """Items whose PUBLISH reached no subscriber are ``instance_unreachable`` now: nobody
        got them, so no answer can come (a killed owner's liveness record outlives it by its TTL).

        A single node counts every subscriber of the channel. A cluster node counts only its
        own: wsctl publishes on the channel's home primary, where gateways subscribe, but a
        gateway that lost that node subscribes elsewhere; so on a cluster a count of 0 is
        checked with PUBSUB NUMSUB summed over every node first."""
        silent = [keys for keys, count in zip(per_message, counts, strict=True) if count == 0]
        if not silent:
            return
        if is_cluster(self.client) and await subscriber_count(self.client, channel) > 0:
            return
        reason = f"no subscriber on the control channel of {instance_id} (it is gone)"
        for keys in silent:
            for key in keys:
                found = self.pending.pop(key, None)
                if found is not None:
                    self.settled(key)
                    self.record(found[0], FanOutcome.INSTANCE_UNREACHABLE, instance_id, reason)

    async def owners(self, robots: list[str]) -> list[tuple[str, str | None, bool]]:
        """(robot, owner or None, entry has a conn_id) for each robot, in one pipeline."""
        return await lookup_owners(self.client, self.keys, robots)

    async def chunk(self, selection: list[tuple[str, str | None]]) -> None:
        """Send to one chunk of the selection: (robot, owner if already known)."""
        fresh: list[tuple[str, str | None]] = []
        for robot_id, owner in selection:
            if robot_id not in self.seen:
                self.seen.add(robot_id)
                fresh.append((robot_id, owner))
        self.summary.selected += len(fresh)
        self.open.update(dict.fromkeys(r for r, _ in fresh))
        if not fresh:
            return
        if self.refused is not None:  # too large for any gateway: nothing is looked up or sent
            for robot_id, _ in fresh:
                self.record(robot_id, FanOutcome.REJECTED, None, self.refused)
            return
        via = self.options.via
        if via is not None:
            await self.send_group(via, [r for r, _ in fresh], None)
            return
        unknown = [r for r, o in fresh if o is None]
        known_owner: dict[str, tuple[str, bool | None]] = {
            r: (o, None) for r, o in fresh if o is not None
        }
        for start in range(0, len(unknown), LOOKUP_CHUNK):
            for robot_id, owner, has_conn_id in await self.owners(
                unknown[start : start + LOOKUP_CHUNK]
            ):
                if owner is None:
                    self.record(robot_id, FanOutcome.NOT_CONNECTED, None, NO_ENTRY)
                else:
                    known_owner[robot_id] = (owner, has_conn_id)
        groups: dict[str, list[str]] = {}
        conn_ids: dict[str, bool | None] = {}
        for robot_id, _ in fresh:
            found = known_owner.get(robot_id)
            if found is None:
                continue
            owner, conn_id = found
            groups.setdefault(owner, []).append(robot_id)
            if conn_id is not None:
                conn_ids[owner] = bool(conn_ids.get(owner)) or conn_id
        for owner, robots in groups.items():
            await self.send_group(owner, robots, conn_ids.get(owner))

    async def run(self, selection: Selection) -> FanoutSummary:
        # answers are missed unless the inbox listens before anything is sent (a Redis
        # failure here is raised: nothing was sent)
        await self.inbox.ensure_ready(max(self.options.timeout, 1.0))
        try:
            try:
                async for part in selection:
                    await self.chunk(part)
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception:  # Redis failed (any way): settle every robot, then report it
                self.abort()
                raise
            self.summary.selection_done = True
            self.finished_sending = True
            if self.pending:
                with contextlib.suppress(TimeoutError):
                    await wait_within(self.done.wait(), self.options.timeout)
        finally:
            for ident in self.expected:
                self.inbox.forget(ident)
        for robot_id, instance_id in list(self.pending.values()):
            self.record(
                robot_id,
                FanOutcome.TIMEOUT,
                instance_id,
                f"no answer from {instance_id} within {self.options.timeout:g}s",
            )
        self.pending.clear()
        self.summary.seconds = time.perf_counter() - self.started
        return self.summary

    def abort(self) -> None:
        """Redis failed: settle every robot without an outcome (sent: ``timeout``, fate
        unknown; not sent: ``not_tried``) and mark the summary ``aborted``."""
        self.summary.aborted = True
        sent = {robot_id: instance_id for robot_id, instance_id in self.pending.values()}
        self.pending.clear()
        for robot_id in list(self.open):
            if robot_id in sent:
                why = "sent, but Redis failed before an answer came (it may have been delivered)"
                self.record(robot_id, FanOutcome.TIMEOUT, sent[robot_id], why)
            else:
                self.record(robot_id, FanOutcome.NOT_TRIED, None, "not sent: Redis failed first")
        self.summary.seconds = time.perf_counter() - self.started


async def fan_out(
    client: AsyncClient,
    keys: Keyspace,
    selection: Selection,
    message: str,
    options: FanoutOptions | None = None,
    on_outcome: Callable[[RobotOutcome], None] | None = None,
    summary: FanoutSummary | None = None,
    *,
    check: TargetCheck | None = None,
    inbox: Inbox | None = None,
) -> FanoutSummary:
    """Send ``message`` to every robot of ``selection`` (chunks of ``(robot_id, owner)``; an
    owner of None is read from the registry) and return the counts per outcome (in
    ``summary`` when given, which callers may watch while it runs); ``on_outcome`` sees each
    robot's outcome as it is known. ``check`` judges the instances sent to (default
    :func:`registry_check`); answers come to ``inbox`` (default the process's)."""
    runner = _FanOut(
        client,
        keys,
        message,
        options or FanoutOptions(),
        on_outcome,
        summary,
        check or registry_check(client, keys),
        inbox or inbox_for(client, keys),
    )
    return await runner.run(selection)


async def lookup_owners(
    client: AsyncClient, keys: Keyspace, robots: list[str]
) -> list[tuple[str, str | None, bool]]:
    """(robot, owner or None, entry has a conn_id) for each robot, in one pipeline."""
    pipe = client.pipeline(transaction=False)
    for robot_id in robots:
        pipe.hmget(keys.conn_key(robot_id), [F_INSTANCE_ID, F_CONN_ID])
    rows = await pipe.execute()
    return [
        (robot_id, str(owner) if owner else None, bool(conn_id))
        for robot_id, (owner, conn_id) in zip(robots, rows, strict=True)
    ]


async def with_owners(
    client: AsyncClient, keys: Keyspace, selection: Selection
) -> AsyncIterator[list[tuple[str, str | None]]]:
    """``selection`` with every unknown owner read from the registry (pipelined, at most
    :data:`LOOKUP_CHUNK` a pipeline); a robot without an entry keeps None."""
    async for part in selection:
        unknown = [r for r, o in part if o is None]
        found: dict[str, str | None] = {}
        for start in range(0, len(unknown), LOOKUP_CHUNK):
            for robot_id, owner, _ in await lookup_owners(
                client, keys, unknown[start : start + LOOKUP_CHUNK]
            ):
                found[robot_id] = owner
        yield [(r, o if o is not None else found.get(r)) for r, o in part]


async def chunks_of(
    ids: Iterable[str], size: int = LOOKUP_CHUNK
) -> AsyncIterator[list[tuple[str, str | None]]]:
    """A selection from plain robot ids (owners to be read)."""
    part: list[tuple[str, str | None]] = []
    for robot_id in ids:
        part.append((robot_id, None))
        if len(part) >= size:
            yield part
            part = []
            await asyncio.sleep(0)
    if part:
        yield part


async def registry_selection(
    store: RegistryStore, robot_glob: str | None = None, instance: str | None = None
) -> AsyncIterator[list[tuple[str, str | None]]]:
    """The registry's robots matching ``robot_glob`` (all when None) and, when given, owned by
    ``instance``, in batches as they are read (SCAN + pipelined reads), with their owners."""
    async for batch in store.iter_batches(robot_glob):
        part = [
            (e.robot_id, e.instance_id or None)
            for e in batch
            if instance is None or e.instance_id == instance
        ]
        if part:
            yield part


def selection_of(robots: Iterable[str] | Selection) -> Selection:
    """``robots`` as a selection: a selection as is, plain robot ids by :func:`chunks_of`."""
    if isinstance(robots, AsyncIterable):
        return robots
    if isinstance(robots, str):
        raise TypeError("robots: give a list of robot ids, not one string")
    return chunks_of(robots)
