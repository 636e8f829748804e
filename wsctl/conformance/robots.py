"""The conformance kit acting as robots: real WebSocket clients of the gateway under test.

A :class:`Robot` connects to ``ws://HOST:PORT/ws/{robot_id}`` (the template of
``--gateway``), reads every frame the gateway sends into a queue (which also answers the
gateway's pings), sends nothing unless told to (a level-2 gateway must not need robot traffic
for liveness, §5), and records how its socket ended: the close frame the gateway sent, or an
abrupt end (1006). Every wait is bounded. :func:`handshake` tells an accepted handshake from
a refused one (status and headers: a draining gateway answers 503 with ``Retry-After``), and
:func:`send_garbage` opens a raw TCP connection that sends bytes that are no handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from wsctl.tasks import settle, wait_within

__all__ = ["ABNORMAL", "Handshake", "Robot", "RobotError", "handshake", "send_garbage"]

ABNORMAL = 1006  # RFC 6455: the connection ended without a close frame
CLOSE_TIMEOUT = 1.0  # seconds a robot's own close waits for the gateway's answer


class RobotError(Exception):
    """A robot could not connect (refused, timed out, the gateway not there)."""


@dataclass(frozen=True)
class Handshake:
    """How a robot's handshake went: accepted (``robot`` is connected) or refused with an
    HTTP ``status`` and its headers, or failed (``error`` says how)."""

    robot: Robot | None = None
    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    error: str | None = None

    def header(self, name: str) -> str | None:
        """A response header of a refusal (case-insensitive), None when absent."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


class Robot:
    """One connected robot: the frames it got, and how its socket ended."""

    def __init__(self, robot_id: str, ws: ClientConnection) -> None:
        self.robot_id = robot_id
        self.ws = ws
        self.frames: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.ended = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name=f"robot {robot_id}")

    @classmethod
    async def connect(cls, robot_id: str, url: str, timeout: float) -> Robot:
        """Connect as ``robot_id`` to ``url`` within ``timeout`` seconds; RobotError when
        the handshake is refused or does not complete."""
        got = await handshake(robot_id, url, timeout)
        if got.robot is None:
            raise RobotError(got.error or f"handshake refused with HTTP {got.status}")
        return got.robot

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self.frames.put_nowait(frame)
        except ConnectionClosed:
            pass  # the gateway closed abnormally: close_code says how
        finally:
            self.ended.set()

    # ------------------------------------------------------------------ what it got
    @property
    def open(self) -> bool:
        """True while the socket has not ended."""
        return not self.ended.is_set()

    @property
    def gateway_close(self) -> tuple[int, str] | None:
        """The close frame the gateway sent (code, reason), None when it sent none."""
        received = self.ws.protocol.close_rcvd
        if received is None:
            return None
        return int(received.code), str(received.reason)

    def ending(self) -> str:
        """How the socket ended, for a report: ``closed by the gateway with 4001
        ('superseded ...')``, ``ended without a close frame (1006)`` or ``still open``."""
        if self.open:
            return "still open"
        got = self.gateway_close
        if got is None:
            return f"ended without a close frame from the gateway ({ABNORMAL})"
        code, reason = got
        return f"closed by the gateway with {code}" + (f" ({reason!r})" if reason else "")

    async def wait_ended(self, timeout: float) -> bool:
        """Wait until the socket ends; False if it is still open after ``timeout``."""
        with contextlib.suppress(TimeoutError):
            await wait_within(self.ended.wait(), max(0.0, timeout))
        return self.ended.is_set()

    async def next_frame(self, timeout: float) -> str | bytes | None:
        """The next frame received, or None when none comes within ``timeout``."""
        try:
            return await wait_within(self.frames.get(), max(0.0, timeout))
        except TimeoutError:
            return None

    async def frames_until_quiet(self, quiet: float, limit: int = 10_000) -> list[str | bytes]:
        """Every frame received until none comes for ``quiet`` seconds (at most ``limit``)."""
        got: list[str | bytes] = []
        while len(got) < limit:
            frame = await self.next_frame(quiet)
            if frame is None:
                break
            got.append(frame)
        return got

    # ------------------------------------------------------------------ what it does
    async def send_invalid_text(self, payload: bytes) -> None:
        """Send ``payload`` as a text frame as is, even when it is not UTF-8 (what a broken
        robot does; the library refuses to, so the frame goes through its sans-I/O layer)."""
        self.ws.protocol.send_text(payload)
        self.ws.send_data()

    async def send_binary(self, payload: bytes) -> None:
        """Send ``payload`` as a binary frame."""
        await self.ws.send(payload)

    async def close(self) -> None:
        """Close the socket (code 1000) and stop reading; bounded by :data:`CLOSE_TIMEOUT`
        (a gateway that does not answer the close has its connection aborted)."""
        with contextlib.suppress(WebSocketException, OSError, TimeoutError):
            await wait_within(self.ws.close(), CLOSE_TIMEOUT * 2)
        if not self.ended.is_set():
            self.ws.transport.abort()
        with contextlib.suppress(TimeoutError):
            await wait_within(self.ended.wait(), CLOSE_TIMEOUT)
        if not self._reader.done():
            await settle(self._reader)

    def abort(self) -> None:
        """Drop the TCP connection at once, without a close frame (a robot that dies)."""
        self.ws.transport.abort()


async def handshake(robot_id: str, url: str, timeout: float) -> Handshake:
    """Try to connect as ``robot_id`` to ``url`` within ``timeout`` seconds."""
    try:
        ws = await wait_within(
            connect(
                url,
                open_timeout=timeout,
                close_timeout=CLOSE_TIMEOUT,
                ping_interval=None,  # the gateway pings; the robot only answers
                max_size=None,  # a message over the gateway's limit must be seen, not refused
                compression=None,
            ),
            timeout + 1.0,
        )
    except InvalidStatus as exc:
        response = exc.response
        headers = tuple((str(k), str(v)) for k, v in response.headers.raw_items())
        return Handshake(status=int(response.status_code), headers=headers)
    except (WebSocketException, OSError, TimeoutError) as exc:
        return Handshake(error=_describe(exc))
    return Handshake(robot=Robot(robot_id, ws))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "the handshake did not complete in time"
    text = str(exc) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:200]


async def send_garbage(url: str, payload: bytes, timeout: float) -> str:
    """Open a TCP connection to ``url``'s host and port, send ``payload`` (no handshake), and
    say what the gateway did within ``timeout`` seconds (answered, closed, nothing)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    host = parts.hostname or "127.0.0.1"
    writer: Any = None
    try:
        reader, writer = await wait_within(asyncio.open_connection(host, port), timeout)
        writer.write(payload)
        await wait_within(writer.drain(), timeout)
        answer = await wait_within(reader.read(200), timeout)
    except TimeoutError:
        return "no answer"
    except OSError as exc:
        return f"connection error: {exc}"
    finally:
        if writer is not None:
            writer.close()
    first = answer.split(b"\r\n", 1)[0].decode("latin-1")
    return f"answered {first!r}" if answer else "closed the connection"
