"""Simulated robots: real WebSocket clients that record what they receive.

A :class:`RobotSwarm` holds many robots in one event loop (no per-message compression, bounded
queues). :class:`ProcessSwarm` runs a swarm in a worker process and speaks to it over a pipe, so
``simulate --processes P`` can use every core; both expose the same async methods.

Messages carry ``{"sim": run, "n": seq, "t": epoch seconds, "p": padding}``; each robot checks
they belong to its run, arrive in order and once, and records the end-to-end latency. With a
``heartbeat`` of ``(text, every)``, every open robot also sends ``text`` once per ``every``
seconds (spread over the period), as robots of gateways that count a message as a heartbeat do.
With ``reconnect`` (the gateways' URLs), a robot reconnects as the docs tell robot authors
to (docs/operate/drain.md, :mod:`wsctl.reconnect`): after a jittered backoff, to the next gateway in the list (a draining
gateway refuses with 503, a killed one refuses the connection: the robot then tries the next).
It does so when its gateway closes it with 1012 (a drain: service restart), and with
``reconnect_any_close`` after any close (``simulate --reconnect``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import math
import multiprocessing
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, InvalidURI

from wsctl.eventloop import run
from wsctl.gateway.identity import robot_token
from wsctl.ops.histogram import Histogram
from wsctl.ops.simulate.ramp import WINDOW_S, ConnectRamp
from wsctl.protocol.envelopes import CloseCode
from wsctl.reconnect import FIRST_DELAY, MAX_DELAY, backoff, next_gateway
from wsctl.system import raise_fd_limit
from wsctl.tasks import settle, wait_within

__all__ = [
    "CONNECT_ATTEMPTS",
    "CONNECT_TIMEOUT",
    "HEARTBEAT_SLICES",
    "RECONNECT_ATTEMPTS",
    "RECONNECT_FIRST_DELAY",
    "RECONNECT_MAX_DELAY",
    "Heartbeat",
    "ProcessSwarm",
    "RobotState",
    "RobotSwarm",
    "make_message",
]

CONNECT_TIMEOUT = 10.0
CONNECT_ATTEMPTS = 3  # opening handshakes a robot of the connect phase gets (see connect())
HEARTBEAT_SLICES = 10  # the robots' heartbeats are spread over this many ticks per period
Heartbeat = tuple[str, float]  # (text, every seconds)
# reconnects: first retry after 50-150 ms, doubling to RECONNECT_MAX_DELAY, at most
# RECONNECT_ATTEMPTS tries (about a minute) before the robot gives up
RECONNECT_FIRST_DELAY = FIRST_DELAY
RECONNECT_MAX_DELAY = MAX_DELAY
RECONNECT_ATTEMPTS = 40


@dataclass
class RobotState:
    """One simulated robot: its socket and receiver task, the sequence numbers it
    received (to find losses, duplicates and reordering), and its close and reconnect history."""

    robot_id: str
    url: str = ""
    ws: Any = None
    task: asyncio.Task[None] | None = None
    received: list[int] = field(default_factory=list)
    out_of_order: int = 0
    foreign: int = 0
    close_code: int | None = None
    generation: int = 0
    reconnects: int = 0
    closed_at: float | None = None  # monotonic, when the gateway closed it (reconnect pending)


def _failure_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


def _worth_retrying(exc: BaseException) -> bool:
    """A handshake failure another try may not meet: a timeout, a refused or reset
    connection, a 5xx (503 from a draining or overloaded gateway). Not a 4xx answer (a bad
    token, a wrong path), a malformed URL, or this process out of descriptors (no socket
    closes during the connect phase)."""
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
        return False
    if isinstance(exc, InvalidStatus):
        return int(exc.response.status_code) >= 500
    return not isinstance(exc, InvalidURI | ValueError)


def make_message(run_id: str, seq: int, padding: int = 0) -> str:
    """The compact JSON text a simulated robot is sent: the run id (so a robot can tell
    another run's message), a sequence number, the send time for latency, and ``padding``
    bytes of filler to reach a payload size."""
    # formatted rather than json.dumps'ed (the same text, a fifth of the cost: simulate makes
    # every message of a burst before it publishes it)
    text = f'{{"sim":{_quoted(run_id)},"n":{int(seq)},"t":{time.time()!r}'
    if padding > 0:
        text += ',"p":"' + "x" * padding + '"'
    return text + "}"


@functools.lru_cache(maxsize=16)
def _quoted(text: str) -> str:
    """``text`` as a JSON string literal (a run id: cached, it is the same for every message)."""
    return json.dumps(text)


class RobotSwarm:
    """Robots of one simulation run in this process."""

    def __init__(
        self,
        run_id: str,
        auth_secret: str | None = None,
        heartbeat: Heartbeat | None = None,
        reconnect: list[str] | None = None,
        reconnect_any_close: bool = True,
    ) -> None:
        self.run_id = run_id
        self.reconnect_urls = list(reconnect or [])
        # False: reconnect only after a 1012 close (a drain), as every robot should
        self.reconnect_any_close = reconnect_any_close
        self.reconnects = 0
        self.reconnect_failures = 0
        self.longest_gap = 0.0  # seconds a robot spent between its sockets (reconnect)
        self._closing = False
        self._reconnecting: set[asyncio.Task[None]] = set()
        self._rng = random.Random(run_id)
        self.auth_secret = auth_secret
        self.robots: dict[str, RobotState] = {}
        self.connect_hist = Histogram()
        self.latency = Histogram()
        self.connect_failures: dict[str, str] = {}
        self.last_at = 0.0  # epoch seconds of the newest message of this run any robot received
        self.heartbeat = heartbeat
        self.heartbeats_sent = 0
        self._beat_task: asyncio.Task[None] | None = None

    async def _beat(self, text: str, every: float) -> None:
        """Send ``text`` from every open robot once per ``every`` seconds, a slice of the robots
        per tick; runs until :meth:`close_all` cancels it."""
        tick = 0
        while True:
            await asyncio.sleep(every / HEARTBEAT_SLICES)
            due = [
                r.ws
                for i, r in enumerate(self.robots.values())
                if i % HEARTBEAT_SLICES == tick % HEARTBEAT_SLICES
                and r.ws is not None
                and r.close_code is None
            ]
            tick += 1
            results = await asyncio.gather(*(ws.send(text) for ws in due), return_exceptions=True)
            self.heartbeats_sent += sum(1 for r in results if r is None)

    def _url(self, base: str, robot_id: str) -> str:
        url = f"{base.rstrip('/')}/ws/{quote(robot_id, safe='')}"
        if self.auth_secret:
            url += "?token=" + robot_token(self.auth_secret, robot_id)
        return url

    async def _open(self, robot: RobotState, base: str, quiet: bool = False) -> bool:
        started = time.perf_counter()
        failure = await self._dial(robot, base)
        if failure is not None:
            if not quiet:
                self.connect_failures[robot.robot_id] = _failure_text(failure)
            return False
        if not quiet:
            self.connect_hist.add(time.perf_counter() - started)
        return True

    async def _dial(self, robot: RobotState, base: str) -> Exception | None:
        """One opening handshake to ``base``: on success the robot holds the socket (and its
        receiver runs), else the failure."""
        try:
            ws = await connect(
                self._url(base, robot.robot_id),
                compression=None,
                max_queue=64,
                open_timeout=CONNECT_TIMEOUT,
                ping_interval=None,
                close_timeout=2,
            )
        except Exception as exc:  # any failure to connect is a result the report counts
            return exc
        robot.url = base
        robot.ws = ws
        robot.close_code = None
        robot.generation += 1
        robot.task = asyncio.create_task(self._receive(robot, ws))
        return None

    async def _receive(self, robot: RobotState, ws: Any) -> None:
        try:
            async for frame in ws:
                now = time.time()
                try:
                    data = json.loads(frame)
                    if data.get("sim") != self.run_id:
                        raise ValueError
                    seq = int(data["n"])
                except (ValueError, KeyError, TypeError):
                    robot.foreign += 1
                    continue
                if robot.received and seq < robot.received[-1]:
                    robot.out_of_order += 1
                robot.received.append(seq)
                self.latency.add(max(0.0, now - float(data["t"])))
                self.last_at = now
        except Exception:  # the socket closed or broke: close_code below says how
            pass
        finally:
            if robot.ws is ws:
                robot.close_code = ws.close_code
                follows = self.reconnect_any_close or robot.close_code == CloseCode.SERVICE_RESTART
                if self.reconnect_urls and follows and not self._closing:
                    task = asyncio.create_task(self._reconnect_after_close(robot, ws))
                    self._reconnecting.add(task)
                    task.add_done_callback(self._reconnecting.discard)

    async def _reconnect_after_close(self, robot: RobotState, ws: Any) -> None:
        """The gateway closed the robot's socket: reconnect to the next gateway, with jittered
        exponential backoff, bounded in attempts."""
        robot.closed_at = time.monotonic()
        urls = self.reconnect_urls
        current = urls.index(robot.url) if robot.url in urls else len(urls) - 1
        for attempt in range(RECONNECT_ATTEMPTS):
            await asyncio.sleep(backoff(attempt, self._rng.random()))
            if self._closing or robot.ws is not ws:
                return  # closed by us, or reconnected by someone else meanwhile
            current = next_gateway(len(urls), current)
            if await self._open(robot, urls[current], quiet=True):
                robot.reconnects += 1
                self.reconnects += 1
                self.longest_gap = max(self.longest_gap, time.monotonic() - robot.closed_at)
                robot.closed_at = None
                return
        self.reconnect_failures += 1

    async def connect(self, assignments: list[tuple[str, str]], rate: float) -> dict[str, Any]:
        """Connect ``(robot_id, gateway_url)`` pairs, starting at most ``rate`` per second (0:
        all at once), slower while the gateways accept fewer (:class:`ConnectRamp`). A
        handshake that times out or is refused is tried again later, at the slower rate, up to
        :data:`CONNECT_ATTEMPTS` times; a robot fails only then, or on an answer that another
        try would not change (401, 404)."""
        started = time.perf_counter()
        if self.heartbeat is not None and self._beat_task is None:
            self._beat_task = asyncio.create_task(self._beat(*self.heartbeat))
        ramp = ConnectRamp(rate if rate > 0 else math.inf)
        queue = deque((robot_id, base, 1) for robot_id, base in assignments)
        ended: deque[asyncio.Task[tuple[str, str, int, Exception | None, float]]] = deque()
        wake = asyncio.Event()
        in_flight: set[asyncio.Task[Any]] = set()
        connected = retried = 0
        waiting_for_an_end = False  # wake the loop on an end only when it waits for one

        def done(task: asyncio.Task[Any]) -> None:
            in_flight.discard(task)
            ended.append(task)
            if waiting_for_an_end:
                wake.set()

        try:
            while queue or in_flight or ended:
                while ended:
                    robot_id, base, attempt, failure, seconds = ended.popleft().result()
                    now = time.monotonic()
                    if failure is None:
                        ramp.ended(now, seconds)
                        self.connect_hist.add(seconds)
                        connected += 1
                    elif _worth_retrying(failure) and attempt < CONNECT_ATTEMPTS:
                        ramp.ended(now, None)
                        queue.append((robot_id, base, attempt + 1))
                        retried += 1
                    else:
                        ramp.ended(now, None if _worth_retrying(failure) else seconds)
                        self.connect_failures[robot_id] = _failure_text(failure)
                delay = ramp.delay(time.monotonic()) if queue else math.inf
                if queue and delay <= 0:
                    robot_id, base, attempt = queue.popleft()
                    robot = self.robots.setdefault(robot_id, RobotState(robot_id))
                    ramp.started(time.monotonic())
                    task = asyncio.create_task(self._attempt(robot, base, attempt))
                    in_flight.add(task)
                    task.add_done_callback(done)
                    if len(in_flight) % 256 == 0:
                        await asyncio.sleep(0)  # let the handshakes started so far run
                    continue
                wake.clear()
                if not ended:
                    # the next start falls due (ends meanwhile are handled then), or, with
                    # nothing to start, a handshake ends (bounded: decisions need time)
                    waiting_for_an_end = math.isinf(delay)
                    try:
                        with contextlib.suppress(TimeoutError):
                            await wait_within(wake.wait(), min(delay, WINDOW_S))
                    finally:
                        waiting_for_an_end = False
        finally:
            for task in list(in_flight):
                task.cancel()
        return {
            "connected": connected,
            "failed": len(assignments) - connected,
            "seconds": time.perf_counter() - started,
            "ramp": {**ramp.summary(), "retried": retried},
        }

    async def _attempt(
        self, robot: RobotState, base: str, attempt: int
    ) -> tuple[str, str, int, Exception | None, float]:
        started = time.perf_counter()
        failure = await self._dial(robot, base)
        return robot.robot_id, base, attempt, failure, time.perf_counter() - started

    async def reconnect(self, robot_id: str, base: str) -> bool:
        """Close the robot's connection and open a new one to ``base``; True if it opened."""
        robot = self.robots[robot_id]
        await self._close_robot(robot)
        return await self._open(robot, base)

    async def _close_robot(self, robot: RobotState) -> None:
        ws, robot.ws = robot.ws, None
        if ws is not None:
            with contextlib.suppress(Exception):  # already broken: counted when it broke
                await ws.close()
        if robot.task is not None:
            with contextlib.suppress(Exception):  # the receiver's end is recorded by itself
                await wait_within(robot.task, 5)
            robot.task = None

    async def close_all(self) -> None:
        """Stop reconnects and heartbeats, then close every robot's connection."""
        self._closing = True
        for task in list(self._reconnecting):
            task.cancel()
        if self._beat_task is not None:
            await settle(self._beat_task)
            self._beat_task = None
        await asyncio.gather(*(self._close_robot(r) for r in self.robots.values()))

    def open_count(self) -> int:
        """How many robots hold an open connection right now."""
        return sum(1 for r in self.robots.values() if r.ws is not None and r.close_code is None)

    async def snapshot(self) -> dict[str, Any]:
        """:meth:`stats`, awaitable like :meth:`ProcessSwarm.snapshot`."""
        return self.stats()

    def stats(self) -> dict[str, Any]:
        """The swarm's measurements as JSON-able data (histograms, failures, counters,
        and what each robot received), to merge across swarms and processes."""
        return {
            "connect": self.connect_hist.to_json(),
            "latency": self.latency.to_json(),
            "connect_failures": dict(list(self.connect_failures.items())[:50]),
            "connect_failed": len(self.connect_failures),
            "heartbeats_sent": self.heartbeats_sent,
            "reconnects": self.reconnects,
            "reconnect_failures": self.reconnect_failures,
            "longest_gap_s": round(self.longest_gap, 3),
            "last_at": self.last_at,
            "robots": {
                r.robot_id: {
                    "received": r.received,
                    "out_of_order": r.out_of_order,
                    "foreign": r.foreign,
                    "url": r.url,
                    "open": r.ws is not None and r.close_code is None,
                    "close_code": r.close_code,
                }
                for r in self.robots.values()
            },
        }


# --------------------------------------------------------------------- worker processes


def _worker_main(
    conn: Any,
    run_id: str,
    auth_secret: str | None,
    heartbeat: Heartbeat | None = None,
    reconnect: list[str] | None = None,
    reconnect_any_close: bool = True,
) -> None:
    """Entry point of a swarm worker process: executes commands from the pipe."""
    raise_fd_limit()

    async def serve() -> None:
        swarm = RobotSwarm(run_id, auth_secret, heartbeat, reconnect, reconnect_any_close)
        loop = asyncio.get_running_loop()
        while True:
            try:
                command, args = await loop.run_in_executor(None, conn.recv)
            except EOFError:
                command, args = "exit", ()
            if command == "exit":
                await swarm.close_all()
                return
            try:
                result = await getattr(swarm, command)(*args)
                if command == "close_all":
                    result = None
                conn.send(("ok", result))
            except Exception as exc:  # reported to the coordinator, never swallowed
                conn.send(("error", f"{type(exc).__name__}: {exc}"))

    run(serve())


class ProcessSwarm:
    """A :class:`RobotSwarm` in a worker process, driven over a pipe."""

    def __init__(
        self,
        run_id: str,
        auth_secret: str | None = None,
        heartbeat: Heartbeat | None = None,
        reconnect: list[str] | None = None,
        reconnect_any_close: bool = True,
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker_main,
            args=(child, run_id, auth_secret, heartbeat, reconnect, reconnect_any_close),
            daemon=True,
        )
        self.process.start()
        self._lock = asyncio.Lock()

    async def _call(self, command: str, *args: Any) -> Any:
        async with self._lock:
            loop = asyncio.get_running_loop()
            self._conn.send((command, args))
            status, result = await loop.run_in_executor(None, self._conn.recv)
        if status != "ok":
            raise RuntimeError(f"simulation worker failed: {result}")
        return result

    async def connect(self, assignments: list[tuple[str, str]], rate: float) -> dict[str, Any]:
        """Like :meth:`RobotSwarm.connect`, in the worker process."""
        result: dict[str, Any] = await self._call("connect", assignments, rate)
        return result

    async def reconnect(self, robot_id: str, base: str) -> bool:
        """Like :meth:`RobotSwarm.reconnect`, in the worker process."""
        return bool(await self._call("reconnect", robot_id, base))

    async def close_all(self) -> None:
        """Like :meth:`RobotSwarm.close_all`, in the worker process."""
        await self._call("close_all")

    async def snapshot(self) -> dict[str, Any]:
        """The worker swarm's :meth:`RobotSwarm.stats`."""
        result: dict[str, Any] = await self._call("snapshot")
        return result

    def stop(self) -> None:
        """Ask the worker to exit; kill it when it has not within 10 s."""
        with contextlib.suppress(Exception):  # a worker already gone: join/kill below cope
            self._conn.send(("exit", ()))
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
