"""The early hand-over of published messages (:mod:`wsctl.gateway.outbox`, its module doc):
app code on one instance (a real :class:`~wsctl.gateway.core.FleetCore`, no robots of its
own) publishes bursts to robots held by a real gateway, over real Redis and real WebSockets
on 127.0.0.1. Bursts are handed to Redis from inside the ``publish`` calls (early batches),
each robot gets each message once and in order, with acknowledged sends interleaved, with a
stale cached owner, and while Redis is frozen, killed, a cluster, or the instance stops."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
import redis
from websockets.asyncio.client import ClientConnection

from tests.conftest import Backend, open_test_store
from tests.faults import frozen
from tests.fleet import running_fleet, wait_for
from tests.robot_clients import registered, robots
from wsctl.config import load_settings
from wsctl.gateway.core import CoreConfig, FleetCore
from wsctl.gateway.outcomes import SendOutcome, SendResult
from wsctl.gateway.server import Gateway
from wsctl.redis.factory import target_from_settings
from wsctl.sandbox.redis_servers import RedisServer

ROBOTS = 40
BURST = 1200  # messages in one asyncio.gather: 30 per robot, several early batches


@dataclass
class Received:
    """What each robot got, read as it arrives (a task per connection)."""

    frames: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def total(self) -> int:
        return sum(map(len, self.frames.values()))

    def numbers(self, robot_id: str) -> list[int]:
        return [json.loads(frame)["n"] for frame in self.frames[robot_id]]


@contextlib.asynccontextmanager
async def reading(conns: dict[str, ClientConnection]) -> AsyncIterator[Received]:
    received = Received()

    async def read(robot_id: str, conn: ClientConnection) -> None:
        with contextlib.suppress(Exception):  # the connection closed: the test checks counts
            async for frame in conn:
                received.frames[robot_id].append(str(frame))

    received.tasks = [asyncio.create_task(read(r, c)) for r, c in conns.items()]
    try:
        yield received
    finally:
        for task in received.tasks:
            task.cancel()
        await asyncio.gather(*received.tasks, return_exceptions=True)


@dataclass
class Pair:
    """App code's instance (``core``), the gateway holding the robots, and the robots."""

    core: FleetCore
    gateway: Gateway
    gateways: dict[str, Gateway]
    backend: Backend
    robot_ids: list[str]
    received: Received
    conns: dict[str, ClientConnection]
    sent: int = 0  # numbers given to messages so far (each message is {"n": its number})

    def burst(
        self,
        count: int = BURST,
        *,
        kind: str = "publish",
        timeout: float = 5.0,
        robot_ids: list[str] | None = None,
        pad: int = 0,
    ) -> tuple[list[tuple[str, int]], list[asyncio.Future[SendResult]]]:
        """``count`` messages round-robin over the robots, all submitted in one go (no await
        between them); ``kind``: "publish", "send", or "mixed" (every fourth a send);
        ``pad``: characters added to each message."""
        targets = robot_ids or self.robot_ids
        plan: list[tuple[str, int]] = []
        calls = []
        for i in range(count):
            n = self.sent + i
            robot_id = targets[i % len(targets)]
            text = json.dumps({"n": n, "pad": "x" * pad} if pad else {"n": n})
            ack = kind == "send" or (kind == "mixed" and i % 4 == 3)
            call = self.core.send if ack else self.core.publish
            plan.append((robot_id, n))
            calls.append(call(robot_id, text, timeout=timeout))
        self.sent += count
        return plan, [asyncio.ensure_future(c) for c in calls]

    async def warm(self) -> None:
        """Every robot's owner read once (the owner cache and the owner's protocol known)."""
        _, futures = self.burst(len(self.robot_ids), kind="send")
        results = await asyncio.gather(*futures)
        assert {r.outcome for r in results} == {SendOutcome.DELIVERED}, results[:3]
        await wait_for(lambda: self.received.total() >= self.sent, timeout=10)

    async def arrived(self, plan: list[tuple[str, int]], within: float = 10.0) -> None:
        """Every message of ``plan`` arrived, once and in order per robot, among what each
        robot got (checked once nothing more comes)."""
        wanted: dict[str, list[int]] = collections.defaultdict(list)
        for robot_id, n in plan:
            wanted[robot_id].append(n)

        def complete() -> bool:
            return all(set(ns) <= set(self.received.numbers(r)) for r, ns in wanted.items())

        await wait_for(complete, timeout=within)
        await asyncio.sleep(0.3)  # a copy would come now
        for robot_id, ns in wanted.items():
            got = [n for n in self.received.numbers(robot_id) if n in set(ns)]
            assert got == ns, (robot_id, got[:10], ns[:10])


@contextlib.asynccontextmanager
async def pair(
    backend: Backend,
    *,
    early_publish: bool = True,
    publish_lanes: bool = True,
    socket_timeout: float = 5.0,
    robot_count: int = ROBOTS,
    names: tuple[str, ...] = ("early-b",),
) -> AsyncIterator[Pair]:
    """App code's instance ``early-a`` and the gateways ``names``, the robots on the first."""
    target = target_from_settings(load_settings(env=backend.env))
    core = FleetCore(
        CoreConfig(
            instance_id="early-a",
            heartbeat_interval=3600.0,
            early_publish=early_publish,
            publish_lanes=publish_lanes,
            socket_timeout=socket_timeout,
        ),
        target,
    )
    await core.start()
    try:
        await core.wait_subscribed()
        async with (
            running_fleet(backend.env, names) as fleet,
            open_test_store(backend) as store,
        ):
            gateway = fleet[names[0]]
            robot_ids = [f"early-{i}" for i in range(robot_count)]
            async with robots({r: gateway.ws_url for r in robot_ids}) as conns:
                await wait_for(lambda: registered(store, robot_ids), timeout=10)
                async with reading(conns) as received:
                    yield Pair(core, gateway, fleet, backend, robot_ids, received, conns)
    finally:
        await core.stop()


def outcomes(results: list[SendResult]) -> dict[str, int]:
    return dict(collections.Counter(r.outcome.value for r in results))


async def _arrived_once_saying(
    fleet: Pair, plan: list[tuple[str, int]], results: list[SendResult], words: str
) -> set[tuple[str, int]]:
    """After a frozen Redis resumed (what it had read runs then): every message of ``plan``
    that arrived said ``timeout`` with ``words`` in its reason, and none arrived twice.
    Returns what arrived."""
    await asyncio.sleep(1.0)
    got = {(r, n) for r in fleet.robot_ids for n in fleet.received.numbers(r)}
    for item, result in zip(plan, results, strict=True):
        if item in got:
            assert result.outcome is SendOutcome.TIMEOUT, (item, result)
            assert words in (result.reason or ""), result
    for robot_id in fleet.robot_ids:
        numbers = fleet.received.numbers(robot_id)
        assert len(numbers) == len(set(numbers)), robot_id
    return got


@contextlib.contextmanager
def own_redis() -> Iterator[tuple[RedisServer, Backend]]:
    with RedisServer() as server:
        yield server, Backend("own", {"WSCTL_REDIS_URL": server.url}, single=server)


async def test_a_burst_of_publishes_is_handed_over_early_and_arrives_once_in_order(
    backend: Backend,
) -> None:
    async with pair(backend) as fleet:
        await fleet.warm()
        early = fleet.core.outbox.early_batches
        plan, futures = fleet.burst()
        results = await asyncio.gather(*futures)
        assert outcomes(results) == {"published": BURST}
        assert fleet.core.outbox.early_batches > early
        said = [
            float(line.rsplit(" ", 1)[1])
            for line in fleet.core.metrics_text().splitlines()
            if line.startswith("wsctl_gateway_outbox_early_batches_total{")
        ]
        assert said == [fleet.core.outbox.early_batches]
        await fleet.arrived(plan)


async def test_with_early_publish_off_a_burst_takes_no_early_batch(single: Backend) -> None:
    async with pair(single, early_publish=False) as fleet:
        await fleet.warm()
        plan, futures = fleet.burst()
        results = await asyncio.gather(*futures)
        assert outcomes(results) == {"published": BURST}
        assert fleet.core.outbox.early_batches == 0
        await fleet.arrived(plan)


async def test_forwarded_sends_leave_on_the_lanes_and_never_take_a_pipeline_from_the_pool(
    single: Backend,
) -> None:
    """Once the lanes are open, the flusher's forward batches go on them: acknowledged sends
    are delivered and answered while the sending instance's pool cannot make a pipeline."""
    async with pair(single) as fleet:
        await fleet.warm()
        made: list[int] = []

        def refuse(*args: object, **kwargs: object) -> None:
            made.append(1)
            raise AssertionError("the pool's pipeline was used")

        with pytest.MonkeyPatch.context() as patched:
            patched.setattr(fleet.core.client, "pipeline", refuse)
            plan, futures = fleet.burst(300, kind="send")
            results = await asyncio.gather(*futures)
        assert outcomes(results) == {"delivered": 300}
        assert made == []
        await fleet.arrived(plan)


async def test_with_publish_lanes_off_every_send_and_publish_goes_through_the_pool(
    single: Backend,
) -> None:
    async with pair(single, publish_lanes=False) as fleet:
        assert fleet.core.lanes is None
        await fleet.warm()
        plan, futures = fleet.burst(kind="mixed")
        results = await asyncio.gather(*futures)
        assert outcomes(results) == {"published": BURST - BURST // 4, "delivered": BURST // 4}
        assert fleet.core.outbox.early_batches == 0
        await fleet.arrived(plan)


async def test_publishes_and_acknowledged_sends_in_one_burst_keep_each_robots_order(
    single: Backend,
) -> None:
    async with pair(single) as fleet:
        await fleet.warm()
        early = fleet.core.outbox.early_batches
        plans = []
        futures: list[asyncio.Future[SendResult]] = []
        # a burst of publishes handed over early, then, without an await, one that mixes
        # sends in (the flusher's) and a second mixed burst while the first is answered
        for kind in ("publish", "mixed"):
            plan, more = fleet.burst(kind=kind)
            plans.append(plan)
            futures.extend(more)
        await asyncio.sleep(0)
        plan, more = fleet.burst(kind="mixed")
        plans.append(plan)
        futures.extend(more)
        results = await asyncio.gather(*futures)
        sends = 2 * BURST // 4
        assert outcomes(results) == {"published": 3 * BURST - sends, "delivered": sends}
        assert fleet.core.outbox.early_batches > early
        await fleet.arrived([item for plan in plans for item in plan])


async def test_the_flusher_publishes_nothing_before_early_hand_overs_were_answered() -> None:
    """Megabytes handed over early wait for a frozen Redis on the lane, and acknowledged sends
    to the same robots queue behind them for the flusher: once Redis resumes it reads both
    connections by turns, so a flush written before the lane was answered would overtake it.
    Each robot's order holds."""
    with own_redis() as (server, backend):
        async with pair(backend, socket_timeout=5.0) as fleet:
            await fleet.warm()
            early = fleet.core.outbox.early_batches
            with frozen(server):
                plan, futures = fleet.burst(1000, pad=8000, timeout=10.0)
                sends, more = fleet.burst(len(fleet.robot_ids), kind="send", timeout=10.0)
                await asyncio.sleep(0.5)
            assert fleet.core.outbox.early_batches > early
            results = await asyncio.gather(*futures, *more)
            assert outcomes(results) == {"published": 1000, "delivered": len(sends)}
            await fleet.arrived(plan + sends)


async def _moved(fleet: Pair, moved: list[str], stop_owner: bool) -> None:
    """``moved`` leave the gateway holding them (stopped, when ``stop_owner``, else they
    disconnect) and connect to ``early-c``, while app code's owner cache still names the
    first: a burst to them arrives once and in order."""
    core = fleet.core
    assert all(core.batches.owners.get(r, time.monotonic()) == "early-b" for r in moved)
    if stop_owner:
        await fleet.gateway.stop()  # closes every socket, stops listening
    else:
        await asyncio.gather(*(fleet.conns[r].close() for r in moved))
    other = fleet.gateways["early-c"]
    async with (
        open_test_store(fleet.backend) as store,
        robots({r: other.ws_url for r in moved}) as conns,
        reading(conns) as received,
    ):
        await wait_for(lambda: _held_by(store, moved, "early-c"), timeout=10)
        assert all(core.batches.owners.get(r, time.monotonic()) == "early-b" for r in moved)
        early = core.outbox.early_batches
        fleet.received = received
        # publishes handed over early, then (in the same go) a mix with acknowledged sends,
        # which the flusher takes only after the early ones were answered
        plan, futures = fleet.burst(robot_ids=moved)
        mixed, more = fleet.burst(robot_ids=moved, kind="mixed")
        results = await asyncio.gather(*futures, *more)
        sends = BURST // 4
        assert outcomes(results) == {"published": 2 * BURST - sends, "delivered": sends}
        assert core.outbox.early_batches > early  # handed over to the stale owner first
        await fleet.arrived(plan + mixed)


async def _held_by(store: object, robot_ids: list[str], instance_id: str) -> bool:
    pipe = store.client.pipeline(transaction=False)  # type: ignore[attr-defined]
    for robot_id in robot_ids:
        pipe.hget(store.keys.conn_key(robot_id), "instance_id")  # type: ignore[attr-defined]
    return all(owner == instance_id for owner in await pipe.execute())


async def test_a_cached_owner_that_stopped_listening_is_routed_again_and_delivered(
    backend: Backend,
) -> None:
    """Nobody hears the early forward to the stopped owner (on a cluster: no node does): its
    messages are routed again through the registry."""
    async with pair(backend, names=("early-b", "early-c")) as fleet:
        await fleet.warm()
        unheard = fleet.core.metrics.messages_forwarded
        await _moved(fleet, fleet.robot_ids[:10], stop_owner=True)
        assert fleet.core.metrics.messages_forwarded >= unheard + 2 * BURST


@pytest.mark.cluster
async def test_a_slot_no_primary_serves_ends_sends_as_redis_errors_and_no_call_raises(
    redis_cluster: object,
) -> None:
    """The slot map has no primary for the owner's control channel (a failover under way):
    the lanes refuse and the pool's pipeline fails, so every send and publish ends with a
    Redis failure as its outcome; none raises into the app, none says "internal error"."""
    backend = Backend("cluster", {"REDIS_USE_CLUSTER": "true", "REDIS_NODES": ""})
    backend.env["REDIS_NODES"] = redis_cluster.startup  # type: ignore[attr-defined]
    async with pair(backend) as fleet:
        await fleet.warm()
        client = fleet.core.client
        slot = client.keyslot(fleet.core.keys.control_channel("early-b"))
        client.nodes_manager.slots_cache.pop(slot)  # type: ignore[union-attr]
        _, futures = fleet.burst(kind="mixed", timeout=3.0)
        results = await asyncio.wait_for(asyncio.gather(*futures), 5.0)
        assert set(outcomes(results)) == {"error"}, outcomes(results)
        assert all("Redis unavailable" in (r.reason or "") for r in results), results[0]


async def test_a_robot_moved_from_a_cached_owner_still_listening_is_delivered_in_order(
    single: Backend,
) -> None:
    """The old owner hears the early forward and forwards it to the robot's new owner."""
    async with pair(single, names=("early-b", "early-c")) as fleet:
        await fleet.warm()
        await _moved(fleet, fleet.robot_ids[:10], stop_owner=False)


async def test_a_frozen_redis_mid_burst_ends_every_publish_in_time_and_says_what_may_arrive() -> (
    None
):
    """Redis frozen while a burst is handed over early: every publish ends within the lanes'
    socket timeout; what Redis had read runs when it resumes, so none may say ``error``
    (never sent) and arrive: an unanswered hand-over is a ``timeout`` that may arrive."""
    with own_redis() as (server, backend):
        async with pair(backend, socket_timeout=1.0) as fleet:
            await fleet.warm()
            assert server.pid is not None
            timeout = 2.0
            early = fleet.core.outbox.early_batches
            os.kill(server.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                plan, futures = fleet.burst(timeout=timeout)
                results = await asyncio.wait_for(asyncio.gather(*futures), timeout + 1.0)
                elapsed = time.monotonic() - started
            finally:
                os.kill(server.pid, signal.SIGCONT)
            assert fleet.core.outbox.early_batches > early
            said = outcomes(results)
            assert set(said) <= {"timeout", "error"}, said
            assert elapsed < timeout + 0.5, elapsed
            await _arrived_once_saying(fleet, plan, results, "may have been published")


@pytest.mark.parametrize(
    ("kind", "publish_lanes"), [("publish", True), ("send", True), ("publish", False)]
)
async def test_a_flush_redis_did_not_answer_in_time_says_timeout_for_what_may_arrive(
    kind: str, publish_lanes: bool
) -> None:
    """Redis frozen while the flusher's forwards wait for its answer (no early hand-over; on
    the lanes, or the pool's pipeline): what Redis had read runs when it resumes, so a send
    or publish whose forward got no answer in time says ``timeout`` (it may arrive), never
    ``error``, and nothing arrives twice."""
    with own_redis() as (server, backend):
        async with pair(
            backend, socket_timeout=1.0, early_publish=False, publish_lanes=publish_lanes
        ) as fleet:
            await fleet.warm()
            with frozen(server):
                plan, futures = fleet.burst(400, kind=kind, timeout=3.0)
                results = await asyncio.wait_for(asyncio.gather(*futures), 4.0)
            got = await _arrived_once_saying(fleet, plan, results, "may")
            assert got, "Redis ran what it had read once it resumed"


async def test_an_early_hand_over_whose_lane_is_lost_before_redis_answers_says_it_may_arrive() -> (
    None
):
    """Redis frozen with early batches written on the lane, and the lane's connection lost:
    Redis runs what it had read once it resumes, so those messages say ``timeout`` (it may
    have been published), never ``error``, and nothing arrives twice."""
    with own_redis() as (server, backend):
        async with pair(backend, socket_timeout=2.0) as fleet:
            await fleet.warm()
            early = fleet.core.outbox.early_batches
            lanes = fleet.core.lanes
            assert lanes is not None
            with frozen(server):
                plan, futures = fleet.burst(timeout=3.0)
                await asyncio.sleep(0.05)  # the event loop sent what the lane wrote
                assert fleet.core.outbox.early_batches > early and lanes.busy
                lanes._lanes[""].conn._writer.transport.close()  # lost from this side
                results = await asyncio.wait_for(asyncio.gather(*futures), 4.0)
            got = await _arrived_once_saying(fleet, plan, results, "may")
            assert got, "Redis ran what it had read once it resumed"


async def test_a_publish_redis_refuses_says_error_early_or_flushed_never_may_have_arrived() -> None:
    """Redis answers PUBLISH with an error (its ACL): the messages were not published, so
    early hand-overs and flushes alike say ``error`` with Redis's reason, not ``timeout``."""
    with own_redis() as (server, backend):
        async with pair(backend) as fleet:
            await fleet.warm()
            early = fleet.core.outbox.early_batches
            admin = redis.asyncio.Redis(port=server.port)
            try:
                await admin.execute_command("ACL", "SETUSER", "default", "-publish")
                _, futures = fleet.burst(kind="mixed", timeout=3.0)
                results = await asyncio.wait_for(asyncio.gather(*futures), 5.0)
            finally:
                await admin.execute_command("ACL", "SETUSER", "default", "+publish")
                await admin.aclose()
            assert fleet.core.outbox.early_batches > early
            assert outcomes(results) == {"error": BURST}, outcomes(results)
            assert all("permission" in (r.reason or "") for r in results), results[0]


async def test_a_flush_whose_listeners_cannot_be_asked_after_publishing_says_it_may_arrive(
    single: Backend,
) -> None:
    """The forwards went out, then asking who heard them failed (on a cluster a PUBSUB
    NUMSUB; here the check made to fail): the messages arrive, and their sends say
    ``timeout`` "published, then ...: it may have arrived", never ``error``."""
    async with pair(single, early_publish=False) as fleet:
        await fleet.warm()

        async def unanswered(*args: object) -> bool:
            raise redis.exceptions.ConnectionError("Connection reset by peer")

        with pytest.MonkeyPatch.context() as patched:
            patched.setattr(fleet.core.batches.audience, "heard", unanswered)
            plan, futures = fleet.burst(100, kind="mixed")
            results = await asyncio.gather(*futures)
        assert outcomes(results) == {"timeout": 100}, outcomes(results)
        assert all("published, then" in (r.reason or "") for r in results), results[0]
        await fleet.arrived(plan)


async def test_after_a_frozen_redis_resumes_a_large_burst_is_published_at_once() -> None:
    """The lane that timed out is not open again for a moment: meanwhile each publish call
    must not try (and undo) a hand-over of the whole queue, which made a burst's own
    submission quadratic (3,000 publishes timed out)."""
    with own_redis() as (server, backend):
        async with pair(backend, socket_timeout=1.0) as fleet:
            await fleet.warm()
            assert server.pid is not None
            with frozen(server):
                _, futures = fleet.burst(timeout=2.0)
                await asyncio.wait_for(asyncio.gather(*futures), 3.0)
            plan, futures = fleet.burst(3000, timeout=2.0)
            results = await asyncio.gather(*futures)
            assert outcomes(results) == {"published": 3000}
            await fleet.arrived(plan)


async def test_redis_killed_and_restarted_early_hand_over_comes_back() -> None:
    with own_redis() as (server, backend):
        async with pair(backend, socket_timeout=1.0) as fleet:
            await fleet.warm()
            _, futures = fleet.burst()
            assert outcomes(await asyncio.gather(*futures)) == {"published": BURST}
            server.kill()
            _, futures = fleet.burst(timeout=2.0)
            down = outcomes(await asyncio.wait_for(asyncio.gather(*futures), 5))
            assert set(down) <= {"error", "timeout"}, down
            await asyncio.to_thread(server.start)  # same port, empty: robots register again
            async with open_test_store(backend) as store:
                await wait_for(lambda: registered(store, fleet.robot_ids), timeout=10)
            # the owner's control channel and the sender's reply inbox subscribed again
            await fleet.gateway.core.wait_subscribed()
            await fleet.core.wait_subscribed()
            early = fleet.core.outbox.early_batches
            for _ in range(20):  # bounded: the lanes reopen on the bursts' first need
                plan, futures = fleet.burst()
                results = await asyncio.gather(*futures)
                assert outcomes(results) == {"published": BURST}, outcomes(results)
                if fleet.core.outbox.early_batches > early:
                    break
                await asyncio.sleep(0.2)
            assert fleet.core.outbox.early_batches > early
            await fleet.arrived(plan)


async def test_an_instance_stopped_with_early_hand_overs_unanswered_says_timeout() -> None:
    """Redis frozen with early hand-overs written: stopping the instance settles them at once
    as ``timeout`` (they may have been published), long before their own 30 s, and the stop
    ends within its bounds (each Redis call it makes waits at most its socket timeout)."""
    with own_redis() as (server, backend):
        async with pair(backend, socket_timeout=2.0) as fleet:
            await fleet.warm()
            assert server.pid is not None
            os.kill(server.pid, signal.SIGSTOP)
            try:
                early = fleet.core.outbox.early_batches
                _, futures = fleet.burst(timeout=30.0)
                await asyncio.sleep(0.1)
                assert fleet.core.outbox.early_batches > early
                assert not any(f.done() for f in futures)
                started = time.monotonic()
                settled: list[float] = []
                for future in futures:
                    future.add_done_callback(lambda _: settled.append(time.monotonic()))
                await asyncio.wait_for(fleet.core.stop(grace=1.0), 15)
                stopped = time.monotonic() - started
                results = await asyncio.wait_for(asyncio.gather(*futures), 1)
            finally:
                os.kill(server.pid, signal.SIGCONT)
            said = outcomes(results)
            assert said == {"timeout": BURST}, said
            assert all("may have been published" in (r.reason or "") for r in results)
            assert max(settled) - started < 1.0 + 0.5, max(settled) - started
            assert stopped < 10.0, stopped
            print(f"\n[stop] {said} settled in {max(settled) - started:.2f}s, stop {stopped:.1f}s")


async def test_a_lane_redis_closed_while_idle_costs_no_message() -> None:
    """Redis closes idle clients (``timeout 1``): the lane it closed is reopened, and the next
    burst is published whole, none of it written into the closed connection."""
    with own_redis() as (server, backend):
        async with pair(backend) as fleet:
            await fleet.warm()
            _, futures = fleet.burst()
            assert outcomes(await asyncio.gather(*futures)) == {"published": BURST}
            admin = redis.Redis(port=server.port)
            try:
                admin.config_set("timeout", 1)
                await asyncio.sleep(2.5)  # the lane is idle: Redis closes it
            finally:
                admin.config_set("timeout", 0)
                admin.close()
            plan, futures = fleet.burst()
            results = await asyncio.gather(*futures)
            assert outcomes(results) == {"published": BURST}, outcomes(results)
            assert fleet.core.metrics.redis_errors == 0
            await fleet.arrived(plan)


async def test_a_stop_right_after_a_burst_reports_what_redis_took_as_published(
    single: Backend,
) -> None:
    """Stopping while Redis's answers to early hand-overs are on their way: they are read
    first (as a forwarded send's answer is), so what was published says ``published``."""
    async with pair(single) as fleet:
        await fleet.warm()
        early = fleet.core.outbox.early_batches
        plan, futures = fleet.burst()
        await asyncio.sleep(0)  # every publish call ran up to its hand-over
        assert fleet.core.outbox.early_batches > early
        assert not any(f.done() for f in futures)  # Redis has not answered yet
        await fleet.core.stop()
        results = await asyncio.wait_for(asyncio.gather(*futures), 5)
        assert outcomes(results) == {"published": BURST}, outcomes(results)
        await fleet.arrived(plan)


async def test_early_hand_overs_count_one_owner_cache_hit_per_robot_and_batch(
    single: Backend,
) -> None:
    """The owner cache's hits and misses (/metrics) measure the cache as a flush counts it:
    one lookup per robot and batch, not one per message or per publish call that looked."""
    async with pair(single) as fleet:
        await fleet.warm()
        owners = fleet.core.batches.owners
        outbox = fleet.core.outbox
        hits, misses = owners.hits, owners.misses
        early, batches = outbox.early_batches, outbox.batches_sent
        plan, futures = fleet.burst()
        assert outcomes(await asyncio.gather(*futures)) == {"published": BURST}
        assert outbox.early_batches > early
        assert owners.misses == misses
        flushed = outbox.batches_sent - batches
        assert 0 < owners.hits - hits <= ROBOTS * flushed, (owners.hits - hits, flushed)
        await fleet.arrived(plan)
