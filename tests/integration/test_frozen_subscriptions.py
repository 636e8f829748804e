"""Subscriptions on a frozen Redis node (SIGSTOP: the connection stays open and nothing comes
back). A silent subscription PINGs its node; without an answer within the client's socket
timeout it counts as lost, and it is made again: on a single node when the node resumes, on a
cluster on another primary once the frozen one has failed over, so replies and forwarded
sends work again without a restart. Real redis-server processes of the test's own."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest
import redis
from websockets.asyncio.client import connect as wsconnect

from tests.conftest import slot_owner
from tests.faults import frozen
from tests.fleet import echo_pings, running_fleet, wait_for
from wsctl.config import load_settings
from wsctl.ops.send import send_message
from wsctl.protocol.envelopes import Envelope, Op, Status
from wsctl.protocol.rpc import inbox_for, request
from wsctl.redis.factory import connect, target_from_settings
from wsctl.redis.pubsub import PING_AFTER_SILENCE, SubscriptionUnanswered, subscription
from wsctl.redis.target import Target
from wsctl.registry.keys import Keyspace
from wsctl.sandbox.redis_servers import RedisClusterProcesses, RedisServer

SOCKET_TIMEOUT = 1.0  # the clients' socket timeout: the bound on a PING's answer
# freeze to loss: at most the silence, the bound, and a read's slack (a loaded machine)
DETECTED_WITHIN = PING_AFTER_SILENCE + SOCKET_TIMEOUT + 0.5


async def test_a_frozen_node_loses_the_inbox_within_the_bound_and_it_works_at_once_after() -> None:
    keys = Keyspace()
    with RedisServer() as server:
        async with connect(
            Target("tcp", port=server.port), socket_timeout=SOCKET_TIMEOUT
        ) as client:
            inbox = inbox_for(client, keys)
            assert await inbox.wait_ready(5)
            listener = redis.asyncio.Redis(port=server.port, decode_responses=True)
            pubsub = listener.pubsub()
            await pubsub.subscribe(keys.control_channel("echo"))
            try:
                with frozen(server):
                    stopped = time.monotonic()
                    await wait_for(lambda: not inbox.subscribed, timeout=DETECTED_WITHIN + 2)
                    detected = time.monotonic() - stopped
                    assert isinstance(inbox.last_error, SubscriptionUnanswered)
                    await asyncio.sleep(1.5)  # it keeps trying while the node stays frozen
                    assert not inbox.subscribed
                resumed = time.monotonic()
                await wait_for(lambda: inbox.subscribed, timeout=5, interval=0.01)
                back = time.monotonic() - resumed
                answering = asyncio.create_task(echo_pings(listener, pubsub, 1))
                reply = await request(client, keys, "echo", Envelope(op=Op.PING), 2)
                answered = time.monotonic() - resumed
                await asyncio.wait_for(answering, 5)
            finally:
                await pubsub.aclose()
                await listener.aclose()
    print(
        f"\n[frozen inbox] lost {detected:.2f}s after SIGSTOP; after SIGCONT subscribed in "
        f"{back:.2f}s, a request answered in {answered:.2f}s"
    )
    assert reply is not None and reply.status is Status.PONG
    assert detected <= DETECTED_WITHIN
    assert back < 1.0
    assert answered < 1.5


@pytest.mark.parametrize("lost_first", [False, True], ids=["before-loss", "after-loss"])
async def test_a_subscription_on_a_frozen_node_closes_at_once(lost_first: bool) -> None:
    """Nothing waits on the frozen node: not the loss (its connection is dropped), not the
    caller that stops listening, before or after the loss was noticed."""
    keys = Keyspace()
    states: list[bool] = []
    with RedisServer() as server:
        async with connect(
            Target("tcp", port=server.port), socket_timeout=SOCKET_TIMEOUT
        ) as client:
            stream = subscription(
                client, keys.control_channel("x"), lambda up, _: states.append(up)
            )
            reading = asyncio.create_task(_drain(stream, []))
            try:
                await wait_for(lambda: states == [True], timeout=5)
                with frozen(server):
                    if lost_first:
                        await wait_for(lambda: False in states, timeout=DETECTED_WITHIN + 2)
                    started = time.monotonic()
                    reading.cancel()
                    await asyncio.wait_for(asyncio.gather(reading, return_exceptions=True), 5)
                    await asyncio.wait_for(stream.aclose(), 5)  # type: ignore[attr-defined]
                    closing = time.monotonic() - started
            finally:
                reading.cancel()
    assert closing < 0.5


def _pings(server: RedisServer) -> int:
    client = redis.Redis(port=server.port)
    try:
        row = client.info("commandstats").get("cmdstat_ping", {})
        return int(row.get("calls", 0))
    finally:
        client.close()


async def test_a_busy_subscription_never_pings_and_an_idle_one_pings_once_per_silence() -> None:
    keys = Keyspace()
    window = 2 * PING_AFTER_SILENCE + 0.5
    with RedisServer() as server:
        async with connect(
            Target("tcp", port=server.port), socket_timeout=SOCKET_TIMEOUT
        ) as client:
            received: list[str] = []
            made = asyncio.Event()
            stream = subscription(
                client, keys.control_channel("busy"), lambda up, _: up and made.set()
            )
            reading = asyncio.create_task(_drain(stream, received))
            try:
                await asyncio.wait_for(made.wait(), 5)
                before = _pings(server)
                loop = asyncio.get_running_loop()
                end = loop.time() + window
                sent = 0
                while loop.time() < end:  # a message every 0.5 s: never silent for 2 s
                    await client.publish(keys.control_channel("busy"), str(sent))
                    sent += 1
                    await asyncio.sleep(0.5)
                busy = _pings(server) - before
                await wait_for(lambda: len(received) == sent, timeout=5)
                before = _pings(server)
                await asyncio.sleep(window)  # idle
                idle = _pings(server) - before
            finally:
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
                await stream.aclose()  # type: ignore[attr-defined]
    assert busy == 0
    assert 1 <= idle <= window / PING_AFTER_SILENCE + 1


async def _drain(stream: Any, into: list[str]) -> None:
    async for data in stream:
        into.append(data)


@pytest.mark.cluster
async def test_sends_resume_after_a_frozen_inbox_and_control_primary_fails_over() -> None:
    """gw-a forwards a send to a robot held by another instance and waits for the answer on
    its reply inbox; the primary where that inbox and the owner's control channel listen is
    frozen. Once the cluster has failed it over, acknowledged sends through gw-a are
    delivered again, nothing restarted, the node still frozen. Then it resumes and rejoins as
    a replica."""
    keys = Keyspace()
    with RedisClusterProcesses() as cluster:
        env = {"REDIS_USE_CLUSTER": "true", "REDIS_NODES": cluster.startup}
        target = target_from_settings(load_settings(env=env))
        async with (
            connect(target, socket_timeout=SOCKET_TIMEOUT) as client,
            running_fleet(env, names=("gw-a",), socket_timeout=SOCKET_TIMEOUT) as sender,
        ):
            inbox = sender["gw-a"].core.inbox
            assert await inbox.wait_ready(5)
            victim = slot_owner(cluster, inbox.channel)  # where the inbox listens
            home = f"127.0.0.1:{victim.port}"
            owner = next(  # an owner whose control channel listens there too
                f"gw-b{n}"
                for n in range(1000)
                if client.get_node_from_key(keys.control_channel(f"gw-b{n}")).name == home
            )
            async with running_fleet(env, names=(owner,), socket_timeout=SOCKET_TIMEOUT) as held:
                robot = await wsconnect(f"{held[owner].ws_url}/ws/probe")
                try:
                    outcome = await send_message(
                        client, keys, "probe", '{"n": 0}', via="gw-a", timeout=2
                    )
                    assert outcome.status == "delivered", outcome
                    gateway = held[owner]
                    done = asyncio.Event()
                    watching = asyncio.create_task(
                        _transitions(
                            {
                                "inbox": lambda: inbox.subscribed,
                                "control": lambda: gateway.subscribed,
                            },
                            done,
                        )
                    )
                    recovered, probes = await _frozen_until_delivered(victim, client, keys)
                    done.set()
                    changes = await asyncio.wait_for(watching, 5)
                    lost = (inbox.resubscribed, held[owner].metrics.control_resubscribes)
                finally:
                    await robot.close()
        await asyncio.to_thread(cluster.wait_ok, 60)  # it rejoins as a replica
    print(f"\n[frozen primary] sends through gw-a delivered again {recovered}s after SIGSTOP")
    print(f"[frozen primary] attempts every 0.5 s: {probes}; subscriptions: {changes}")
    assert recovered is not None, probes
    assert lost == (1, 1)  # the inbox and the control channel were made again elsewhere
    assert recovered < 15, probes


async def _transitions(states: dict[str, Any], done: asyncio.Event) -> list[str]:
    """Until ``done`` (60 s at most): when each of ``states`` changed, in seconds since the
    start, e.g. ``inbox False 3.02``."""
    started = time.monotonic()
    last = {name: state() for name, state in states.items()}
    changes: list[str] = []
    for _ in range(3000):
        if done.is_set():
            break
        for name, state in states.items():
            now = state()
            if now != last[name]:
                changes.append(f"{name} {now} {time.monotonic() - started:.2f}")
                last[name] = now
        await asyncio.sleep(0.02)
    return changes


async def _frozen_until_delivered(
    victim: RedisServer, client: Any, keys: Keyspace
) -> tuple[float | None, list[str]]:
    """Freeze ``victim`` and send to the probe robot through gw-a every half second until one
    is delivered (30 s at most); seconds from the freeze to that send's answer (None if never),
    and every attempt's outcome. The node is resumed whatever happens."""
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    probes: list[str] = []
    try:
        for n in range(1, 60):
            started = time.monotonic()
            try:
                outcome = await send_message(
                    client, keys, "probe", f'{{"n": {n}}}', via="gw-a", timeout=1
                )
            except Exception as exc:  # a Redis error while the node is away
                probes.append(type(exc).__name__)
            else:
                probes.append(f"{outcome.status}:{outcome.reason}")
                if outcome.status == "delivered":
                    return time.monotonic() - stopped, probes
            await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - started)))
        return None, probes
    finally:
        os.kill(victim.pid, signal.SIGCONT)
