"""The outbox's coalescing, deadlines and bounds, over a stand-in for the fleet core's routing
(no Redis: what route() is handed and when is what these tests look at; the real routing is
tested end to end in tests/integration/test_app_send.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from wsctl.gateway.batch_router import Routed
from wsctl.gateway.local import LocalConn, LocalConnections
from wsctl.gateway.outbox import REPLY_HOLD_MS, SWEEP_EVERY, Outbox
from wsctl.gateway.outcomes import SendOutcome
from wsctl.protocol.batch import Batch, BatchReply
from wsctl.protocol.envelopes import Hop
from wsctl.redis.target import Target


class FakeInbox:
    channel = "ws_reply:inbox-test"
    subscribed = True

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def expect(self, ident: str, handler: Any) -> None:
        self.handlers[ident] = handler

    def forget(self, ident: str) -> None:
        self.handlers.pop(ident, None)

    async def wait_ready(self, timeout: float) -> bool:
        return True


class FakeOwners:
    def __init__(self) -> None:
        self.confirmed: list[tuple[str, str]] = []

    def invalidate(self, robot_ids: Any) -> None:
        list(robot_ids)

    def confirm(self, robot_id: str, owner: str, now: float) -> bool:
        self.confirmed.append((robot_id, owner))
        return True


class FakeRouter:
    """Forwards every item to ``gw-b``, which answers ``delivered`` at once (unless held)."""

    def __init__(self, inbox: FakeInbox) -> None:
        self.inbox = inbox
        self.owners = FakeOwners()
        self.batches: list[tuple[float, Batch]] = []
        self.hold: asyncio.Event | None = None

    async def route(self, batch: Batch, *, events: bool = True) -> Routed:
        self.batches.append((time.monotonic(), batch))
        if self.hold is not None:
            await self.hold.wait()
        routed = Routed(forwarded=[(item.id, "gw-b") for item in batch.items])
        if batch.reply_to:
            reply = BatchReply(
                id=batch.id,
                instance="gw-b",
                delivered=tuple(i.id for i in batch.items),
                route=(*batch.route, Hop("gw-b", time.time())),
            )
            asyncio.get_running_loop().call_soon(self.inbox.handlers[batch.id], reply)
        return routed


class FakeCore:
    instance_id = "gw-a"
    target = Target("tcp", port=1, password="s3cret")
    local = LocalConnections()
    lanes = None  # every publish goes the flusher's way

    def __init__(self) -> None:
        self._inbox = FakeInbox()
        self.batches: Any = FakeRouter(self._inbox)

    @property
    def inbox(self) -> Any:
        return self._inbox


async def _running(outbox: Outbox) -> asyncio.Task[None]:
    task = asyncio.create_task(outbox.run())
    await asyncio.sleep(0)
    return task


async def test_sends_made_together_leave_in_one_batch_and_each_gets_its_answer() -> None:
    core = FakeCore()
    outbox = Outbox(core)
    task = await _running(outbox)
    try:
        results = await asyncio.gather(*(outbox.send(f"r{n}", f"m{n}", 5.0) for n in range(150)))
        assert [r.outcome for r in results] == [SendOutcome.DELIVERED] * 150
        assert results[7].route == ("gw-a", "gw-b") and results[7].robot_id == "r7"
        (_, batch), *more = core.batches.batches
        assert more == [] and len(batch.items) == 150
        assert [batch.text(i) for i in batch.items[:3]] == ["m0", "m1", "m2"]  # order kept
        assert core.inbox.handlers == {}  # every item answered: the batch is forgotten
    finally:
        task.cancel()


async def test_an_identical_message_is_carried_once_per_batch() -> None:
    core = FakeCore()
    outbox = Outbox(core)
    task = await _running(outbox)
    try:
        await asyncio.gather(*(outbox.send(f"r{n}", "same", 5.0) for n in range(10)))
        (_, batch), *_ = core.batches.batches
        assert batch.message == "same" and all(i.message is None for i in batch.items)
    finally:
        task.cancel()


async def test_a_send_made_right_after_a_flush_leaves_at_once_without_a_linger() -> None:
    """50 sends one after another, each awaited: each leaves in a flush of its own as soon as
    it is made. A fixed linger of even 2 ms between flushes would take 98 ms or more."""
    core = FakeCore()
    outbox = Outbox(core)
    task = await _running(outbox)
    try:
        started = time.monotonic()
        for n in range(50):
            await outbox.send(f"r{n}", f"m{n}", 5.0)
        took = time.monotonic() - started
        assert [len(b.items) for _, b in core.batches.batches] == [1] * 50
        assert took < 0.05, took
    finally:
        task.cancel()


async def test_an_owner_answer_that_delivered_confirms_the_owner_cache_entry() -> None:
    core = FakeCore()
    outbox = Outbox(core)
    task = await _running(outbox)
    try:
        await asyncio.gather(*(outbox.send(f"r{n}", f"m{n}", 5.0) for n in range(3)))
        assert core.batches.owners.confirmed == [("r0", "gw-b"), ("r1", "gw-b"), ("r2", "gw-b")]
    finally:
        task.cancel()


async def test_a_lone_acknowledged_send_and_sends_awaited_in_sequence_ask_for_no_reply_hold() -> (
    None
):
    """Nothing else waits for an answer: the owner must answer at once (reply_hold_ms 0)."""
    core = FakeCore()
    outbox = Outbox(core)
    task = await _running(outbox)
    try:
        for n in range(5):
            assert (await outbox.send(f"r{n}", "m", 5.0)).outcome is SendOutcome.DELIVERED
        assert [b.reply_hold_ms for _, b in core.batches.batches] == [0] * 5
    finally:
        task.cancel()


async def test_batches_flushed_while_earlier_ones_await_answers_accept_bundles_within_half_their_time() -> (
    None
):
    """Under load (an earlier acknowledged batch still unanswered) the owner may bundle the
    answers (reply_hold_ms), never holding one past half the earliest acknowledged send's
    time left; a plain (unbundled) answer settles them as well; a batch that only publishes
    asks for nothing."""
    core = FakeCore()
    outbox = Outbox(core)
    answer = core.batches.route
    core.batches.route = _forward_without_answer
    task = await _running(outbox)
    try:
        first = outbox.submit("r0", "m", 5.0)
        await asyncio.sleep(0.01)  # flushed, unanswered
        core.batches.route = answer
        await outbox.send("r1", "m", 5.0)
        await outbox.send("r2", "m", 0.05)
        await outbox.send("r3", "m", 5.0, ack=False)
        holds = [b.reply_hold_ms for _, b in core.batches.batches]
        assert holds[0] == REPLY_HOLD_MS and 20 <= holds[1] <= 25 and holds[2] == 0, holds
        assert not first.done()
    finally:
        task.cancel()


async def test_no_reply_hold_is_asked_when_bundling_is_off() -> None:
    core = FakeCore()
    outbox = Outbox(core, bundle_replies=False)
    holds: list[int] = []

    async def unanswered(batch: Batch, *, events: bool = True) -> Routed:
        holds.append(batch.reply_hold_ms)
        return await _forward_without_answer(batch)

    core.batches.route = unanswered
    task = await _running(outbox)
    try:
        outbox.submit("r0", "m", 5.0)
        await asyncio.sleep(0.01)
        outbox.submit("r1", "m", 5.0)
        await asyncio.sleep(0.01)
        assert holds == [0, 0]
    finally:
        task.cancel()


async def test_sends_made_while_a_flush_waits_on_redis_leave_together_in_the_next() -> None:
    core = FakeCore()
    outbox = Outbox(core)
    core.batches.hold = asyncio.Event()
    task = await _running(outbox)
    try:
        first = asyncio.create_task(outbox.send("r0", "m0", 5.0))
        await asyncio.sleep(0.01)  # its flush is under way (held by "Redis")
        rest = [asyncio.create_task(outbox.send(f"r{n}", f"m{n}", 5.0)) for n in range(1, 40)]
        await asyncio.sleep(0.01)
        core.batches.hold.set()
        await asyncio.gather(first, *rest)
        assert [len(b.items) for _, b in core.batches.batches] == [1, 39]
    finally:
        task.cancel()


async def test_a_send_still_queued_at_its_deadline_times_out_and_is_never_sent() -> None:
    core = FakeCore()
    core.batches.hold = asyncio.Event()  # Redis stuck on the first flush
    outbox = Outbox(core)
    task = await _running(outbox)
    try:
        first = asyncio.create_task(outbox.send("r1", "stuck", 5.0))
        await asyncio.sleep(0.01)
        late = await outbox.send("r2", "queued", 0.05)
        assert late.outcome is SendOutcome.TIMEOUT
        assert late.reason == "not sent within 0.05s: withdrawn, never sent"
        core.batches.hold.set()
        assert (await first).outcome is SendOutcome.DELIVERED
        await outbox.send("r3", "next", 5.0)
        sent = [b.text(i) for _, b in core.batches.batches for i in b.items]
        assert sent == ["stuck", "next"]  # the timed-out one never left
        assert not outbox.holds("r2")
    finally:
        task.cancel()


async def test_a_send_being_handed_to_redis_at_its_deadline_says_it_may_still_arrive() -> None:
    """Not "not handed to Redis": its PUBLISH may have gone out (Redis frozen, then resumed)."""
    core = FakeCore()
    core.batches.hold = asyncio.Event()  # the flush's Redis call does not return
    outbox = Outbox(core)
    task = await _running(outbox)
    try:
        result = await outbox.send("r1", "maybe", 0.05)
        assert result.outcome is SendOutcome.TIMEOUT
        assert (
            result.reason == "no outcome within 0.05s: being handed to Redis, it may still arrive"
        )
        core.batches.hold.set()
    finally:
        task.cancel()


class RefusedInbox(FakeInbox):
    """Redis refuses connections: the inbox cannot subscribe, and says so at once."""

    subscribed = False
    refused: BaseException | None = ConnectionError("Error 111 connecting to :s3cret@host")

    async def wait_ready(self, timeout: float) -> bool:
        return False


async def test_a_send_fails_at_once_when_redis_refuses_and_does_not_hold_up_a_publish() -> None:
    core = FakeCore()
    core._inbox = RefusedInbox()
    outbox = Outbox(core)
    task = await _running(outbox)
    try:
        started = time.monotonic()
        sent, published = await asyncio.gather(
            outbox.send("r1", "m", 10.0), outbox.send("r2", "m", 10.0, ack=False)
        )
        assert time.monotonic() - started < 1.0
        assert sent.outcome is SendOutcome.ERROR
        assert sent.reason is not None and sent.reason.startswith("Redis unavailable: ")
        assert "s3cret" not in sent.reason
        assert published.outcome is SendOutcome.PUBLISHED  # routed on its own
        assert [b.text(i) for _, b in core.batches.batches for i in b.items] == ["m"]
    finally:
        task.cancel()


class LostInbox(FakeInbox):
    """The reply inbox lost its subscription (Redis restarted, a failover) and is not back."""

    subscribed = False
    refused: BaseException | None = None

    def start(self) -> None:
        pass

    async def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.subscribed and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.subscribed


@contextlib.asynccontextmanager
async def _inbox_away() -> AsyncIterator[tuple[FakeCore, Outbox]]:
    """A running outbox whose reply inbox is not subscribed (until the test says so)."""
    core = FakeCore()
    core._inbox = core.batches.inbox = LostInbox()
    outbox = Outbox(core)
    task = await _running(outbox)
    try:
        yield core, outbox
    finally:
        task.cancel()


async def test_publishes_do_not_wait_behind_acknowledged_sends_waiting_for_the_inbox() -> None:
    """Acknowledged sends wait aside until the reply inbox is back, with every later message
    to their robots (order kept); everything else, a publish made after them included,
    leaves at once."""
    async with _inbox_away() as (core, outbox):
        acked = outbox.submit("r1", "a1", 5.0)
        behind = outbox.submit("r1", "p1", 5.0, ack=False)  # same robot: stays behind a1
        other = outbox.submit("r2", "p2", 5.0, ack=False)
        assert (await other).outcome is SendOutcome.PUBLISHED
        later = await outbox.send("r3", "p3", 5.0, ack=False)  # a later batch: not held
        assert later.outcome is SendOutcome.PUBLISHED
        assert not acked.done() and not behind.done() and outbox.queued == 2
        assert outbox.holds("r1")  # a local write to r1 must queue behind it too
        core.inbox.subscribed = True  # the inbox is back
        assert (await acked).outcome is SendOutcome.DELIVERED
        assert (await behind).outcome is SendOutcome.PUBLISHED
        texts = [[b.text(i) for i in b.items] for _, b in core.batches.batches]
        assert texts == [["p2"], ["p3"], ["a1", "p1"]]


async def test_a_send_waiting_for_the_inbox_at_its_deadline_is_withdrawn_never_sent() -> None:
    async with _inbox_away() as (core, outbox):
        result = await outbox.send("r1", "a1", 0.05)
        assert result.outcome is SendOutcome.TIMEOUT
        assert result.reason == "not sent within 0.05s: withdrawn, never sent"
        core.inbox.subscribed = True
        await asyncio.sleep(0.05)
        assert core.batches.batches == [] and not outbox.holds("r1") and outbox.queued == 0


async def test_a_robot_stays_parked_only_while_an_acknowledged_send_to_it_waits_ahead() -> None:
    """The acknowledged send that parked r1 timed out (withdrawn): the publishes behind it
    and later ones leave at once, while the inbox is still away."""
    async with _inbox_away() as (core, outbox):
        acked = outbox.submit("r1", "a1", 0.1)
        behind = [outbox.submit("r1", f"p{n}", 5.0, ack=False) for n in range(3)]
        assert (await acked).outcome is SendOutcome.TIMEOUT
        results = await asyncio.wait_for(asyncio.gather(*behind), 1.0)
        assert [r.outcome for r in results] == [SendOutcome.PUBLISHED] * 3
        late = await asyncio.wait_for(outbox.send("r1", "p-late", 5.0, ack=False), 1.0)
        assert late.outcome is SendOutcome.PUBLISHED
        texts = [b.text(i) for _, b in core.batches.batches for i in b.items]
        assert texts == ["p0", "p1", "p2", "p-late"]  # order kept, a1 never sent
        assert not outbox.holds("r1") and outbox.queued == 0


async def test_a_cancelled_acknowledged_send_lets_the_sends_parked_behind_it_go() -> None:
    async with _inbox_away() as (_core, outbox):
        acked = outbox.submit("r1", "a1", 5.0)
        behind = outbox.submit("r1", "p1", 5.0, ack=False)
        await asyncio.sleep(0.02)
        assert not behind.done()
        acked.cancel()
        assert (await asyncio.wait_for(behind, 1.0)).outcome is SendOutcome.PUBLISHED


async def _a_publish_between_two_acks_after_the_first_ends(end: str) -> None:
    """r1 gets a1 (acknowledged), p1 (publish), a2 (acknowledged) while the inbox is away; a1
    ends (``end``: it times out, or its sender cancels it): p1 leaves at once, ahead of a2,
    which waits for the inbox and then follows it."""
    async with _inbox_away() as (core, outbox):
        a1 = outbox.submit("r1", "a1", 0.1 if end == "timeout" else 5.0)
        p1 = outbox.submit("r1", "p1", 5.0, ack=False)
        a2 = outbox.submit("r1", "a2", 5.0)
        await asyncio.sleep(0.02)
        assert not p1.done()  # behind a1
        if end == "cancel":
            a1.cancel()
        else:
            assert (await a1).outcome is SendOutcome.TIMEOUT
        assert (await asyncio.wait_for(p1, 1.0)).outcome is SendOutcome.PUBLISHED
        assert not a2.done() and outbox.holds("r1")  # still waiting for the inbox
        core.inbox.subscribed = True
        assert (await asyncio.wait_for(a2, 1.0)).outcome is SendOutcome.DELIVERED
        texts = [b.text(i) for _, b in core.batches.batches for i in b.items]
        assert texts == ["p1", "a2"]  # submission order; a1 never sent


async def test_a_publish_behind_a_timed_out_ack_leaves_before_the_next_ack_to_its_robot() -> None:
    await _a_publish_between_two_acks_after_the_first_ends("timeout")


async def test_a_publish_behind_a_cancelled_ack_leaves_before_the_next_ack_to_its_robot() -> None:
    await _a_publish_between_two_acks_after_the_first_ends("cancel")


async def test_a_robots_sends_leave_in_submission_order_after_an_ack_ahead_ends() -> None:
    """r1 gets a1 (acknowledged, times out), then p1, a2, p2, p3, a3 and p4 after it, while
    the inbox is away: p1 leaves once a1 ends; the rest wait behind a2 and, once the inbox is
    back, reach r1 in the order they were made."""
    async with _inbox_away() as (core, outbox):
        a1 = outbox.submit("r1", "a1", 0.1)
        names = ["p1", "a2", "p2", "p3", "a3", "p4"]
        rest = [outbox.submit("r1", n, 5.0, ack=n.startswith("a")) for n in names]
        assert (await a1).outcome is SendOutcome.TIMEOUT
        await asyncio.wait_for(rest[0], 1.0)
        late = outbox.submit("r1", "p5", 5.0, ack=False)  # made while a2 still waits
        await asyncio.sleep(0.02)
        assert not late.done()
        core.inbox.subscribed = True
        await asyncio.wait_for(asyncio.gather(*rest, late), 1.0)
        texts = [b.text(i) for _, b in core.batches.batches for i in b.items]
        assert texts == [*names, "p5"]


async def test_parked_sends_are_not_polled_while_nothing_changes() -> None:
    """While sends wait for the inbox, the flusher looks at them only when something
    changes (the inbox's state, a parked send's end), not on a timer nor per submit."""
    core = FakeCore()
    core._inbox = core.batches.inbox = LostInbox()
    outbox = Outbox(core)
    looks = 0
    real = outbox._unpark

    def counted() -> None:
        nonlocal looks
        if outbox._parked:
            looks += 1 if outbox._park_changed else 0
        real()

    task = await _running(outbox)
    try:
        parked = [outbox.submit(f"r{n}", "a", 5.0) for n in range(200)]
        await asyncio.sleep(0.02)
        outbox._unpark = counted  # type: ignore[method-assign]
        for n in range(100):  # publishes to other robots: they leave, nothing parked changes
            outbox.submit(f"x{n}", "p", 5.0, ack=False)
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.1)
        assert looks == 0 and outbox.queued == 200
        core.inbox.subscribed = True
        results = await asyncio.wait_for(asyncio.gather(*parked), 2.0)
        assert {r.outcome for r in results} == {SendOutcome.DELIVERED}
        assert looks >= 1
    finally:
        task.cancel()


async def test_an_acknowledged_send_to_a_robot_held_here_does_not_wait_for_the_inbox() -> None:
    """A robot whose socket is here is answered here (written), not by the reply inbox."""
    core = FakeCore()
    core.local = LocalConnections()
    core.local.add(LocalConn("here", "c1", sock=None))
    core._inbox = core.batches.inbox = LostInbox()
    outbox = Outbox(core)
    task = await _running(outbox)
    try:
        await asyncio.wait_for(outbox.send("here", "m", 5.0), 1.0)
        assert [[i.robot_id for i in b.items] for _, b in core.batches.batches] == [["here"]]
    finally:
        task.cancel()


async def test_an_unanswered_forward_times_out_naming_the_owner() -> None:
    core = FakeCore()
    outbox = Outbox(core)
    core.batches.route = _forward_without_answer
    task = await _running(outbox)
    try:
        result = await outbox.send("r1", "m", 0.05)
        assert result.outcome is SendOutcome.TIMEOUT
        assert result.reason == "no reply from gw-b within 0.05s"
        assert len(core.inbox.handlers) == 1
        await asyncio.sleep(SWEEP_EVERY * 1.5)
        assert core.inbox.handlers == {}  # nobody waits: the batch is forgotten
    finally:
        task.cancel()


async def _forward_without_answer(batch: Batch, *, events: bool = True) -> Routed:
    return Routed(forwarded=[(item.id, "gw-b") for item in batch.items])


async def test_batches_are_bounded_by_messages_and_by_bytes() -> None:
    core = FakeCore()
    outbox = Outbox(core, batch_items=100, batch_bytes=10_000)
    task = await _running(outbox)
    try:
        await asyncio.gather(*(outbox.send(f"r{n}", "s", 5.0) for n in range(250)))
        assert [len(b.items) for _, b in core.batches.batches] == [100, 100, 50]
        core.batches.batches.clear()
        big = "x" * 3000  # about three to a batch
        await asyncio.gather(*(outbox.send(f"r{n}", big + str(n), 5.0) for n in range(7)))
        assert [len(b.items) for _, b in core.batches.batches] == [3, 3, 1]
        core.batches.batches.clear()
        await outbox.send("huge", "y" * 50_000, 5.0)  # alone it may be larger
        assert [len(b.items) for _, b in core.batches.batches] == [1]
    finally:
        task.cancel()


async def test_published_sends_leave_in_larger_batches_than_acknowledged_ones() -> None:
    core = FakeCore()
    outbox = Outbox(core, batch_items=100, batch_bytes=100_000, publish_items=400)
    task = await _running(outbox)
    try:
        await asyncio.gather(*(outbox.send(f"r{n}", "p", 5.0, ack=False) for n in range(500)))
        assert [len(b.items) for _, b in core.batches.batches] == [400, 100]
        core.batches.batches.clear()
        # acknowledged sends among them still count towards batch_items: every other one here,
        # so the 100th acknowledged send (the 199th item) ends the first batch
        sends = [outbox.send(f"a{n}", "s", 5.0, ack=n % 2 == 0) for n in range(300)]
        results = await asyncio.gather(*sends)
        assert [len(b.items) for _, b in core.batches.batches] == [199, 101]
        assert {r.outcome for r in results[0::2]} == {SendOutcome.DELIVERED}
    finally:
        task.cancel()


async def test_publish_returns_once_handed_over_without_asking_for_an_answer() -> None:
    core = FakeCore()
    outbox = Outbox(core)
    task = await _running(outbox)
    try:
        result = await outbox.send("r1", "m", 5.0, ack=False)
        assert result.outcome is SendOutcome.PUBLISHED and result.route == ("gw-a", "gw-b")
        ((_, batch),) = core.batches.batches
        assert batch.reply_to is None  # the owner is asked for no reply
        assert core.inbox.handlers == {}
    finally:
        task.cancel()


async def test_each_send_times_out_at_its_own_deadline_a_shorter_one_after_a_longer_one() -> None:
    core = FakeCore()
    core.batches.hold = asyncio.Event()  # Redis stuck: nothing gets an answer
    outbox = Outbox(core)
    task = await _running(outbox)
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        longer = asyncio.create_task(outbox.send("r1", "a", 0.4))
        await asyncio.sleep(0)
        shorter = asyncio.create_task(outbox.send("r2", "b", 0.1))
        first = (await shorter, loop.time() - started)
        second = (await longer, loop.time() - started)
        assert first[0].outcome is SendOutcome.TIMEOUT and 0.1 <= first[1] < 0.3
        assert second[0].outcome is SendOutcome.TIMEOUT and 0.4 <= second[1] < 0.6
    finally:
        core.batches.hold.set()
        task.cancel()


async def test_settled_sends_are_not_held_until_their_deadline() -> None:
    core = FakeCore()
    outbox = Outbox(core)
    task = await _running(outbox)
    try:
        for _ in range(10):  # 30,000 sends answered at once, each with a minute to go
            await asyncio.gather(*(outbox.send(f"r{n}", "m", 60.0) for n in range(3000)))
        assert len(outbox._deadlines) <= 10_000  # forgotten once settled, not after a minute
    finally:
        task.cancel()


async def test_a_forward_nobody_heard_times_out_as_never_sent_while_it_waits_to_be_routed() -> None:
    """A published message whose cached owner did not hear it waits for a second route; if
    its deadline comes first, nobody got it: ``withdrawn, never sent`` (safe to send again),
    not ``it may still arrive``."""
    core = FakeCore()
    outbox = Outbox(core)
    future = outbox.submit("r1", "m", 0.05, ack=False)
    sent = outbox._queue.popleft()
    sent.taken = True  # handed to Redis early ...
    outbox._not_heard([sent])  # ... and nobody heard it
    result = await asyncio.wait_for(future, 1)
    assert result.outcome is SendOutcome.TIMEOUT
    assert "withdrawn, never sent" in (result.reason or ""), result.reason
