"""A robot that stops reading (a slow consumer) on a FastAPI instance: it never delays the
other robots' messages, and is closed with 1008 "slow consumer" once too much waits for it.
Two real uvicorn instances of the blast app, real Redis, a raw TCP robot that never reads."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from pathlib import Path

from websockets.asyncio.client import connect

from tests.blast_fleet import blast_fleet
from tests.conftest import Backend, ainvoke, open_test_store
from tests.fleet import running_fleet, wait_for
from wsctl.gateway.outbound import SLOW_CONSUMER_CODE
from wsctl.gateway.outcomes import SendOutcome


def _stuck_robot(port: int, robot_id: str) -> socket.socket:
    """A robot that completes the WebSocket handshake, then never reads (a tiny receive
    buffer, so the instance's writes to it soon wait)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws/{robot_id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    answer = sock.recv(12)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return sock


async def _last_close(backend: Backend, robot_id: str) -> dict[str, object] | None:
    res = await ainvoke(["history", robot_id, "-o", "json"], env=backend.env)
    events = [e for e in json.loads(res.out or "[]") if e["event"] == "disconnected"]
    return events[-1]["detail"] if events else None


async def test_a_robot_that_stops_reading_never_delays_other_robots_sends(
    single: Backend, tmp_path: Path
) -> None:
    """App code on A fills a robot on B that never reads with 300 messages of 64 KiB (19 MiB); while it
    does, and after, sends from A to the healthy robots (on A and on B) are all delivered within
    their timeout, and the stuck robot is closed with 1008 "slow consumer" (event log)."""
    async with blast_fleet(single, tmp_path) as fleet, open_test_store(single) as store:
        stuck = await asyncio.to_thread(_stuck_robot, fleet.other.port, "stuck-b")
        try:
            await wait_for(lambda: store.get("stuck-b"), timeout=10)
            body = {"robot": "stuck-b", "count": 300, "size": 65536, "timeout": 3}
            filling = asyncio.create_task(asyncio.to_thread(fleet.post, "/test/fill", body))
            await asyncio.sleep(0.3)
            for _ in range(3):  # bounded: three blasts while and after the stuck robot fills
                started = time.monotonic()
                result = await asyncio.to_thread(fleet.blast, 300, 100, "send", 3.0)
                assert result["outcomes"] == {"delivered": 300}, result
                assert time.monotonic() - started < 10, result
            filled = await filling
            assert set(filled["outcomes"]) <= {"published", "not_connected"}, filled
            await wait_for(lambda: _last_close(single, "stuck-b"), timeout=20, interval=0.3)
            detail = await _last_close(single, "stuck-b")
            assert detail is not None
            assert detail["code"] == SLOW_CONSUMER_CODE, detail
            assert str(detail["reason"]).startswith("slow consumer"), detail
            assert await store.get("stuck-b") is None
        finally:
            stuck.close()


async def test_the_websockets_adapter_closes_a_slow_consumer_at_the_same_bound(
    single: Backend,
) -> None:
    """`wsctl gateway` writes without waiting: a robot that never reads is closed with 1008
    "slow consumer" once its write buffer would pass 8 MiB, the message that found it over
    is `not_connected` with that reason, and a healthy robot's sends go on meanwhile."""
    async with (
        running_fleet(single.env, names=("gw-slow",)) as gateways,
        open_test_store(single) as store,
    ):
        gw = gateways["gw-slow"]
        stuck = await asyncio.to_thread(_stuck_robot, gw.port, "stuck-w")
        healthy = await connect(f"ws://127.0.0.1:{gw.port}/ws/fine-w")
        try:
            await wait_for(lambda: store.get("stuck-w"), timeout=10)
            await wait_for(lambda: store.get("fine-w"), timeout=10)
            reasons: list[str] = []
            for n in range(300):  # bounded: 19 MiB in all, and by the 10 s stall
                result = await gw.core.send("stuck-w", "z" * 65536, timeout=3)
                if result.outcome is SendOutcome.TIMEOUT:
                    # held back while more than half the bound waits (a sender is not told
                    # its robot is slow before it is): then closed at the stall
                    assert result.reason and "socket busy" in result.reason, result
                elif result.outcome is not SendOutcome.DELIVERED:
                    reasons.append(f"{result.outcome.value}: {result.reason}")
                    break
                if n % 5 == 0:
                    fine = await gw.core.send("fine-w", f"ok {n}", timeout=3)
                    assert fine.delivered, fine
                    assert await asyncio.wait_for(healthy.recv(), 3) == f"ok {n}"
            assert reasons and reasons[0].startswith("not_connected: slow consumer"), reasons
            await wait_for(lambda: _last_close(single, "stuck-w"), timeout=15, interval=0.3)
            detail = await _last_close(single, "stuck-w")
            assert detail is not None and detail["code"] == SLOW_CONSUMER_CODE, detail
            assert await store.get("stuck-w") is None
            assert "wsctl_gateway_slow_consumers_total" in gw.core.metrics_text()
            assert gw.core.metrics.slow_consumers == 1
        finally:
            stuck.close()
            await healthy.close()


async def test_a_loop_of_awaited_sends_to_a_robot_that_reads_delivers_every_message(
    single: Backend, tmp_path: Path
) -> None:
    """App code on A awaits 12,000 sends, one after another, to a robot on A that reads (and
    9 publishes of 1 MiB): every one is delivered and received, and the robot is not closed.
    Such a loop never yielded, so the robot's queue passed its 10,000-message bound before
    its writer ran: the healthy robot was closed as a slow consumer and the 10,000 messages
    reported delivered never reached it."""
    async with blast_fleet(single, tmp_path, robot_count=2) as fleet:
        robot = fleet.robots[0]  # robot i is on instance i % 2: this one is on the sender
        body = {"robot": robot, "count": 12_000, "size": 10, "in_flight": 1, "mode": "send"}
        result = await asyncio.to_thread(fleet.post, "/test/fill", body)
        assert result["outcomes"] == {"delivered": 12_000}, result
        big = {"robot": robot, "count": 9, "size": 1 << 20, "in_flight": 9, "mode": "publish"}
        result = await asyncio.to_thread(fleet.post, "/test/fill", big)
        assert result["outcomes"] == {"delivered": 9}, result
        await wait_for(lambda: len(fleet.received[robot]) >= 12_009, timeout=30)
        assert len(fleet.received[robot]) == 12_009
        assert await _last_close(single, robot) is None  # never closed
