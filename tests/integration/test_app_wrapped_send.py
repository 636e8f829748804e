"""The FastAPI adapter under an app's ASGI middleware that wraps the websocket ``send`` (as
tracing and timeout middleware do): ``asyncio.timeout`` around it (it needs a current task)
and a context value set and reset around it (it needs one context across a write that
waits). Real uvicorn instances of the blast app with the wrapper on, real Redis, a robot that
reads slowly (its writes wait)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.blast_app import FAIL_SEND
from tests.blast_fleet import blast_fleet
from tests.conftest import Backend, open_test_store
from tests.fleet import wait_for
from wsctl.gateway.outbound import WRITE_FAILED, WRITE_FAILED_CODE

BURST = 300
PAD = 16_000  # 300 messages of 16 KB: far more than the robot's receive window holds


def _small_window_socket(port: int) -> socket.socket:
    """A connected TCP socket with a small receive buffer (the robot's writes soon wait)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def _read_slowly(ws: ClientConnection, into: list[int]) -> None:
    with contextlib.suppress(Exception):  # the socket closes when the test ends
        async for frame in ws:
            into.append(json.loads(frame)["n"])
            await asyncio.sleep(0.002)


async def test_a_burst_through_a_send_wrapping_middleware_arrives_in_order_and_sends_go_on(
    single: Backend, tmp_path: Path
) -> None:
    """App code sends a burst of 300 messages of 16 KB to a robot on its instance that reads
    slowly, through middleware wrapping ``send`` in ``asyncio.timeout`` and a context value:
    every send is ``delivered`` and every message arrives, in order; later sends and
    publishes to the robot work too, and it stays registered (a write taken for failed used
    to drop the session and leave its socket open and unreachable)."""
    extra = {"WSCTL_TEST_WRAP_SEND": "1"}
    async with (
        blast_fleet(single, tmp_path, robot_count=2, extra_env=extra) as fleet,
        open_test_store(single) as store,
    ):
        sock = await asyncio.to_thread(_small_window_socket, fleet.sender.port)
        ws = await connect(f"{fleet.sender.ws_url}/ws/slow-reader", sock=sock, max_queue=2)
        got: list[int] = []
        reader = asyncio.create_task(_read_slowly(ws, got))
        try:
            await wait_for(lambda: store.get("slow-reader"), timeout=10)
            body = {
                "robots": ["slow-reader"],
                "count": BURST,
                "in_flight": BURST,
                "mode": "send",
                "timeout": 20,
                "pad": PAD,
            }
            result = await asyncio.to_thread(fleet.post, "/test/blast", body)
            assert result["outcomes"] == {"delivered": BURST}, result
            await wait_for(lambda: len(got) >= BURST, timeout=20)
            assert got == list(range(BURST))
            for first, mode in ((BURST, "send"), (BURST + 10, "publish")):
                later = {**body, "first": first, "count": 10, "in_flight": 10, "mode": mode}
                result = await asyncio.to_thread(fleet.post, "/test/blast", later)
                assert result["outcomes"] == {"delivered": 10}, result
            await wait_for(lambda: len(got) >= BURST + 20, timeout=10)
            assert got == list(range(BURST + 20))
            assert await store.get("slow-reader") is not None
        finally:
            await ws.close()
            await reader


async def test_a_write_the_middleware_fails_closes_the_robots_socket_and_removes_its_entry(
    single: Backend, tmp_path: Path
) -> None:
    """A write that fails in the app's middleware (the socket itself fine) drops the session:
    the robot's socket is closed with 1011 ``write failed`` and its entry removed, so it
    reconnects and is reached again (it used to stay open, registered nowhere, unreachable)."""
    extra = {"WSCTL_TEST_WRAP_SEND": "1"}
    async with (
        blast_fleet(single, tmp_path, robot_count=2, extra_env=extra) as fleet,
        open_test_store(single) as store,
    ):
        ws = await connect(f"{fleet.sender.ws_url}/ws/fails-once")
        try:
            await wait_for(lambda: store.get("fails-once"), timeout=10)
            result = await asyncio.to_thread(
                fleet.send_many, FAIL_SEND, robots=["fails-once"]
            )  # taken by the connection: its write then fails
            assert result["outcomes"] == {"fails-once": "delivered"}, result
            await asyncio.wait_for(ws.wait_closed(), 5)
            assert ws.close_code == WRITE_FAILED_CODE and ws.close_reason == WRITE_FAILED
            await wait_for(lambda: _gone(store, "fails-once"), timeout=5)
        finally:
            await ws.close()
        async with connect(f"{fleet.sender.ws_url}/ws/fails-once") as again:
            await wait_for(lambda: store.get("fails-once"), timeout=10)
            result = await asyncio.to_thread(fleet.send_many, "hello", robots=["fails-once"])
            assert result["outcomes"] == {"fails-once": "delivered"}, result
            assert await asyncio.wait_for(again.recv(), 5) == "hello"


async def _gone(store: Any, robot_id: str) -> bool:
    return await store.get(robot_id) is None
