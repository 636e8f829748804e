"""What a send that did not get through says about itself, from app code on a real uvicorn
instance with a real redis-server of the test's own: a timeout's reason is true (frozen Redis
resumed), and a Redis that refuses connections fails sends at once."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from pathlib import Path

import pytest

from tests.blast_fleet import blast_fleet
from tests.conftest import Backend
from wsctl.gateway.core import CoreConfig, FleetCore, SendOutcome
from wsctl.protocol.envelopes import NO_ENTRY
from wsctl.protocol.fanout import FanOutcome
from wsctl.redis.target import Target
from wsctl.sandbox.redis_servers import RedisServer


async def test_a_send_timed_out_while_redis_was_frozen_never_says_never_sent_and_arrives(
    tmp_path: Path,
) -> None:
    """Redis frozen (SIGSTOP) while app code sends 400 messages with a 1.5 s timeout, resumed
    after 2.5 s: the sends the instance was handing to Redis say they may still arrive (and do),
    the ones still queued say "withdrawn, never sent" and never arrive."""
    with RedisServer() as server:
        backend = Backend("own", {"WSCTL_REDIS_URL": server.url}, single=server)
        async with blast_fleet(backend, tmp_path) as fleet:
            assert server.pid is not None
            others = fleet.robots[1::2]  # held by the other instance: through Redis
            body = {
                "robots": others,
                "count": 400,
                "in_flight": 400,
                "mode": "send",
                "timeout": 1.5,
                "detail": True,
            }
            os.kill(server.pid, signal.SIGSTOP)
            try:
                blasting = asyncio.create_task(asyncio.to_thread(fleet.post, "/test/blast", body))
                await asyncio.sleep(2.5)
            finally:
                os.kill(server.pid, signal.SIGCONT)
            result = await blasting
            await asyncio.sleep(1.5)  # what was handed to Redis arrives now
            received = {
                json.loads(frame)["n"] for frames in fleet.received.values() for frame in frames
            }
            timed_out = [
                (n, reason) for n, outcome, reason in result["detail"] if outcome == "timeout"
            ]
            assert timed_out, result["outcomes"]
            arrived = [(n, reason) for n, reason in timed_out if n in received]
            assert arrived, "no timed-out send arrived: the case was not exercised"
            for n, reason in arrived:
                assert "never sent" not in reason and "not handed" not in reason, (n, reason)
            for n, reason in timed_out:
                if "never sent" in reason:
                    assert n not in received, (n, reason)


async def test_a_redis_that_refuses_connections_fails_sends_at_once() -> None:
    """Redis killed (its port refuses): send and publish with timeout=10 end with ``error``
    naming Redis within a second, neither waiting for the other; send_many too."""
    with RedisServer() as server:
        core = FleetCore(
            CoreConfig(instance_id="core-refused", heartbeat_interval=3600.0),
            Target("tcp", port=server.port),
        )
        await core.start()
        try:
            await core.wait_subscribed()
            server.kill()
            await asyncio.sleep(0.5)  # the reply inbox has seen Redis go
            started = time.monotonic()
            sent, published = await asyncio.gather(
                core.send("robot-far", "m", timeout=10), core.publish("robot-far2", "m", timeout=10)
            )
            assert time.monotonic() - started < 1.0, (sent, published)
            assert sent.outcome is SendOutcome.ERROR, sent
            assert published.outcome is SendOutcome.ERROR, published
            assert sent.reason is not None and "Redis" in sent.reason, sent
            started = time.monotonic()
            many = await core.send_many(["robot-1", "robot-2"], "m", timeout=10)
            assert time.monotonic() - started < 1.0, many.summary
            assert {o.outcome for o in many.outcomes} == {FanOutcome.ERROR}, many.outcomes
        finally:
            await core.stop()


class _Socket:
    """A robot socket that keeps what it was sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    async def close(self, code: int, reason: str) -> None:
        pass


async def test_an_on_outcome_callback_that_raises_keeps_the_outcome_and_is_no_redis_failure(
    single: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    assert single.single is not None
    core = FleetCore(
        CoreConfig(instance_id="core-cb", heartbeat_interval=3600.0),
        Target("tcp", port=single.single.port),
    )
    await core.start()
    try:
        await core.wait_subscribed()
        sockets = {r: _Socket() for r in ("cb-1", "cb-2")}
        for robot_id, sock in sockets.items():
            await core.open_session(robot_id, sock)

        def explode(outcome: object) -> None:
            raise ValueError("the app's bug")

        with caplog.at_level(logging.ERROR, logger="wsctl.gateway"):
            done = await core.send_many(list(sockets), "hi", timeout=3, on_outcome=explode)
        assert {o.robot_id: o.outcome for o in done.outcomes} == {
            "cb-1": FanOutcome.DELIVERED,
            "cb-2": FanOutcome.DELIVERED,
        }
        assert all(sock.sent == ["hi"] for sock in sockets.values())
        assert sum("on_outcome failed" in r.getMessage() for r in caplog.records) == 1
        assert core.metrics.redis_errors == 0 and core.redis_ok
    finally:
        await core.stop()


async def test_send_publish_and_send_many_spell_each_outcome_and_reason_alike(
    single: Backend,
) -> None:
    """An unknown robot, a message over the limit and text that is not UTF-8: the same
    outcome and reason from send, publish and send_many (send_many rejects locally too)."""
    assert single.single is not None
    core = FleetCore(
        CoreConfig(instance_id="core-spell", heartbeat_interval=3600.0, max_message_bytes=100),
        Target("tcp", port=single.single.port),
    )
    await core.start()
    try:
        await core.wait_subscribed()
        for message, outcome, reason in (
            ("hi", "not_connected", NO_ENTRY),
            ("x" * 101, "rejected", "message larger than 100 bytes"),
            ("\udcff", "rejected", "message is not valid UTF-8 text"),
        ):
            sent = await core.send("nobody", message, timeout=3)
            published = await core.publish("nobody", message, timeout=3)
            many = (await core.send_many(["nobody"], message, timeout=3)).outcomes[0]
            said = {(r.outcome.value, r.reason) for r in (sent, published, many)}
            assert said == {(outcome, reason)}, said
        assert core.outbox.items_sent == 3  # the unknown robot's three; nothing else left
    finally:
        await core.stop()


async def test_a_wrong_redis_password_fails_sends_at_once_without_the_password() -> None:
    with RedisServer(password="right-one") as server:
        core = FleetCore(
            CoreConfig(instance_id="core-wrongpass", heartbeat_interval=3600.0),
            Target("tcp", port=server.port, password="wrong-one"),
        )
        await core.start()
        try:
            await asyncio.sleep(0.5)  # the reply inbox has been refused
            started = time.monotonic()
            sent, published = await asyncio.gather(
                core.send("robot-far", "m", timeout=10), core.publish("robot-far2", "m", timeout=10)
            )
            assert time.monotonic() - started < 1.0, (sent, published)
            for result in (sent, published):
                assert result.outcome is SendOutcome.ERROR, result
                assert result.reason is not None and result.reason.startswith("Redis"), result
                assert "wrong-one" not in result.reason and "right-one" not in result.reason
        finally:
            await core.stop()
