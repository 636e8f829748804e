"""The sandbox's demo robots: a few robots that stay connected and reconnect as the docs tell
robot authors to (the README tour uses them)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from wsctl.errors import WsctlError
from wsctl.gateway.identity import robot_token
from wsctl.reconnect import backoff, next_gateway
from wsctl.sandbox.processes import StartStop

__all__ = [
    "DEMO_MAX_DELAY",
    "DEMO_STEADY",
    "DemoRobots",
]


DEMO_MAX_DELAY = 5.0  # seconds: the longest pause between a demo robot's attempts
DEMO_STEADY = 10.0  # seconds a connection must last for the next close to start over at 0


class DemoRobots(StartStop):
    """``count`` robots (``robot-1`` … ``robot-N``) holding real WebSocket connections to the
    sandbox's gateways, round robin, in a thread of their own, until :meth:`stop`. They are
    what the README's tour shows, sends to, pings and drains. They reconnect as the docs tell
    robot authors to (:mod:`wsctl.reconnect`): when a gateway closes them (1012 from a drain),
    refuses the handshake (503 while draining) or the connection, the next attempt goes to the
    next gateway, after a jittered backoff that grows while attempts keep failing."""

    def __init__(self, gateway_urls: list[str], count: int, auth_secret: str | None = None) -> None:
        import threading

        self.urls = gateway_urls
        self.count = count
        self.auth_secret = auth_secret
        self.received = 0
        self._connected: set[str] = set()
        self._thread: threading.Thread | None = None
        self._loop: Any = None
        self._stop: Any = None
        self._stopping = threading.Event()

    @property
    def robot_ids(self) -> list[str]:
        """The demo robots' ids, ``robot-1`` … ``robot-N``."""
        return [f"robot-{n}" for n in range(1, self.count + 1)]

    @property
    def connected(self) -> int:
        """How many robots hold a connection right now."""
        return len(self._connected)

    def start(self, timeout: float = 30.0) -> DemoRobots:
        """Start the robots' thread and wait until all are connected; raises WsctlError
        (after stopping them) when they are not within ``timeout`` seconds."""
        import threading

        if not self.count or not self.urls:
            return self
        self._thread = threading.Thread(target=self._run, name="demo-robots", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while self.connected < self.count and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.connected < self.count:
            self.stop()
            raise WsctlError(f"only {self.connected} of {self.count} demo robots connected")
        return self

    def _run(self) -> None:
        import asyncio

        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        import asyncio

        self._stop = asyncio.Event()
        if self._stopping.is_set():
            return
        tasks = [
            asyncio.create_task(self._robot(robot_id, n % len(self.urls)))
            for n, robot_id in enumerate(self.robot_ids)
        ]
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _robot(self, robot_id: str, first: int) -> None:
        import asyncio
        import random

        from websockets.asyncio.client import connect

        query = f"?token={robot_token(self.auth_secret, robot_id)}" if self.auth_secret else ""
        rng = random.Random(robot_id)
        current, attempt = first, 0
        while True:  # until cancelled by stop()
            opened = None
            try:
                url = f"{self.urls[current]}/ws/{robot_id}{query}"
                async with connect(url, open_timeout=5, close_timeout=1) as ws:
                    opened = time.monotonic()
                    self._connected.add(robot_id)
                    async for _ in ws:
                        self.received += 1
            except asyncio.CancelledError:
                raise
            except Exception:  # closed, refused (503 while draining) or unreachable: move on
                pass
            finally:
                self._connected.discard(robot_id)
            if opened is not None and time.monotonic() - opened >= DEMO_STEADY:
                attempt = 0  # a close after a steady connection: start over quickly
            await asyncio.sleep(backoff(attempt, rng.random(), maximum=DEMO_MAX_DELAY))
            attempt += 1
            current = next_gateway(len(self.urls), current)

    def stop(self) -> None:
        """Cancel every robot, close their connections and join the thread (at most 10 s)."""
        if self._thread is None:
            return
        self._stopping.set()
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
        self._thread = None
